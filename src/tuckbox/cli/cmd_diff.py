"""Show what changed between two snapshots: + added, - removed, M modified (content or metadata)."""

from __future__ import annotations

import argparse

from ..snapshot.walk import diff
from ..types import BlobType
from .common import display, emit_json, open_repository, opt

HELP = "show differences between two snapshots"


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("first", help="snapshot id prefix or 'latest'")
    p.add_argument("second", help="snapshot id prefix or 'latest'")


def run(args: argparse.Namespace) -> int:
    repo = open_repository(args)
    repo.keys.require_full("compare snapshots")
    snaps = repo.snapshots()
    a, b = repo.find_snapshot(args.first, snaps), repo.find_snapshot(args.second, snaps)
    changes = list(diff(lambda tid: repo.load_blob(BlobType.TREE, tid), a.tree, b.tree))
    counts = {"+": 0, "-": 0, "M": 0}
    for kind, _ in changes:
        counts[kind] += 1
    if opt(args, "json"):
        emit_json({
            "first": a.id, "second": b.id,
            "changes": [{"change": {"+": "added", "-": "removed", "M": "modified"}[k], "path": display(p)} for k, p in changes],
            "added": counts["+"], "removed": counts["-"], "modified": counts["M"],
        })
        return 0
    for kind, path in changes:
        print(f"{kind}  {display(path)}")
    print(f"{counts['+']} added, {counts['-']} removed, {counts['M']} modified")
    return 0
