"""List the entries of a snapshot, below an optional path (recursively)."""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import stat
import sys
from typing import Iterator

from ..snapshot.tree import DIR, Node
from ..snapshot.walk import require_any, walk
from ..types import BlobType
from .common import (
    add_latest_filters, close_json_list, display, json_path_fields, open_json_list, named_snapshot, nonempty, open_repository, opt, snapshot_paths,
)

HELP = "list files in a snapshot"

_KIND = {"file": "-", "dir": "d", "symlink": "l", "fifo": "p", "chardev": "c", "blockdev": "b"}


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("snapshot", help="snapshot id prefix or 'latest'")
    p.add_argument("path", nargs="?", default="/", type=nonempty, help="list below this path as it was backed up (absolute, or from the current directory, so ~/x works; "
                        "as ls shows it, \\xff and all, or as typed; default: everything)")
    p.add_argument("-l", "--long", action="store_true",
                   help="show mode, owner, size and time, and what the backup noted of an entry (a directory a "
                        "checkpoint holds only part of: incomplete)")
    add_latest_filters(p)


def _entry_json(path: bytes, n: Node) -> dict:
    return {
        **json_path_fields("path", path), "type": n.type, "mode": n.mode, "uid": n.uid, "gid": n.gid,
        "user": n.user, "group": n.group, "size": n.size, "mtime_ns": n.mtime_ns,
        **(json_path_fields("link_target", n.link_target) if n.link_target else {"link_target": None}),
        **({"warning": n.warning} if n.warning else {}),  # (a checkpoint's "incomplete: ...", "changed during backup")
    }


def run(args: argparse.Namespace) -> int:
    repo = open_repository(args)
    repo.keys.require_full("list files")
    snap = named_snapshot(repo, args.snapshot, args=args)
    load = lambda tid: repo.load_blob(BlobType.TREE, tid)  # noqa: E731
    base, node = require_any(load, snap.tree, snapshot_paths(args.path), snap.id)
    entries: Iterator[tuple[bytes, Node]] = iter([] if base == b"/" else [(base, node)])
    if node.type == DIR:
        entries = itertools.chain(entries, walk(load, node.subtree, base))
    # streamed as the trees are read: a snapshot of millions of files is listed in constant memory
    if opt(args, "json"):
        out = sys.stdout
        open_json_list("entries")
        for i, (path, n) in enumerate(entries):
            out.write((",\n" if i else "\n") + json.dumps(_entry_json(path, n), sort_keys=True))
        close_json_list({"snapshot": snap.id, "short_id": snap.short_id, "complete": True})
        return 0
    for path, n in entries:
        if args.long:
            mode = _KIND.get(n.type, "?") + stat.filemode(n.mode)[1:]
            when = dt.datetime.fromtimestamp(n.mtime_ns // 1_000_000_000).strftime("%Y-%m-%d %H:%M:%S")
            user, group = display(n.user) if n.user else n.uid, display(n.group) if n.group else n.gid
            line = f"{mode} {user:>8} {group:>8} {n.size:>12} {when} {display(path)}"
            if n.link_target:
                line += f" -> {display(n.link_target)}"
            if n.warning:  # what the backup said of it: a directory of a checkpoint it had not finished, ...
                line += f"  ({n.warning})"
            print(line)
        else:
            print(display(path))
    return 0
