"""Delete the data that no snapshot needs any more ('tuckbox forget' removes snapshots; this frees their space).

Prune reads every snapshot's trees, then removes packs nothing uses, copies
the used blobs out of packs that are mostly unused (--max-unused) into new
packs, and rewrites the index. It takes the exclusive lock, so it refuses
while a backup, check or restore holds a lock (--lock-wait 1h waits for them
instead; they wait for it the same way). If anything in the repository cannot
be read it deletes nothing. --dry-run shows the plan.

A crash or Ctrl-C at any moment leaves a valid repository; run prune again.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import NoSpace, UsageError
from ..maintenance.prune import DEFAULT_MAX_UNUSED, PrunePlan, execute_prune, plan_prune
from ..repository.locks import Lock
from ..repository.repo import Repository
from .common import emit_json, human, lock_wait, open_repository, opt, out, say_waiting

HELP = "delete data no snapshot needs (after 'forget')"


def add_prune_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-unused", metavar="PERCENT", type=_percent, default=None,
                   help=f"repack a pack when at least this share of it is unused (default {DEFAULT_MAX_UNUSED * 100:.0f}%%; "
                        "100: never repack, only remove wholly unused packs)")


def refuse_max_unused_without_prune(args: argparse.Namespace) -> None:
    """forget and rewrite take --max-unused for the prune that their --prune runs: without --prune it would
    change nothing, and the user who typed it expected space to be freed."""
    if args.max_unused is not None and not args.prune:
        raise UsageError("--max-unused applies to the prune that --prune runs: add --prune "
                         "(or run 'tuckbox prune --max-unused ...' afterwards)")


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", "-n", action="store_true", help="show what would be removed; change nothing")
    add_prune_options(p)


def output_optional(args: argparse.Namespace) -> bool:
    """With standard output closed, still run (what is printed only reports on what was done), except with
    --dry-run, whose output is its purpose."""
    return not args.dry_run


def say(args: argparse.Namespace, text: str) -> None:
    """A line of the human-readable report (none with --json: one JSON document is the output)."""
    if not opt(args, "json"):
        out(args, text)


def _percent(text: str) -> float:
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a percentage (e.g. 10 or 10%)") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"'{text}' is not between 0 and 100")
    return value


def describe_plan(plan: PrunePlan) -> str:
    return (f"{plan.snapshots} snapshot(s) use {plan.used_blobs} blobs; "
            f"{len(plan.remove) + len(plan.unindexed)} pack(s) unused, {len(plan.repack)} to repack "
            f"({human(plan.bytes_repacked)} to copy), {len(plan.keep)} kept; "
            f"{human(plan.bytes_removed)} to delete")


def prune(args: argparse.Namespace, repo: Repository, dry_run: bool, without: frozenset[str] = frozenset()) -> dict[str, object]:
    """Plan, and unless ``dry_run`` execute under the exclusive lock; print the outcome, return it for --json.

    ``without``: snapshots a dry run of forget would remove (planned as gone)."""
    quiet = bool(opt(args, "quiet")) or bool(opt(args, "json"))
    progress = None if quiet else (lambda m: print(m, file=sys.stderr))
    max_unused = DEFAULT_MAX_UNUSED if args.max_unused is None else args.max_unused / 100
    if dry_run:
        plan = plan_prune(repo, max_unused, progress, without)
        say(args, "would delete: " + describe_plan(plan))
        for note in plan.notes:
            say(args, f"note: {note}")
        return {"dry_run": True, "plan": plan.as_dict(), "notes": plan.notes}
    lock = Lock(repo.backend, repo.keys.index_key, exclusive=True).acquire(lock_wait(args), say_waiting)
    repo.guard = lock.ensure_held
    try:
        plan = plan_prune(repo, max_unused, progress)
        for note in plan.notes:
            say(args, f"note: {note}")
        if plan.nothing_to_do:
            say(args, f"nothing to prune ({plan.snapshots} snapshot(s), {len(plan.keep)} pack(s) all in use)")
            return {"dry_run": False, "plan": plan.as_dict(), "result": None, "notes": plan.notes}
        say(args, describe_plan(plan))
        try:
            result = execute_prune(repo, plan, progress)
        except NoSpace as e:
            if not plan.repack or not (plan.remove or plan.unindexed):
                raise
            # a full disk is when prune is wanted most: removing wholly unused packs needs no room for copies
            unused = sum(p.size for p in plan.remove) + sum(plan.unindexed.values())
            raise NoSpace(f"{e}, or first run 'tuckbox prune --max-unused 100%': it copies nothing and only removes "
                          f"the {len(plan.remove) + len(plan.unindexed)} unused pack(s) ({human(unused)})") from None
    finally:
        repo.guard = None
        lock.release()
    for note in result.notes:
        say(args, f"note: {note}")
    say(args, f"removed {result.packs_removed} pack(s) and {result.indexes_removed} index object(s), wrote "
              f"{result.packs_written} pack(s) ({human(result.bytes_written)}) and {result.indexes_written} index "
              f"object(s): {human(max(0, result.bytes_freed))} freed")
    return {"dry_run": False, "plan": plan.as_dict(), "result": result.as_dict(), "notes": plan.notes + result.notes}


def run(args: argparse.Namespace) -> int:
    repo = open_repository(args, load_index=False, writes=True)
    try:
        doc = prune(args, repo, args.dry_run)
    finally:
        repo.close()
    if opt(args, "json"):
        emit_json(doc)
    return 0
