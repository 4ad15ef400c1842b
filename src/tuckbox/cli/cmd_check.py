"""Check the repository: structure always; with --read-data, every stored byte.

Every problem names the damaged object and the files that depend on it.
Exit code 0 when the repository is sound, 1 when anything is damaged.
"""

from __future__ import annotations

import argparse
import sys

from ..maintenance.check import Checker
from ..repository.locks import Lock
from .common import emit_json, open_repository, opt, out

HELP = "verify the repository's integrity"


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--read-data", action="store_true", help="download and verify every pack (slow; reads everything)")


def run(args: argparse.Namespace) -> int:
    repo = open_repository(args, load_index=False)
    quiet = bool(opt(args, "quiet")) or bool(opt(args, "json"))
    lock = Lock(repo.backend, repo.keys.index_key, exclusive=False).acquire()
    try:
        report = Checker(repo, None if quiet else (lambda m: print(m, file=sys.stderr))).run(args.read_data)
    finally:
        lock.release()
        repo.close()
    if opt(args, "json"):
        emit_json({"ok": report.ok, "errors": report.errors, "damaged_files": report.damaged_files,
                   "notes": report.notes, "counts": report.counts, "read_data": args.read_data})
    else:
        for note in report.notes:
            out(args, f"note: {note}")
        for err in report.errors:
            print(f"error: {err}", file=sys.stderr)
        for f in report.damaged_files:
            print(f"damaged file: {f}", file=sys.stderr)
        c = report.counts
        summary = (f"{c.get('snapshots', 0)} snapshots, {c.get('indexes', 0)} indexes, {c.get('packs', 0)} packs, "
                   f"{c.get('blobs', 0)} blobs")
        if report.ok:
            if args.read_data and not repo.is_full():
                done = ", every pack's hash verified (a write-only key cannot decrypt blobs)"
            elif args.read_data:
                done = ", all data read and verified"
            else:
                done = ""
            out(args, f"no errors found ({summary}{done})")
        else:
            print(f"{len(report.errors)} error(s) found ({summary})", file=sys.stderr)
    return 0 if report.ok else 1
