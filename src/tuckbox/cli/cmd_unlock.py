"""Remove stale locks (left by processes that died); with --all, every lock."""

from __future__ import annotations

import argparse

from ..repository.locks import read_locks
from ..types import ObjectType
from .common import emit_json, open_repository, opt, out

HELP = "remove stale locks"


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--all", action="store_true", help="also remove locks that look alive (only when you know they are not)")


def output_optional(args: argparse.Namespace) -> bool:
    """With standard output closed, still run: what is printed only reports on what was done."""
    return True


def run(args: argparse.Namespace) -> int:
    repo = open_repository(args, load_index=False)
    removed = []
    for lock in read_locks(repo.backend, repo.keys.index_key):
        if args.all or lock.is_stale():
            out(args, f"removing {lock.describe()}")
            try:
                repo.backend.remove(ObjectType.LOCK, lock.name)
            except Exception:  # noqa: BLE001 - already gone
                pass
            removed.append(lock.name)
        else:
            out(args, f"keeping active {lock.describe()}")
    if opt(args, "json"):
        emit_json({"removed": removed})
    else:
        out(args, f"{len(removed)} lock(s) removed")
    return 0
