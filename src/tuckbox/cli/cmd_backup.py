"""Back up files and directories into a new snapshot.

Only what changed since the last backup is read (a local files cache
remembers size, times and inode of every file) and only new chunks are
stored. Files that cannot be read are reported as warnings; the snapshot of
everything else is still saved and the exit code is 3.
"""

from __future__ import annotations

import argparse

from ..archiver.backup import BackupRequest, run_backup
from ..errors import EXIT_PARTIAL
from .common import emit_json, human, open_repository, opt, out
from .progress import CliProgress

HELP = "back up files and directories"


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or directories to back up")
    p.add_argument("--tag", action="append", default=[], metavar="TAG", help="add a tag to the snapshot (repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="skip entries whose path or name matches PATTERN (shell wildcards; repeatable)")
    p.add_argument("--host", default="", help="host name to record (default: this machine's)")
    p.add_argument("--one-file-system", action="store_true", help="do not cross into other mounted file systems")


def run(args: argparse.Namespace) -> int:
    repo = open_repository(args)
    progress = CliProgress(bool(opt(args, "json")), bool(opt(args, "quiet")), "backup")
    try:
        result = run_backup(
            repo,
            BackupRequest(args.paths, tags=args.tag, excludes=args.exclude, host=args.host,
                          one_file_system=args.one_file_system),
            progress,
        )
    finally:
        progress.close()
        repo.close()
    snap, s = result.snapshot, result.snapshot.summary
    if opt(args, "json"):
        emit_json({"type": "summary", "snapshot": snap.id, "short_id": snap.short_id, **s})
    else:
        out(args, f"files: {s['files_new']} new, {s['files_changed']} changed, {s['files_unmodified']} unmodified")
        out(args, f"dirs:  {s['dirs']}; other entries: {s['others']}")
        out(args, f"processed {human(s['bytes_total'])}, read {human(s['bytes_read'])}, "
                  f"added {human(s['bytes_added'])} to the repository ({s['blobs_new']} new chunks)")
        out(args, f"snapshot {snap.short_id} saved")
        if result.warnings:
            out(args, f"{len(result.warnings)} warning(s): some entries could not be read completely (listed above)")
    return EXIT_PARTIAL if result.warnings else 0
