"""Check the repository: structure always; with --read-data, every stored byte.

Every problem names the damaged object and the files that depend on it.
Exit code 0 when the repository is sound, 1 when anything is damaged.

Check takes a shared lock, so a prune cannot delete what it is reading. On
storage it cannot write (a read-only mount, read-only credentials) it checks
without one and says so; ``--no-lock`` skips the lock on purpose.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import PermanentError, UsageError
from ..maintenance.check import Checker, pack_subset
from ..repository.locks import Lock
from .common import emit_json, lock_wait, open_repository, opt, out, say_waiting

HELP = "verify the repository's integrity"


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--read-data", action="store_true", help="download and verify every pack (slow; reads everything)")
    p.add_argument("--read-data-subset", metavar="N/M|P%", default=None,
                   help="read only part of the data: the N-th of M parts (run 1/M ... M/M in turn, e.g. one a week, "
                        "to read everything once per cycle) or a random P%% of the packs (rounded up: at least one); "
                        "implies --read-data")
    p.add_argument("--no-lock", action="store_true",
                   help="do not take the shared lock (for storage this key cannot write to)")


def output_optional(args: argparse.Namespace) -> bool:
    """With standard output closed, still run: what is printed only reports on what was done."""
    return True


def run(args: argparse.Namespace) -> int:
    subset = None
    if args.read_data_subset is not None:
        if args.read_data:
            raise UsageError("--read-data reads every pack and --read-data-subset only a part; give one of them")
        try:
            subset = pack_subset(args.read_data_subset)
        except ValueError as e:
            raise UsageError(str(e)) from None
        args.read_data = True
    repo = open_repository(args, load_index=False, writes=not args.no_lock)
    quiet = bool(opt(args, "quiet")) or bool(opt(args, "json"))
    lock: Lock | None = None
    unlocked_note: str | None = None
    if args.no_lock:
        unlocked_note = "checked without a lock (--no-lock)"
    else:
        try:
            lock = Lock(repo.backend, repo.keys.index_key, exclusive=False).acquire(lock_wait(args), say_waiting)
        except PermanentError as e:  # cannot write here at all; a lock held by someone else is another error
            unlocked_note = f"checked without a lock: {e}"
    try:
        report = Checker(repo, None if quiet else (lambda m: print(m, file=sys.stderr))).run(args.read_data, subset)
    finally:
        if lock is not None:
            lock.release()
        repo.close()
    if unlocked_note is not None:
        report.notes.insert(0, unlocked_note)
    c = report.counts
    summary = (f"{c.get('snapshots', 0)} snapshots, {c.get('indexes', 0)} indexes, {c.get('packs', 0)} packs, "
               f"{c.get('blobs', 0)} blobs")
    if not opt(args, "json"):
        for note in report.notes:
            out(args, f"note: {note}")
    # what is wrong goes to standard error under --json too: a log of standard error alone (a systemd unit's
    # journal) must show why the exit is 1
    for warning in report.warnings:  # (not damage: the exit code stays 0)
        print(f"warning: {warning}", file=sys.stderr)
    for err in report.errors:
        print(f"error: {err}", file=sys.stderr)
    for f in report.damaged_files:
        print(f"damaged file: {f}", file=sys.stderr)
    if not report.ok:
        print(f"{len(report.errors)} error(s) found ({summary})", file=sys.stderr)
    if opt(args, "json"):
        emit_json({"ok": report.ok, "errors": report.errors, "warnings": report.warnings,
                   "damaged_files": report.damaged_files, "notes": report.notes, "counts": report.counts, "read_data": args.read_data,
                   "read_data_subset": args.read_data_subset})
    elif report.ok:
        if args.read_data_subset is not None:
            what = "hash verified" if not repo.is_full() else "data read and verified"
            done = f", {c.get('packs_read', 0)} of {c.get('packs', 0)} packs' {what} (subset {args.read_data_subset})"
        elif args.read_data and not repo.is_full():
            done = ", every pack's hash verified (a write-only key cannot decrypt blobs)"
        elif args.read_data:
            done = ", all data read and verified"
        else:
            done = ""
        seen = f"; {len(report.warnings)} warning(s) above" if report.warnings else ""
        out(args, f"no errors found ({summary}{done}){seen}")
    return 0 if report.ok else 1
