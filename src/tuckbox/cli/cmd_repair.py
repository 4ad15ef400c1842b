"""Repair a damaged repository: 'repair index' rebuilds the index from the packs themselves;
'repair snapshots' rewrites snapshots without the files whose data is lost.

When an index object is damaged or lost, the packs it listed are still whole
but their blobs cannot be found: restore and check report them missing. Each
pack carries its own encrypted header, so 'repair index' indexes again every
stored pack that no intact index object lists, and drops from the index the
packs that are gone (so that the next backup stores their chunks again). New
index objects are written before the damaged ones are removed; it takes the
exclusive lock. Run 'tuckbox check' afterwards: it names any file whose data
is really lost.

'repair snapshots' (after 'repair index') then replaces each snapshot that
needs data the repository no longer has by one without those files (a
directory whose listing is lost is kept, empty), tagged 'repaired', so that
'check' passes again and everything intact stays restorable. The damaged
entries are listed. --dry-run says what either would do.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import UsageError
from ..maintenance.repair import repair_index, repair_snapshots
from ..repository.locks import Lock
from .cmd_prune import say
from .common import display, emit_json, lock_wait, open_repository, opt, say_waiting

HELP = "rebuild the index from the packs (after 'check' reports a damaged or missing index)"


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=["index", "snapshots"], help="what to repair: index, or snapshots")
    p.add_argument("snapshots", nargs="*", default=[], metavar="SNAPSHOT", help="with 'snapshots': only these (default: all)")
    p.add_argument("--dry-run", "-n", action="store_true", help="say what would be done; change nothing")


def output_optional(args: argparse.Namespace) -> bool:
    """With standard output closed, still run (what is printed only reports on what was done), except with
    --dry-run, whose output is its purpose."""
    return not args.dry_run


def run(args: argparse.Namespace) -> int:
    if args.what == "snapshots":
        return _snapshots(args)
    if args.snapshots:
        raise UsageError("'repair index' takes no snapshot ids")
    repo = open_repository(args, load_index=False, writes=not args.dry_run)
    quiet = bool(opt(args, "quiet")) or bool(opt(args, "json"))
    progress = None if quiet else (lambda m: print(m, file=sys.stderr))
    lock = None
    try:
        if not args.dry_run:
            lock = Lock(repo.backend, repo.keys.index_key, exclusive=True).acquire(lock_wait(args), say_waiting)
            repo.guard = lock.ensure_held
        report = repair_index(repo, progress, dry_run=args.dry_run)
    finally:
        repo.guard = None
        if lock is not None:
            lock.release()
        repo.close()
    if opt(args, "json"):
        emit_json({"dry_run": args.dry_run, **report.as_dict()})
        return 0
    for problem in report.problems:
        print(f"note: {problem}", file=sys.stderr)
    if report.nothing_to_do:
        say(args, "the index is complete: every stored pack is indexed and every indexed pack is stored")
        return 0
    replace, index = ("would replace", "would index") if args.dry_run else ("replaced", "indexed")
    say(args, f"{replace} {len(report.indexes_damaged)} damaged and {len(report.indexes_replaced)} outdated "
              f"index object(s); {index} {len(report.packs_reindexed)} pack(s) again from their headers; "
              f"{len(report.packs_missing)} indexed pack(s) are missing ({report.blobs_lost} blob(s) lost)")
    if report.blobs_lost:
        say(args, "run 'tuckbox check' to see which files lost data; the next backup stores those chunks again")
    return 0


def _snapshots(args: argparse.Namespace) -> int:
    repo = open_repository(args, writes=not args.dry_run)
    quiet = bool(opt(args, "quiet")) or bool(opt(args, "json"))
    progress = None if quiet else (lambda m: print(m, file=sys.stderr))
    lock = None
    try:
        snaps = repo.snapshots()
        if args.snapshots:
            wanted = {repo.find_snapshot(ref, snaps).id for ref in args.snapshots}
            snaps = [s for s in snaps if s.id in wanted]
        if not args.dry_run:
            # trees and snapshots are added, damaged snapshots removed: a shared lock, like a backup's
            lock = Lock(repo.backend, repo.keys.index_key, exclusive=False).acquire(lock_wait(args), say_waiting)
            repo.guard = lock.ensure_held
        results = repair_snapshots(repo, snaps, progress, dry_run=args.dry_run)
    finally:
        repo.guard = None
        if lock is not None:
            lock.release()
        repo.close()
    if opt(args, "json"):
        emit_json({"dry_run": args.dry_run, "snapshots": [r.as_dict() for r in results]})
        return 0
    for r in results:
        if r.lost:
            say(args, f"snapshot {r.old[:8]}: its root directory listing is lost; nothing to keep (tuckbox forget {r.old[:8]})")
            continue
        done = "would become" if args.dry_run else "replaced by"
        say(args, f"snapshot {r.old[:8]} {done} {r.new[:8] or '(new)'}, without {len(r.removed)} damaged entr"
                  f"{'y' if len(r.removed) == 1 else 'ies'}:")
        for path in r.removed[:20]:
            say(args, f"  - {display(path)}")
        if len(r.removed) > 20:
            say(args, f"  ... and {len(r.removed) - 20} more (--json lists them all)")
    if not results:
        say(args, f"all {len(snaps)} snapshot(s) have every piece of their data")
    return 0
