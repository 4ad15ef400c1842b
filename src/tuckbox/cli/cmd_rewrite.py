"""Remove files from existing snapshots: each snapshot holding a path that matches --exclude is replaced
by one without it (for a secret or a huge file that should never have been backed up).

Patterns are those of 'backup --exclude' (a name at any depth, a path from
the root, or the end of a path; a directory takes everything inside it). The
new snapshot keeps the time, host, paths and parent of the old one, is tagged
'rewritten', and is saved before the old one is removed; its size is that of
what it still holds. A pattern that takes a backed-up path whole (or a
directory above it) is refused: use 'tuckbox forget'. The data stays in
the repository until 'tuckbox prune' (or --prune here) deletes what no
snapshot needs any more. With no SNAPSHOT, every snapshot (--host, --tag,
--path narrow it down). --dry-run lists what would be left out.

examples:
  tuckbox rewrite --exclude '/home/*/.ssh/id_*' --dry-run
  tuckbox rewrite --exclude 'huge.iso' --prune
"""

from __future__ import annotations

import argparse
import sys

from ..errors import UsageError
from ..maintenance.rewrite import Memo, Verdict, pattern_taking_a_path, rewrite_tree, save_rewritten
from ..patterns import Patterns
from ..repository.locks import Lock
from .cmd_prune import add_prune_options, prune, refuse_max_unused_without_prune, say
from .common import (
    display, emit_json, json_paths_fields, lock_wait, nonempty, open_repository, opt, pattern, patterns_from_file, say_waiting, select_snapshots,
)

HELP = "remove files matching --exclude from existing snapshots"
TAG = "rewritten"


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("snapshots", nargs="*", metavar="SNAPSHOT", help="snapshots to rewrite (default: all)")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN", type=pattern,
                   help="leave out paths or names matching PATTERN (as for backup --exclude); repeatable")
    p.add_argument("--exclude-file", action="append", default=[], metavar="FILE", type=nonempty,
                   help="read --exclude patterns from FILE, one per line (# comments)")
    p.add_argument("--host", action="append", default=[], help="only snapshots of this host (repeatable)")
    p.add_argument("--tag", action="append", default=[], help="only snapshots with this tag (repeatable)")
    p.add_argument("--path", action="append", default=[], type=nonempty, help="only snapshots of this path (repeatable)")
    p.add_argument("--dry-run", "-n", action="store_true", help="list what would be left out; change nothing")
    p.add_argument("--prune", action="store_true", help="then delete the data no snapshot needs (see 'tuckbox prune')")
    add_prune_options(p)


def output_optional(args: argparse.Namespace) -> bool:
    """With standard output closed, still run (what is printed only reports on what was done), except with
    --dry-run, whose output is its purpose."""
    return not args.dry_run


def run(args: argparse.Namespace) -> int:
    refuse_max_unused_without_prune(args)
    given = list(args.exclude) + [p for f in args.exclude_file for p in patterns_from_file(f)]
    patterns = Patterns(given)
    if not patterns:
        raise UsageError("say what to remove with --exclude PATTERN (or --exclude-file FILE)")
    if patterns.match(b"/", b""):
        raise UsageError("that pattern matches the root of every snapshot; to remove snapshots use 'tuckbox forget'")
    repo = open_repository(args, writes=True)
    quiet = bool(opt(args, "quiet")) or bool(opt(args, "json"))
    progress = None if quiet else (lambda m: print(m, file=sys.stderr))
    lock = None
    done: list[dict[str, object]] = []
    try:
        repo.keys.require_full("rewrite snapshots (it must read them)")
        if not args.dry_run:
            # the snapshots and the index are read under the lock: a prune that --lock-wait waited for may
            # have removed some of them, and a new tree must not be deduplicated against removed data
            lock = Lock(repo.backend, repo.keys.index_key, exclusive=False).acquire(lock_wait(args), say_waiting)
            repo.guard = lock.ensure_held
            repo.refresh_index()
        snaps = every = repo.snapshots()
        if args.snapshots:
            wanted = {repo.find_snapshot(ref, snaps).id for ref in args.snapshots}
            snaps = [s for s in snaps if s.id in wanted]
        snaps = select_snapshots(args, snaps)
        taking = pattern_taking_a_path(given, snaps)
        if taking is not None:
            pattern, snap, path = taking
            raise UsageError(
                f"the pattern {pattern!r} takes all of {display(path)}, which snapshot {snap.short_id} backs up: "
                "narrow the pattern (to remove snapshots use 'tuckbox forget')"
            )

        def judge(path: bytes, _m: dict) -> Verdict:
            return "drop" if patterns.match(path) else "keep"

        packer = None if args.dry_run else repo.new_packer()
        memo: Memo = {}
        changed = []
        try:
            for snap in snaps:
                if progress:
                    progress(f"reading snapshot {snap.short_id}")
                new_root, removed, counts = rewrite_tree(repo, snap.tree, judge, memo, packer)
                if new_root is None:
                    raise UsageError(f"snapshot {snap.short_id} cannot be read; run 'tuckbox check'")
                if new_root != snap.tree:
                    changed.append((snap, new_root, removed, counts))
            if packer is not None:
                packer.flush()  # the new trees and their index, before any snapshot names them
            for snap, new_root, removed, counts in changed:
                new = "" if args.dry_run else save_rewritten(repo, snap, new_root, TAG, len(removed), counts, every)
                done.append({"old": snap.id, "new": new, **json_paths_fields("removed", removed)})
                if not opt(args, "json"):
                    verb = "would lose" if args.dry_run else f"replaced by {new[:8]}, without"
                    say(args, f"snapshot {snap.short_id} {verb} {len(removed)} entr{'y' if len(removed) == 1 else 'ies'}:")
                    for path in removed[:20]:
                        say(args, f"  - {display(path)}")
                    if len(removed) > 20:
                        say(args, f"  ... and {len(removed) - 20} more (--json lists them all)")
        finally:
            if packer is not None:
                packer.close()
            repo.guard = None
            if lock is not None:
                lock.release()
                lock = None
        if not changed:
            say(args, f"nothing matches in {len(snaps)} snapshot(s)")
        elif not args.dry_run:
            say(args, "give your backups the same --exclude, or the next one stores these files again")
            if not args.prune:
                say(args, "the data stays in the repository until 'tuckbox prune' deletes what no snapshot needs")
        doc: dict[str, object] = {"dry_run": args.dry_run, "snapshots": done}
        if args.prune and changed and args.dry_run:
            say(args, "(prune runs once the snapshots are rewritten: what it frees shows then)")
        elif args.prune and changed:
            doc["prune"] = prune(args, repo, False)
    finally:
        repo.guard = None
        if lock is not None:
            lock.release()
        repo.close()
    if opt(args, "json"):
        emit_json(doc)
    return 0
