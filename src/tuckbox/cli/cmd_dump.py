"""Write one file of a snapshot to standard output."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from ..errors import UsageError
from ..restorer.dump import dump_file
from ..snapshot.tree import FILE, SYMLINK
from ..snapshot.walk import require_any
from ..types import BlobType
from .common import add_latest_filters, display, named_snapshot, nonempty, open_repository, snapshot_paths

HELP = "print a file from a snapshot"

_KIND = {"dir": "directory", "symlink": "symbolic link", "fifo": "FIFO", "chardev": "character device",
         "blockdev": "block device"}


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("snapshot", help="snapshot id prefix or 'latest'")
    p.add_argument("path", type=nonempty, help="the file's path as it was backed up (absolute, or from the current directory; as ls shows it, "
                                                    "\\xff and all, or as typed)")
    add_latest_filters(p)


def run(args: argparse.Namespace) -> int:
    repo = open_repository(args)
    repo.keys.require_full("dump files")
    snap = named_snapshot(repo, args.snapshot, args=args)
    path, node = require_any(lambda t: repo.load_blob(BlobType.TREE, t), snap.tree, snapshot_paths(args.path), snap.id)
    restore = f"'tuckbox restore {snap.short_id} --target DIR --include {shlex.quote(display(path))}'"
    if node.type == SYMLINK:  # (the file it points to may be in the snapshot too)
        there = os.path.normpath(os.path.join(os.path.dirname(path), node.link_target))
        raise UsageError(f"{display(path)} is a symbolic link to {display(node.link_target)}, not a file: dump "
                         f"{display(there)}, or restore the link with {restore}")
    if node.type != FILE:
        # (a directory, a FIFO or a device has no contents to print: restore makes it)
        what = _KIND.get(node.type, node.type)
        raise UsageError(f"{display(path)} is a {what}, not a file; {restore} restores it")
    out = sys.stdout.buffer
    dump_file(repo, node, out.write)
    out.flush()
    return 0
