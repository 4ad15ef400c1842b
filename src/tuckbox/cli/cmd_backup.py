"""Back up files and directories into a new snapshot.

Only what changed since the last backup is read (a local files cache
remembers size, times and inode of every file) and only new chunks are
stored. Files that cannot be read are reported as warnings; the snapshot of
everything else is still saved and the exit code is 3.

Interrupted (Ctrl-C, kill, power loss, network gone)? Run the same command
again: it resumes, uploads no pack that was already stored and reads no file
that was already saved. A long backup also saves a restorable checkpoint
every 15 minutes; Ctrl-C stops within a couple of seconds (uploads still under
way are given up, not waited for), saves what was stored as one and exits
with 130 (twice: quit at once).

examples:
  tuckbox backup ~/Documents ~/Music --tag daily
  tuckbox backup / --one-file-system --exclude '/home/*/.cache' --exclude '*.tmp'
  tuckbox backup ~ --exclude-caches --exclude-file ~/.config/tuckbox/excludes
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from ..archiver.backup import DEFAULT_CHECKPOINT_INTERVAL, BackupRequest, run_backup
from ..errors import EXIT_INTERRUPTED, EXIT_PARTIAL, UsageError
from ..patterns import Patterns, covering
from . import interrupt
from .common import display, emit_json, host_name, human, json_paths_fields, lock_wait, nonempty, open_repository, opt, out, parse_duration, pattern, patterns_from_file, tag, warn
from .progress import CliProgress

HELP = "back up files and directories"


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", type=nonempty, help="files or directories to back up")
    p.add_argument("--tag", action="append", default=[], metavar="TAG", type=tag, help="add a tag to the snapshot (repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN", type=pattern,
                   help="skip what matches PATTERN, and all inside it: a name at any depth ('*.tmp', '.cache'), "
                        "a path from the root ('/home/*/.cache') or the end of a path ('.cache/thumbnails'); "
                        "shell wildcards; repeatable")
    p.add_argument("--exclude-file", action="append", default=[], metavar="FILE", type=nonempty,
                   help="read --exclude patterns from FILE, one per line (blank lines and lines starting with # "
                        "are ignored); repeatable")
    p.add_argument("--exclude-caches", action="store_true",
                   help="store directories marked with a CACHEDIR.TAG (browser, build and package caches) empty")
    p.add_argument("--host", default="", type=host_name, help="host name to record (default: this machine's)")
    p.add_argument("--one-file-system", action="store_true", help="stay on the file systems of the paths given: another one mounted below them is stored as an "
                        "empty directory unless its mount point is given as a path too")
    p.add_argument("--checkpoint-interval", metavar="DURATION", default=None,
                   help="save a restorable checkpoint this often during a long backup, e.g. 15m, 1h, 90s; "
                        "0 disables (default 15m)")


def output_optional(args: argparse.Namespace) -> bool:
    """With standard output closed, still run: what is printed only reports on what was done."""
    return True


class _StopOnSignal:
    """First Ctrl-C (or SIGTERM): stop within a couple of seconds, saving what is stored as a checkpoint
    (unfinished uploads are given up, not waited for). Second: quit at once."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._old: dict[int, object] = {}

    def __enter__(self) -> "_StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.event.is_set():
            interrupt.exit_after(interrupt.QUIT_GRACE)  # what the cleanup waits for (a storage that stopped answering) may never come
            raise KeyboardInterrupt
        self.event.set()
        print("\nstopping: saving what is done as a checkpoint (press Ctrl-C again to quit at once)", file=sys.stderr)

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)  # type: ignore[arg-type]


