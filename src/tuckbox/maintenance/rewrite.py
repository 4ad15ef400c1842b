"""Rewriting snapshots without some of their entries (``repair snapshots``, ``rewrite --exclude``).

``rewrite_tree`` walks a snapshot's trees depth first (explicit stack: trees
may be thousands deep), asks ``verdict(path, entry map)`` about every entry,
and stores new trees for the directories that changed, bottom up; untouched
directories keep their tree ids, so a rewritten snapshot shares everything
else with the old one. Results are memoised per (tree id, path), so a
directory shared by many snapshots is rewritten once.

``save_rewritten`` saves the new snapshot (same time, host, paths, parent;
a tag added; the count of left-out entries in its summary, and its sizes and
counts those of the new tree) *before* it removes the old one: a crash in
between leaves both, never neither.

``pattern_taking_a_path`` finds an ``--exclude`` pattern that would take a
backed-up path itself (or a directory above it): ``rewrite`` refuses such a
pattern rather than save an empty snapshot in place of a full one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

from ..errors import ObjectNotFound, TuckboxError
from ..patterns import Patterns
from ..repository.packer import Packer
from ..repository.repo import Repository
from ..snapshot.model import Snapshot
from ..snapshot.tree import DIR, FILE, encode_tree
from ..snapshot.walk import decode_maps
from ..types import BlobType, ObjectType

# what to do with an entry: keep it, leave it out, or (a directory) keep it but empty
Verdict = Literal["keep", "drop", "empty"]
Judge = Callable[[bytes, dict[str, Any]], Verdict]


@dataclass(frozen=True)
class Counts:
    """What a (rewritten) tree holds below its top: entries by kind and the size of its files."""

    files: int = 0
    dirs: int = 0
    others: int = 0
    size: int = 0  # bytes, of every file

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(self.files + other.files, self.dirs + other.dirs, self.others + other.others,
                      self.size + other.size)


EMPTY = Counts()
# per (tree id, path): the new tree id (None: its listing is lost), the paths left out, what the new tree holds
Memo = dict[tuple[bytes, bytes], tuple[bytes | None, list[bytes], Counts]]


def pattern_taking_a_path(patterns: Sequence[str | bytes], snaps: Sequence[Snapshot]) -> tuple[str, Snapshot, bytes] | None:
    """The first pattern that matches a path one of ``snaps`` backs up, or a directory above it (leaving
    that snapshot nothing of it), with the snapshot and that backed-up path; None if there is none."""
    singles = [(p, Patterns([p])) for p in patterns]
    for snap in snaps:
        for backed_up in snap.paths:
            path = backed_up
            while path not in (b"/", b""):
                for pattern, single in singles:
                    if single.match(path):
                        return os.fsdecode(pattern), snap, backed_up
                path = os.path.dirname(path)
    return None


def rewrite_tree(
    repo: Repository,
    root: bytes,
    judge: Judge,
    memo: Memo,
    packer: Packer | None,
    readable: Callable[[bytes], bool] = lambda _tree_id: True,
) -> tuple[bytes | None, list[bytes], Counts]:
    """``root`` (the tree at ``/``) without what ``judge`` drops: its new id (None if its own listing
    cannot be read), the absolute paths left out (a directory emptied: ``path/``) and what the new tree
    holds (every entry below ``/``, the directories above the backed-up paths too). New trees go to
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
                memo[(tree_id, path)] = (None, [], EMPTY)
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
        files = dirs = others = size = 0
        below = EMPTY
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
                new_sub, below_removed, below_counts = memo[(sub, child)]
                if new_sub is None:  # its listing is lost: kept, empty
                    m = {k: v for k, v in m.items() if k != "st"}
                    removed.append(child + b"/")
                elif new_sub != sub:
                    m = {**m, "st": new_sub}
                removed += below_removed
                below = below + below_counts
            kept.append(m)
            kind = m["t"]
            if kind == FILE:
                files += 1
                size += int(m.get("s", 0))
            elif kind == DIR:
                dirs += 1
            else:
                others += 1
        counts = below + Counts(files, dirs, others, size)
        if removed:
            data = encode_tree(kept)
            new_id = repo.blob_id(data)
            if packer is not None:
                packer.add(BlobType.TREE, new_id, data)
            memo[(tree_id, path)] = (new_id, removed, counts)
        else:
            memo[(tree_id, path)] = (tree_id, [], counts)
        stack.pop()
    return memo[(root, b"/")]


def _above(paths: Sequence[bytes]) -> set[bytes]:
    """The directories above the backed-up ``paths`` (not ``/``): in the tree, but not counted by a backup."""
    out: set[bytes] = set()
    for p in paths:
        p = os.path.dirname(p)
        while p not in (b"/", b""):
            out.add(p)
            p = os.path.dirname(p)
    return out


def save_rewritten(
    repo: Repository, snap: Snapshot, new_tree: bytes, tag: str, removed: int, counts: Counts,
    existing: Sequence[Snapshot] = (),
) -> str:
    """Save ``snap`` with ``new_tree`` (tagged, the count left out in its summary, its sizes and counts
    those of ``counts``, what ``rewrite_tree`` found the new tree holds), then remove the old snapshot
    object; the new one's name. Call only after the packer holding the new trees was flushed.

    A run stopped between the two writes leaves both; the next run makes the same snapshot again, so
    when ``existing`` (the snapshots listed) holds it already, it is not saved a second time: the old one
    is only removed (two identical snapshots would each take a place a retention rule keeps).

    ``bytes_total``, ``dirs``, ``others`` and ``files`` describe the new tree, counted as a backup counts
    them (the directories above the backed-up paths are not); the other fields (files new, changed,
    unmodified, bytes read and added) stay what the backup that made the snapshot did."""
    summary = dict(snap.summary)
    summary[f"{tag}_removed"] = summary.get(f"{tag}_removed", 0) + removed
    summary.update(files=counts.files, dirs=max(0, counts.dirs - len(_above(snap.paths))), others=counts.others,
                   bytes_total=counts.size)
    fixed = Snapshot(
        time=snap.time, host=snap.host, user=snap.user, paths=snap.paths, tree=new_tree,
        tags=sorted(set(snap.tags) | {tag}), parent=snap.parent, partial=snap.partial,
        summary=summary, program=snap.program,
    )
    doc = fixed.to_doc()
    same = next((s.id for s in existing if s.id != snap.id and s.to_doc() == doc), None)
    name = same if same is not None else repo.save_snapshot(fixed)
    if name != snap.id:
        try:
            repo.backend.remove(ObjectType.SNAPSHOT, snap.id)
        except ObjectNotFound:
            pass
        repo.cache.discard("snapshots", snap.id)
    return name
