"""Remove snapshots by a retention policy (--keep-*), or the ones named; --prune then frees their data.

Snapshots are grouped by host and paths (--group-by) and each group keeps,
newest first, whatever any rule selects: the N newest (--keep-last), the
newest of each of the N newest hours, days, ISO weeks, months or years that
have snapshots (--keep-hourly ... --keep-yearly; -1 = all), every snapshot
within a span of the group's newest one (--keep-within 30d; of now, if that
one is dated ahead of this machine's clock), every snapshot
with a tag (--keep-tag). Times are this machine's local time. A checkpoint
(of an unfinished backup) is kept while it is newer than the group's last
complete backup. --host/--tag/--path limit which snapshots are considered (a
snapshot named by id outside them is refused, and nothing is removed).

A snapshot that cannot be read (damaged: 'tuckbox check' names it) is never
chosen by a policy; name its id to remove it.

Forgetting removes only the snapshot objects; the data stays until
'tuckbox prune' (or --prune here) deletes what no snapshot uses. At least one
--keep-* rule or snapshot id is required: nothing is removed by default, and
rules that would keep none of a group's snapshots are refused.

examples:
  tuckbox forget --keep-daily 7 --keep-weekly 5 --keep-monthly 12 --dry-run
  tuckbox forget --keep-within 30d --keep-monthly -1 --prune
  tuckbox forget 1a2b3c4d
"""

from __future__ import annotations

import argparse
import datetime
import os
from concurrent.futures import ThreadPoolExecutor

from ..errors import ObjectNotFound, UsageError
from ..repository.locks import Lock
from ..snapshot import retention
from ..snapshot.model import Snapshot
from ..types import ObjectType
from .cmd_prune import add_prune_options, prune, refuse_max_unused_without_prune, say
from .common import (display, emit_json, json_paths_fields, local_time, lock_wait, nonempty, open_repository, opt, say_waiting,
                     select_snapshots, warn)

HELP = "remove snapshots by a retention policy (--keep-daily 7 ...)"

_COUNTS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number (-1 means all)") from None
    if n < -1:
        raise argparse.ArgumentTypeError(f"'{text}' is below -1 (-1 means all)")
    return n


