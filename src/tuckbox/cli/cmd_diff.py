"""Show what changed between two snapshots: + added, - removed, M modified (content or metadata)."""

from __future__ import annotations

import argparse
import json
import sys

from ..snapshot.walk import diff
from ..types import BlobType
from .common import add_latest_filters, close_json_list, display, json_path_fields, open_json_list, named_snapshot, open_repository, opt

HELP = "show differences between two snapshots"
_WORD = {"+": "added", "-": "removed", "M": "modified"}


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("first", help="snapshot id prefix or 'latest'")
    p.add_argument("second", help="snapshot id prefix or 'latest'")
    add_latest_filters(p)


def run(args: argparse.Namespace) -> int:
    repo = open_repository(args)
    repo.keys.require_full("compare snapshots")
    snaps = repo.snapshots()
    a, b = named_snapshot(repo, args.first, snaps, args), named_snapshot(repo, args.second, snaps, args)
    changes = diff(lambda tid: repo.load_blob(BlobType.TREE, tid), a.tree, b.tree)
    counts = {"+": 0, "-": 0, "M": 0}
    # streamed as the trees are compared: constant memory however many paths changed
    if opt(args, "json"):
        out = sys.stdout
        open_json_list("changes")
        for kind, path in changes:
            sep = ",\n" if sum(counts.values()) else "\n"
            counts[kind] += 1
            out.write(sep + json.dumps({"change": _WORD[kind], **json_path_fields("path", path)}, sort_keys=True))
        close_json_list({"first": a.id, "second": b.id, "first_short_id": a.short_id, "second_short_id": b.short_id,
                         "added": counts["+"], "removed": counts["-"], "modified": counts["M"], "complete": True})
        return 0
    for kind, path in changes:
        counts[kind] += 1
        print(f"{kind}  {display(path)}")
    print(f"{counts['+']} added, {counts['-']} removed, {counts['M']} modified")
    return 0
