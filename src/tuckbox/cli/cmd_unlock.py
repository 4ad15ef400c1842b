"""Remove stale locks (left by processes that died); with --all, every lock."""

from __future__ import annotations

import argparse

from ..repository.locks import STALE_AFTER, read_locks
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
    if args.all:
        # a lock that looks alive may be a prune's: removed, a backup would run alongside it and store snapshots
        # that need data the prune deletes. An unattended host's key may remove only the locks of dead processes.
        repo.keys.require_full("remove locks that look alive (--all)")
    removed, kept = [], []
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
            kept.append(lock.name)
    if opt(args, "json"):
        emit_json({"removed": removed, "kept": kept})
    else:
        out(args, f"{len(removed)} lock(s) removed")
        if kept:
            out(args, f"{len(kept)} lock(s) kept: they look alive (refreshed less than {STALE_AFTER / 60:.0f} min ago, or "
                      "their process runs on this machine); 'tuckbox unlock --all' removes them too, only if you "
                      "know their processes are gone")
    return 0