def run(args: argparse.Namespace) -> int:
    interval = parse_duration(args.checkpoint_interval) if args.checkpoint_interval else DEFAULT_CHECKPOINT_INTERVAL
    excludes = list(args.exclude) + [p for f in args.exclude_file for p in patterns_from_file(f)]
    everything = next((p for p in excludes if Patterns([p]).match(b"/", b"")), None)
    if everything is not None:
        raise UsageError(f"--exclude {display(everything)} matches the root: it would leave out everything")
    for path in args.paths:  # (a pattern leaves out everything inside what it matches: README)
        absolute = os.path.normpath(os.path.abspath(os.fsencode(path)))
        if (pattern := covering(excludes, absolute)) is not None:
            raise UsageError(f"--exclude {display(pattern)} leaves out all of {display(path)}, which is a path to back up; "
                             "drop the pattern, make it narrower, or back up another path")
    for path in args.paths:
        if os.path.islink(path.rstrip("/") or "/"):  # (a trailing slash still names the link here)
            warn(f"{display(path)} is a symbolic link: the link is backed up, not the files it points to; "
                 f"to back them up, give the target path ({display(os.path.realpath(path))})")
    repo = open_repository(args, load_index=False, writes=True)  # (the index is loaded under the lock)
    if not repo.cache.enabled:
        warn(f"cannot use the cache directory {display(os.fsencode(repo.cache.dir))} ({repo.cache.problem}): this backup "
             "reads every file again, and if it is interrupted its uploads start over; "
             "set TUCKBOX_CACHE_DIR to a writable directory")
    elif problem := repo.cache.unwritable():
        warn(f"cannot write to the cache directory {display(os.fsencode(repo.cache.dir))} ({problem}): the next backup "
             "reads again every file this one reads, and if this one is interrupted its uploads start over; "
             "set TUCKBOX_CACHE_DIR to a writable directory")
    progress = CliProgress(bool(opt(args, "json")), bool(opt(args, "quiet")), "backup")
    try:
        with _StopOnSignal() as stop:
            result = run_backup(
                repo,
                BackupRequest(args.paths, tags=args.tag, excludes=excludes, host=args.host,
                              one_file_system=args.one_file_system, exclude_caches=args.exclude_caches,
                              checkpoint_interval=interval, lock_wait=lock_wait(args)),
                progress,
                should_stop=stop.event.is_set,
            )
    finally:
        progress.close()
        repo.close()
    snap, s = result.snapshot, result.summary
    if result.cache_problem:
        warn(f"cannot write to the cache directory {display(os.fsencode(repo.cache.dir))} ({result.cache_problem}): "
             "the next backup reads again every file this one read, and an interrupted one starts its uploads over; "
             "make room there or set TUCKBOX_CACHE_DIR to another directory")
    if result.interrupted:
        if opt(args, "json"):
            emit_json({"type": "summary", "snapshot": snap.id if snap else None, "short_id": snap.short_id if snap else None,
                       "interrupted": True, "left_out": result.left_out, **s})
        unstored = f" ({result.left_out} file(s) whose data was still uploading left out)" if result.left_out else ""
        if snap is None:  # (a checkpoint of no file would restore nothing, yet be 'latest')
            message = (f"interrupted before any file was saved{unstored}: no checkpoint saved; "
                       "run the same backup again to resume")
        else:
            message = (f"interrupted: checkpoint {snap.short_id} saved with what was done{unstored}; "
                       "run the same backup again to resume")
        print(f"tuckbox: {message}", file=sys.stderr)
        if opt(args, "json"):  # (README: a run that did not succeed ends its stream with the error, as restore's does)
            emit_json({"type": "error", "message": message, "exit_code": EXIT_INTERRUPTED})
        return EXIT_INTERRUPTED
    assert snap is not None  # (only an interrupted run may save none)
    if opt(args, "json"):
        emit_json({"type": "summary", "snapshot": snap.id, "short_id": snap.short_id, "interrupted": False,
                   **json_paths_fields("skipped_own", result.skipped_own), **s})
    else:
        for path in result.skipped_own:
            out(args, f"left out {display(path)}: tuckbox's own repository or cache is never backed up into itself")
        out(args, f"files: {s['files_new']} new, {s['files_changed']} changed, {s['files_unmodified']} unmodified")
        out(args, f"dirs:  {s['dirs']}; other entries: {s['others']}")
        out(args, f"processed {human(s['bytes_total'])}, read {human(s['bytes_read'])}, "
                  f"added {human(s['bytes_added'])} to the repository ({s['blobs_new']} new chunks)")
        if result.adopted_packs:
            out(args, f"resumed: {result.adopted_packs} pack(s) stored by an interrupted run were reused")
        out(args, f"snapshot {snap.short_id} saved")
        if result.warnings:
            out(args, f"{len(result.warnings)} warning(s): some entries could not be read completely (listed above)")
    return EXIT_PARTIAL if result.warnings else 0
