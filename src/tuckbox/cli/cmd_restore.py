"""Restore a snapshot (or part of it) into a new directory.

Entries are written below TARGET under their original absolute paths. The
target must not exist or be empty (the empty lost+found of a new file system
counts as empty; the snapshot's own /lost+found goes into it); a restore interrupted into a target is
finished by running the same command again (files already restored correctly
are kept), also after restoring only some of its paths into it meanwhile. A
file whose stored data is damaged, or an entry that cannot be created in the
target, is not restored: it is reported, the exit code is 1 and the target keeps
its marker, so the same command run again (once the cause is fixed) finishes it.
Owner, mode, time, xattr and device-node problems are warnings (exit code 0).
"""

from __future__ import annotations

import argparse
import sys
import os

from ..errors import PermanentError, UsageError
from ..repository.locks import Lock
from ..restorer.restorer import Restorer
from .common import (
    add_latest_filters, emit_json, human, lock_wait, named_snapshot, open_repository, opt, out, pattern, say_waiting,
)
from .progress import CliProgress

HELP = "restore a snapshot into a directory"


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("snapshot", help="snapshot id prefix or 'latest'")
    p.add_argument("-t", "--target", required=True, help="directory to restore into (created; must be new or empty)")
    p.add_argument("--include", action="append", default=[], metavar="PATTERN", type=pattern,
                   help="restore only what matches PATTERN (and what is inside it): a name, a path from the root "
                        "or the end of a path, as for backup --exclude; repeatable")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN", type=pattern,
                   help="do not restore paths or names matching PATTERN; repeatable")
    p.add_argument("--numeric-owner", action="store_true", help="restore owners by number, not by name")
    add_latest_filters(p)


def output_optional(args: argparse.Namespace) -> bool:
    """With standard output closed, still run: what is printed only reports on what was done."""
    return True


def run(args: argparse.Namespace) -> int:
    if not args.target:
        raise UsageError("--target needs a directory to restore into (a new or empty one)")
    repo = open_repository(args, load_index=False, writes=True)
    repo.keys.require_full("restore")
    # a shared lock, so a prune cannot delete what is being restored; refreshed from the restoring thread
    # (worker processes are forked only while no other thread runs); storage this key cannot write to
    # (read-only) is restored from without one. The snapshot and the index are read under it: a prune
    # that --lock-wait waited for may have removed them
    lock: Lock | None = None
    try:
        try:
            lock = Lock(repo.backend, repo.keys.index_key, exclusive=False, background=False).acquire(
                lock_wait(args), say_waiting
            )
        except PermanentError as e:
            print(f"note: restoring without a lock: {e}", file=sys.stderr)
        repo.load_index()
        snap = named_snapshot(repo, args.snapshot, args=args)
    except BaseException:
        if lock is not None:
            lock.release()
        repo.close()
        raise
    progress = CliProgress(bool(opt(args, "json")), bool(opt(args, "quiet")), "restore")
    try:
        result = Restorer(repo, progress, connections=repo.connections,
                          keepalive=lock.tick if lock is not None else None).restore(
            snap, os.fsencode(os.path.expanduser(args.target)), args.include, args.exclude, args.numeric_owner
        )
    finally:
        progress.close()
        if lock is not None:
            lock.release()
        repo.close()
    n = len(result.errors)
    if result.errors:  # (each was said as it happened; listed again so that none scrolls away unseen; under
        # --json standard error still gets them: a log of standard error alone must show why the exit is 1)
        print(f"{n} {'entry' if n == 1 else 'entries'} not restored:", file=sys.stderr)
    for e in result.errors:
        print(f"error: {e}", file=sys.stderr)
    if opt(args, "json"):
        emit_json({
            "type": "summary", "snapshot": snap.id, "short_id": snap.short_id, "partial": snap.partial,
            "files": result.files, "dirs": result.dirs, "others": result.others, "bytes_written": result.bytes_written,
            "files_skipped": result.files_skipped, "bytes_read_back": result.bytes_read_back,
            "warnings": result.warnings, "errors": result.errors,
        })
        if result.errors:  # (README: a run that did not succeed ends its stream with the error, as backup's does)
            emit_json({"type": "error", "exit_code": 1,
                       "message": f"{n} {'entry' if n == 1 else 'entries'} not restored (the summary's errors name them)"})
    else:
        skipped = f" ({result.files_skipped} already restored)" if result.files_skipped else ""
        out(args, f"restored snapshot {snap.short_id}: {result.files} files{skipped}, {result.dirs} dirs, "
                  f"{result.others} other entries, {human(result.bytes_written)} written"
                  + (f" ({human(result.bytes_read_back)} of it copied from files restored before it, not "
                     "fetched again)" if result.bytes_read_back else ""))
    return 1 if result.errors else 0
