"""Write one file of a snapshot to standard output."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from ..errors import UsageError
from ..restorer.restorer import dump_file
from ..snapshot.tree import FILE, SYMLINK
from ..snapshot.walk import require
from ..types import BlobType
from .common import display, named_snapshot, nonempty, open_repository

HELP = "print a file from a snapshot"

_KIND = {"dir": "directory", "symlink": "symbolic link", "fifo": "FIFO", "chardev": "character device",
         "blockdev": "block device"}


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("snapshot", help="snapshot id prefix or 'latest'")
    p.add_argument("path", type=nonempty, help="absolute path of the file in the snapshot")


def run(args: argparse.Namespace) -> int:
    repo = open_repository(args)
    repo.keys.require_full("dump files")
    snap = named_snapshot(repo, args.snapshot)
    path = os.path.normpath(os.path.abspath(os.fsencode(os.path.expanduser(args.path))))
    node = require(lambda t: repo.load_blob(BlobType.TREE, t), snap.tree, path, snap.id)
    if node.type == SYMLINK:
        there = os.path.normpath(os.path.join(os.path.dirname(path), node.link_target))
        raise UsageError(f"{display(args.path)} is a symlink to {display(node.link_target)}, not a file; "
                         f"dump {display(there)} instead")
    if node.type != FILE:
        # (a symlink, a FIFO or a device has no contents to print: restore makes it, as it does a directory)
        what = _KIND.get(node.type, node.type)
        raise UsageError(f"{display(args.path)} is a {what}, not a file; 'tuckbox restore {snap.short_id} --target DIR "
                         f"--include {shlex.quote(display(path))}' restores it")
    out = sys.stdout.buffer
    dump_file(repo, node, out.write)
    out.flush()
    return 0
