"""List snapshots: id, time, host, tags, paths and size. Checkpoints of unfinished backups are marked."""

from __future__ import annotations

import argparse
import sys

from ..repository.keyring import own_snapshots
from ..repository.repo import Repository, ahead_of_clock
from .common import display, emit_json, human, json_paths_fields, local_time, open_repository, opt, print_table

HELP = "list snapshots"


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", action="append", default=[], help="only snapshots of this host (repeatable)")
    p.add_argument("--tag", action="append", default=[], help="only snapshots with this tag (repeatable)")


def run(args: argparse.Namespace) -> int:
    repo = open_repository(args, load_index=False)
    if not repo.is_full():
        return _own_work(args, repo)
    snaps = [
        s for s in repo.snapshots()
        if (not args.host or s.host in args.host) and (not args.tag or set(args.tag) & set(s.tags))
    ]
    if opt(args, "json"):
        emit_json([
            {
                "id": s.id, "short_id": s.short_id, "time": s.time, "host": s.host, "user": s.user,
                "tags": s.tags, **json_paths_fields("paths", s.paths), "parent": s.parent,
                "partial": s.partial, "summary": s.summary, "tree": s.tree.hex(),
            }
            for s in snaps
        ])
        return 0
    rows = [("ID", "Time", "Host", "Tags", "Paths", "Size")]
    for s in snaps:
        rows.append((
            s.short_id + (" (checkpoint)" if s.partial else ""),
            local_time(s.time),
            s.host,
            ",".join(s.tags),
            b", ".join(s.paths),  # (print_table shows every cell as a path: displayed once, not twice)
            human(s.summary.get("bytes_total", 0)),
        ))
    print_table(rows)
    print(f"{len(snaps)} snapshot(s)")
    for s in snaps:
        if note := ahead_of_clock(s):
            print(f"note: snapshot {s.short_id} of {display(s.host)} is {note}", file=sys.stderr)
    return 0


def _own_work(args: argparse.Namespace, repo: Repository) -> int:
    """A write-only key cannot read snapshots: list only what it saved from this machine (a local record)."""
    snaps = [
        s for s in own_snapshots(repo)
        if (not args.host or s.host in args.host) and (not args.tag or set(args.tag) & set(s.tags))
    ]
    if opt(args, "json"):
        emit_json([s.as_dict() for s in snaps])
        return 0
    print("write-only key: it cannot read the repository's snapshots; these are only the ones it saved from "
          "this machine (its own work, recorded locally)", file=sys.stderr)
    rows = [("ID", "Time", "Host", "Tags", "Paths", "Size")]
    for s in snaps:
        rows.append((
            s.short_id + (" (checkpoint)" if s.partial else "") + ("" if s.present else " (gone)"),
            local_time(s.time),
            s.host,
            ",".join(s.tags),
            ", ".join(s.paths),
            human(s.summary.get("bytes_total", 0)),
        ))
    print_table(rows)
    print(f"{len(snaps)} snapshot(s) saved by this write-only key (own work)")
    return 0
