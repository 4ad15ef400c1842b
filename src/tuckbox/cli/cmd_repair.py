"""Repair a damaged repository: 'repair index' rebuilds the index from the packs themselves;
'repair packs' replaces damaged packs by their intact blobs; 'repair snapshots' rewrites snapshots
without the files whose data is lost.

When an index object is damaged or lost, the packs it listed are still whole
but their blobs cannot be found: restore and check report them missing. Each
pack carries its own encrypted header, so 'repair index' indexes again every
stored pack that no intact index object lists, and drops from the index the
packs that are gone (so that the next backup stores their chunks again). New
index objects are written before the damaged ones are removed; it takes the
exclusive lock. Run 'tuckbox check' afterwards: it names any file whose data
is really lost.

'repair packs PACK...' (the packs 'check --read-data' reports damaged) stores
every blob of those packs that is still intact in new packs, removes the
packs from the index and then from the storage (exclusive lock). Their
damaged blobs are then indexed nowhere, so the next backup stores those
files again if they still exist, which also makes the older snapshots whole.

'repair snapshots' (after 'repair index' or 'repair packs') then replaces each snapshot that
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
from ..maintenance.repair_packs import repair_packs
from ..repository.locks import Lock
from .cmd_prune import say
from .common import display, emit_json, lock_wait, open_repository, opt, say_waiting

HELP = "rebuild the index, replace damaged packs, or drop lost files from snapshots (after 'check')"


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=["index", "packs", "snapshots"], help="what to repair: index, packs or snapshots")
    p.add_argument("snapshots", nargs="*", default=[], metavar="ID",
                   help="with 'packs': the damaged packs (names or unique prefixes); "
                        "with 'snapshots': only these snapshots (default: all)")
    p.add_argument("--dry-run", "-n", action="store_true", help="say what would be done; change nothing")


def output_optional(args: argparse.Namespace) -> bool:
    """With standard output closed, still run (what is printed only reports on what was done), except with
    --dry-run, whose output is its purpose."""
    return not args.dry_run


def run(args: argparse.Namespace) -> int:
    if args.what == "snapshots":
        return _snapshots(args)
    if args.what == "packs":
        return _packs(args)
    if args.snapshots:
        raise UsageError("'repair index' takes no ids: it indexes every pack (ids are for 'repair packs' and 'repair snapshots')")
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


def _packs(args: argparse.Namespace) -> int:
    if not args.snapshots:
        raise UsageError("'repair packs' needs the names of the damaged packs ('tuckbox check --read-data' reports them)")
    repo = open_repository(args, load_index=False, writes=not args.dry_run)
    quiet = bool(opt(args, "quiet")) or bool(opt(args, "json"))
    progress = None if quiet else (lambda m: print(m, file=sys.stderr))
    lock = None
    try:
        if not args.dry_run:
            lock = Lock(repo.backend, repo.keys.index_key, exclusive=True).acquire(lock_wait(args), say_waiting)
            repo.guard = lock.ensure_held
        repo.load_index()  # under the lock: nothing changes it meanwhile
        report = repair_packs(repo, args.snapshots, progress, dry_run=args.dry_run)
    finally:
        repo.guard = None
        if lock is not None:
            lock.release()
        repo.close()
    if opt(args, "json"):
        emit_json({"dry_run": args.dry_run, **report.as_dict()})
        return 0
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    packs = ", ".join(n[:8] for n in report.packs)
    if args.dry_run:
        say(args, f"would replace pack(s) {packs}: {report.blobs_salvaged} intact blob(s) to store again, "
                  f"{report.blobs_damaged} damaged ({report.blobs_lost} held by no other pack)")
        return 0
    say(args, f"replaced pack(s) {packs}: {report.blobs_salvaged} intact blob(s) stored again in "
              f"{report.packs_written} new pack(s); {report.blobs_damaged} damaged blob(s) dropped from the index "
              f"({report.blobs_lost} held by no other pack)")
    if report.blobs_lost:
        say(args, "the next backup stores the files that lost data again if they still exist (which also makes "
                  "older snapshots whole); 'tuckbox check' names what is still damaged, 'tuckbox repair snapshots' "
                  "removes it from the snapshots")
    return 0


def _snapshots(args: argparse.Namespace) -> int:
    repo = open_repository(args, writes=not args.dry_run)
    quiet = bool(opt(args, "quiet")) or bool(opt(args, "json"))
    progress = None if quiet else (lambda m: print(m, file=sys.stderr))
    lock = None
    try:
        if not args.dry_run:
            # trees and snapshots are added, damaged snapshots removed: a shared lock, like a backup's; the
            # snapshots and the index are read under it (a prune that --lock-wait waited for changed them)
            lock = Lock(repo.backend, repo.keys.index_key, exclusive=False).acquire(lock_wait(args), say_waiting)
            repo.guard = lock.ensure_held
            repo.refresh_index()
        snaps = every = repo.snapshots()
        if args.snapshots:
            wanted = {repo.find_snapshot(ref, snaps).id for ref in args.snapshots}
            snaps = [s for s in snaps if s.id in wanted]
        results = repair_snapshots(repo, snaps, progress, dry_run=args.dry_run, every=every)
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
