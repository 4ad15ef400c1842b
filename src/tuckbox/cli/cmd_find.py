"""Find files in every snapshot: which snapshots hold a file matching a pattern, and its size and time.

Patterns are those of backup --exclude: a name at any depth ('*.docx', 'notes.txt'), a path from the
root ('/home/*/Documents/taxes'), or the end of a path ('Documents/taxes'). Each distinct directory is
read once, however many snapshots share it.

examples:
  tuckbox find 'report*.docx'
  tuckbox find /home/ann/Documents/notes.txt --host laptop
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from ..patterns import Patterns
from ..snapshot.walk import find_in_tree
from ..types import BlobType
from .common import close_json_list, display, human, json_path_fields, open_json_list, local_time, open_repository, opt, pattern

HELP = "find files by name or path in every snapshot"


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("patterns", nargs="+", metavar="PATTERN", type=pattern, help="a name, a path from /, or the end of a path")
    p.add_argument("--host", action="append", default=[], help="only snapshots of this host (repeatable)")
    p.add_argument("--snapshot", action="append", default=[], metavar="ID",
                   help="only this snapshot ('latest' or an id prefix; repeatable)")


def run(args: argparse.Namespace) -> int:
    repo = open_repository(args)
    repo.keys.require_full("search snapshots")
    snaps = repo.snapshots()
    if args.snapshot:
        named = {id(snap): snap for snap in (repo.find_snapshot(s, snaps) for s in args.snapshot)}  # once each
        snaps = [snap for snap in snaps if id(snap) in named]
    snaps = [s for s in snaps if not args.host or s.host in args.host]
    patterns = Patterns(args.patterns)
    load = lambda tid: repo.load_blob(BlobType.TREE, tid)  # noqa: E731
    memo: dict = {}
    as_json = opt(args, "json")
    out = sys.stdout
    if as_json:
        open_json_list("matches")
    count = 0
    for snap in snaps:  # oldest first
        for path, n in find_in_tree(load, snap.tree, b"/", patterns.match, memo):
            if as_json:
                doc = {"snapshot": snap.id, "short_id": snap.short_id, "time": snap.time, "host": snap.host,
                       **json_path_fields("path", path), "type": n.type, "size": n.size, "mtime_ns": n.mtime_ns}
                out.write(("," if count else "") + "\n" + json.dumps(doc, sort_keys=True))
            else:
                when = dt.datetime.fromtimestamp(n.mtime_ns // 1_000_000_000).strftime("%Y-%m-%d %H:%M")
                size = human(n.size) if n.type == "file" else n.type
                out.write(f"{snap.short_id}  {local_time(snap.time)}  {size:>10}  {when}  {display(path)}\n")
            count += 1
    if as_json:
        close_json_list({"count": count, "complete": True})
    else:
        print(f"{count} match(es) in {len(snaps)} snapshot(s)")
    out.flush()
    return 0