def _duration(text: str) -> object:
    try:
        return retention.parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _group_by(text: str) -> tuple[str, ...]:
    try:
        return retention.parse_group_by(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("snapshots", nargs="*", metavar="SNAPSHOT", help="snapshot ids to remove (instead of a policy)")
    for name in _COUNTS:
        what = "snapshots" if name == "last" else {"daily": "days"}.get(name, name.replace("ly", "s"))
        p.add_argument(f"--keep-{name}", type=_count, default=0, metavar="N",
                       help=f"keep the newest snapshot of each of the N newest {what}" if name != "last"
                       else "keep the N newest snapshots")
    p.add_argument("--keep-within", type=_duration, metavar="DURATION",
                   help="keep every snapshot within DURATION of the group's newest (e.g. 7d, 2w, 1y6m, 12h)")
    p.add_argument("--keep-tag", action="append", default=[], metavar="TAG", help="keep every snapshot with this tag")
    p.add_argument("--host", action="append", default=[], help="only consider snapshots of this host (repeatable)")
    p.add_argument("--tag", action="append", default=[], help="only consider snapshots with this tag (repeatable)")
    p.add_argument("--path", action="append", default=[], type=nonempty, help="only consider snapshots of this path (repeatable)")
    p.add_argument("--group-by", type=_group_by, default=("host", "paths"), metavar="FIELDS",
                   help="decide per group of these fields: host, paths, tags, comma-separated, or '' "
                        "(default host,paths)")
    p.add_argument("--dry-run", "-n", action="store_true", help="show what would be removed; change nothing")
    p.add_argument("--prune", action="store_true", help="then delete the data no snapshot needs (see 'tuckbox prune')")
    add_prune_options(p)


def output_optional(args: argparse.Namespace) -> bool:
    """With standard output closed, still run (what is printed only reports on what was done), except with
    --dry-run, whose output is its purpose."""
    return not args.dry_run


def _policy(args: argparse.Namespace) -> retention.Policy:
    return retention.Policy(
        **{name: getattr(args, f"keep_{name}") for name in _COUNTS},
        within=args.keep_within,
        tags=frozenset(args.keep_tag),
    )


def run(args: argparse.Namespace) -> int:
    refuse_max_unused_without_prune(args)
    policy = _policy(args)
    if args.snapshots and not policy.is_empty():
        raise UsageError("give either snapshot ids or --keep-* rules, not both")
    if not args.snapshots and policy.is_empty():
        raise UsageError("no --keep-* rule and no snapshot id given: say what to keep (e.g. --keep-daily 7) "
                         "or which snapshots to remove")
    repo = open_repository(args, load_index=False, writes=not args.dry_run)
    try:
        repo.keys.require_full("forget (it must read the snapshots)")
        snaps = repo.snapshots()
        damaged: list[str] = []  # named snapshot objects that cannot be read: removed by name
        if args.snapshots:
            doomed = set()
            for ref in args.snapshots:
                name = repo.find_damaged_snapshot(ref)
                if name is None:
                    doomed.add(repo.find_snapshot(ref, snaps).id)
                elif name not in damaged:
                    damaged.append(name)
            if args.host or args.tag or args.path:
                # (they limit what forget looks at, README says: a named snapshot outside them is not removed
                # behind the user's back, and nothing is, as for ls, dump, diff and restore)
                outside = [s for s in snaps if s.id in doomed and not select_snapshots(args, [s])]
                if outside or damaged:
                    what = (f"snapshot {outside[0].short_id} (host {display(outside[0].host)}) does not match"
                            if outside else f"snapshot {damaged[0][:8]} cannot be read, so it cannot be matched against")
                    raise UsageError(f"{what} {_filters(args)}; nothing was removed (name snapshots without "
                                     "--host/--tag/--path to remove exactly those)")
            groups = [{"key": {}, "keep": [], "remove": [_brief(s, ()) for s in snaps if s.id in doomed]
                       + [_damaged(name) for name in damaged]}]
            remove = [s for s in snaps if s.id in doomed]
        else:
            selected = select_snapshots(args, snaps)
            if snaps and not selected:  # (a misspelt --host in a weekly job would thin out nothing, for good)
                warn(f"no snapshot matches {_filters(args)}; nothing is removed (see 'tuckbox snapshots')")
            decided = retention.apply(selected, policy, args.group_by,
                                      now=datetime.datetime.now(datetime.timezone.utc))
            groups = []
            remove = []
            for g in decided:
                if not any(d.keep for d in g.decisions):
                    # (a misspelt --keep-tag): a rule that keeps nothing of a group would remove all its history
                    raise UsageError(
                        f"refusing to remove every snapshot of {_describe(g.key)}: the --keep-* rules keep none of "
                        "them (check their spelling); to remove them all, name their ids"
                    )
                groups.append({
                    "key": g.key,
                    "keep": [_brief(d.snapshot, d.reasons) for d in g.decisions if d.keep],
                    "remove": [_brief(d.snapshot, ()) for d in g.decisions if not d.keep],
                })
                remove += [d.snapshot for d in g.decisions if not d.keep]
        lock = None
        if (remove or damaged) and not args.dry_run:
            # taken before the plan is shown: a plan that cannot be carried out (a read-only repository, a
            # prune holding the lock) is not printed as if it were. Snapshots are only removed, never
            # rewritten: a shared lock, so backups elsewhere go on meanwhile
            lock = Lock(repo.backend, repo.keys.index_key, exclusive=False).acquire(lock_wait(args), say_waiting)
        removed = 0
        try:
            if not opt(args, "json"):
                _print_groups(args, groups)
            if lock is not None:
                removed = _remove(repo, [s.id for s in remove] + damaged)
        finally:
            if lock is not None:
                lock.release()
        if lock is not None:
            for name in damaged:
                repo.forget_damaged(name)
        verb = "would remove" if args.dry_run else "removed"
        say(args, f"{verb} {len(remove) + len(damaged) if args.dry_run else removed} snapshot(s)"
                  f"{f' ({len(damaged)} that could not be read)' if damaged else ''}, kept "
                  f"{sum(len(g['keep']) for g in groups)}")
        # (a group's paths are os.fsdecode'd: in JSON, as everywhere, a byte that is not UTF-8 is "\\xff")
        json_groups = [{**g, "key": _json_key(g["key"])} for g in groups]
        doc: dict[str, object] = {"dry_run": args.dry_run, "groups": json_groups,
                                  "removed": 0 if args.dry_run else removed}
        if args.prune:
            doc["prune"] = prune(args, repo, args.dry_run, frozenset([s.id for s in remove] + damaged))
    finally:
        repo.close()
    if opt(args, "json"):
        emit_json(doc)
    return 0


def _json_key(key: dict) -> dict:
    """A group's key in JSON: its paths as ``snapshots`` gives them (``paths``, and ``paths_bytes`` when one of
    them is not UTF-8)."""
    doc: dict = {}
    for k, v in key.items():
        doc.update(json_paths_fields(k, v) if isinstance(v, list) and k == "paths" else {k: v})
    return doc


def _brief(s: Snapshot, reasons: tuple[str, ...]) -> dict[str, object]:
    return {"id": s.id, "short_id": s.short_id, "time": s.time, "host": s.host, "tags": s.tags,
            "partial": s.partial, "reasons": list(reasons), "damaged": False}


def _damaged(name: str) -> dict[str, object]:
    """A named snapshot object that cannot be read: nothing is known of it but its name."""
    return {"id": name, "short_id": name[:8], "time": "", "host": "", "tags": [], "partial": False,
            "reasons": [], "damaged": True}


def _filters(args: argparse.Namespace) -> str:
    """The --host, --tag and --path given, as typed: "--host a or b, --tag x"."""
    given = [(f"--{name}", [display(v) for v in getattr(args, name)]) for name in ("host", "tag", "path")]
    return ", ".join(f"{flag} {' or '.join(values)}" for flag, values in given if values)


def _describe(key: dict) -> str:
    """A group's key for people: "host h; paths /a, /b"; "tags (none)"."""
    parts = [f"{k} {', '.join(display(os.fsencode(p)) for p in v) or '(none)' if isinstance(v, list) else display(os.fsencode(str(v)))}"
             for k, v in key.items()]
    return "; ".join(parts) if parts else "the snapshots"


def _print_groups(args: argparse.Namespace, groups: list[dict]) -> None:
    for g in groups:
        key = g["key"]
        if key:
            say(args, "group: " + _describe(key))
        rows = [("keep", b, ", ".join(b["reasons"])) for b in g["keep"]]
        rows += [("remove", b, "") for b in g["remove"]]
        rows.sort(key=lambda r: r[1]["time"], reverse=True)
        for what, b, why in rows:
            if b["damaged"]:
                say(args, f"  {what:<6}  {b['short_id']}  (damaged: it cannot be read)")
                continue
            mark = " (checkpoint)" if b["partial"] else ""
            say(args, f"  {what:<6}  {b['short_id']}{mark}  {local_time(b['time'])}  {why}".rstrip())


def _remove(repo, names: list[str]) -> int:  # type: ignore[no-untyped-def]
    def remove(name: str) -> int:
        try:
            repo.backend.remove(ObjectType.SNAPSHOT, name)
        except ObjectNotFound:
            return 0
        repo.cache.discard("snapshots", name)
        return 1

    with ThreadPoolExecutor(max(1, repo.connections)) as pool:
        return sum(pool.map(remove, names))
