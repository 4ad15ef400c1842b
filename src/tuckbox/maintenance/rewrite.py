"""Rewriting snapshots without some of their entries (``repair snapshots``, ``rewrite --exclude``).

``rewrite_tree`` walks a snapshot's trees depth first (explicit stack: trees
may be thousands deep), asks ``verdict(path, entry map)`` about every entry,
and stores new trees for the directories that changed, bottom up; untouched
directories keep their tree ids, so a rewritten snapshot shares everything
else with the old one. Results are memoised per (tree id, path), so a
directory shared by many snapshots is rewritten once.

``save_rewritten`` saves the new snapshot (same time, host, paths, parent;
a tag added; the count of left-out entries in its summary) *before* it removes
the old one: a crash in between leaves both, never neither.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Literal

from ..errors import ObjectNotFound, TuckboxError
from ..repository.packer import Packer
from ..repository.repo import Repository
from ..snapshot.model import Snapshot
from ..snapshot.tree import encode_tree
from ..snapshot.walk import decode_maps
from ..types import BlobType, ObjectType

# what to do with an entry: keep it, leave it out, or (a directory) keep it but empty
Verdict = Literal["keep", "drop", "empty"]
Judge = Callable[[bytes, dict[str, Any]], Verdict]
Memo = dict[tuple[bytes, bytes], tuple[bytes | None, list[bytes]]]


def rewrite_tree(
    repo: Repository,
    root: bytes,
    judge: Judge,
    memo: Memo,
    packer: Packer | None,
    readable: Callable[[bytes], bool] = lambda _tree_id: True,
) -> tuple[bytes | None, list[bytes]]:
    """``root`` (the tree at ``/``) without what ``judge`` drops: its new id (None if its own listing
    cannot be read) and the absolute paths left out (a directory emptied: ``path/``). New trees go to
    ``packer`` (None: a dry run, nothing stored). ``readable(tree id)`` False, or a listing that fails
    to load, counts as a lost listing: such a directory is kept, empty."""
    stack: list[list[Any]] = [[root, b"/", None]]
    while stack:
        frame = stack[-1]
        tree_id, path = frame[0], frame[1]
        if (tree_id, path) in memo:
            stack.pop()
            continue
        if frame[2] is None:
            maps = None
            if readable(tree_id):
                try:
                    maps = decode_maps(repo.load_blob(BlobType.TREE, tree_id))
                except TuckboxError:
                    maps = None
            if maps is None:
                memo[(tree_id, path)] = (None, [])
                stack.pop()
                continue
            frame[2] = maps
            below = []
            for m in maps:
                sub = m.get("st")
                child = os.path.join(path, m["n"])
                if sub and (sub, child) not in memo and judge(child, m) == "keep":
                    below.append([sub, child, None])
            if below:
                stack.extend(below)
                continue
        kept: list[dict[str, Any]] = []
        removed: list[bytes] = []
        for m in frame[2]:
            child = os.path.join(path, m["n"])
            verdict = judge(child, m)
            if verdict == "drop":
                removed.append(child)
                continue
            sub = m.get("st")
            if verdict == "empty" and sub:
                m = {k: v for k, v in m.items() if k != "st"}
                removed.append(child + b"/")
            elif sub:
                new_sub, below_removed = memo[(sub, child)]
                if new_sub is None:  # its listing is lost: kept, empty
                    m = {k: v for k, v in m.items() if k != "st"}
                    removed.append(child + b"/")
                elif new_sub != sub:
                    m = {**m, "st": new_sub}
                removed += below_removed
            kept.append(m)
        if removed:
            data = encode_tree(kept)
            new_id = repo.blob_id(data)
            if packer is not None:
                packer.add(BlobType.TREE, new_id, data)
            memo[(tree_id, path)] = (new_id, removed)
        else:
            memo[(tree_id, path)] = (tree_id, [])
        stack.pop()
    return memo[(root, b"/")]


def save_rewritten(repo: Repository, snap: Snapshot, new_tree: bytes, tag: str, removed: int) -> str:
    """Save ``snap`` with ``new_tree`` (tagged, the count left out in its summary), then remove the old
    snapshot object; the new one's name. Call only after the packer holding the new trees was flushed."""
    summary = dict(snap.summary)
    summary[f"{tag}_removed"] = summary.get(f"{tag}_removed", 0) + removed
    fixed = Snapshot(
        time=snap.time, host=snap.host, user=snap.user, paths=snap.paths, tree=new_tree,
        tags=sorted(set(snap.tags) | {tag}), parent=snap.parent, partial=snap.partial,
        summary=summary, program=snap.program,
    )
    name = repo.save_snapshot(fixed)
    if name != snap.id:
        try:
            repo.backend.remove(ObjectType.SNAPSHOT, snap.id)
        except ObjectNotFound:
            pass
        repo.cache.discard("snapshots", snap.id)
    return name
