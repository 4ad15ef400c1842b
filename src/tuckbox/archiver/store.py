"""The BlobStore a backup run gives the archiver, and trimming a stopped run's trees to what was stored.

The archiver sees the narrow ``BlobStore`` protocol: blob ids, "do you have
it", "store it". Here that is the repository's index plus this run's packer
(blobs still pending in an unstored pack count as present, so the walk
deduplicates against them).

When a run is stopped (Ctrl-C), the packer gives up the data packs that were
not stored yet (repository/packer.py), so some files the walk finished name
chunks that will never be stored. A checkpoint must not reference them. The
store therefore remembers, for every tree blob that named a data chunk not
yet stored when the tree was made (or a subtree like that), the tree's bytes
— only while that is so: once every chunk it names is stored the tree is
forgotten. That is a window of a few packs, so memory stays small. ``trim``
then rewrites the root tree: files with a chunk that is not stored are left
out (the next run reads them again: the files cache trusts only indexed
chunks), directories that lost entries get new trees marked incomplete, and
everything else keeps its tree. The new tree blobs go to the packer like any
other, so ``flush`` stores them before the snapshot names them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from ..repository.packer import Packer
from ..repository.packproc import PackProcess
from ..repository.repo import Repository
from ..snapshot.tree import INCOMPLETE, encode_tree, node_refs
from ..types import BlobType


@dataclass
class _Unsure:
    raw: bytes  # the tree blob
    missing: list[bytes]  # data chunks it names that were not stored when it was made
    subtrees: list[bytes]  # subtrees it names that were themselves unsure


class RunStore:
    """BlobStore over the repository index and this run's packer."""

    def __init__(self, repo: Repository, packer: Packer | PackProcess) -> None:
        self._repo = repo
        self._packer = packer
        # every id indexed or pending (the unchanged-file check, once per file: bound, not a method calling one)
        self.has_blobs: Callable[[list[bytes]], bool] = packer.known_all
        self._unsure: dict[bytes, _Unsure] = {}  # tree id -> tree, in the order made (children first)
        self._kept = 0  # how many were left after the last pruning

    def blob_id(self, data: bytes | memoryview) -> bytes:
        return self._repo.blob_id(data)

    def has_blob(self, blob_id: bytes) -> bool:
        return self._packer.known(blob_id)


    def add_blob(self, blob_type: BlobType, blob_id: bytes, data: bytes | memoryview) -> bool:
        new = self._packer.add(blob_type, blob_id, data)
        if blob_type is BlobType.TREE:
            self._note_tree(blob_id, data)
        return new

    def add_tree(self, tree_id: bytes, data: bytes, nodes: list[Any]) -> bool:
        new = self._packer.add(BlobType.TREE, tree_id, data)
        self._note_tree(tree_id, data, nodes)
        return new

    # -- which trees may name data that is not stored --

    def _note_tree(self, tree_id: bytes, data: bytes | memoryview, nodes: list[Any] | None = None) -> None:
        """Remember the tree if it names data not stored yet (``nodes``: its entries, when at hand,
        so the tree need not be decoded again)."""
        if not self._packer.stopping and not self._packer.data_pending():
            # every data blob accepted so far is stored (before a stop nothing is dropped), so this
            # tree and every earlier one name stored chunks only
            self._unsure.clear()
            self._kept = 0
            return
        has = self._repo.index.has
        missing: list[bytes] = []
        subtrees: list[bytes] = []
        refs = node_refs(nodes) if nodes is not None else [(m.get("c", ()), m.get("st")) for m in _nodes(bytes(data))]
        unsure = self._unsure
        for content, st in refs:
            for c in content:
                if type(c) is bytes and not has(c):
                    missing.append(c)
            if st and st in unsure:
                subtrees.append(st)
        if missing or subtrees:
            self._unsure[tree_id] = _Unsure(bytes(data), missing, subtrees)
            if len(self._unsure) > 2 * self._kept + 256:
                self._prune()

    def _prune(self) -> None:
        """Forget trees whose chunks have all been stored since (children come before parents)."""
        has = self._repo.index.has
        for tree_id in list(self._unsure):
            entry = self._unsure[tree_id]
            entry.missing = [c for c in entry.missing if not has(c)]
            entry.subtrees = [t for t in entry.subtrees if t in self._unsure]
            if not entry.missing and not entry.subtrees:
                del self._unsure[tree_id]
        self._kept = len(self._unsure)

    # -- after a stop --

    def trim(self, root: bytes) -> tuple[bytes, int, int]:
        """``root`` rewritten to name only stored data; and how many files (and bytes) were left out.

        Call after ``Packer.abandon``: what is not in the index by then never will be.
        """
        has = self._repo.index.has
        done: dict[bytes, bytes] = {}
        left_out = left_bytes = 0

        def fix(tree_id: bytes) -> bytes:
            nonlocal left_out, left_bytes
            entry = self._unsure.get(tree_id)
            if entry is None:
                return tree_id
            if tree_id in done:
                return done[tree_id]
            kept: list[dict[str, Any]] = []
            changed = False
            for m in _nodes(entry.raw):
                if any(type(c) is bytes and not has(c) for c in m.get("c", ())):
                    left_out += 1
                    left_bytes += m.get("s", 0)
                    changed = True
                    continue
                st = m.get("st")
                if st and st in self._unsure:
                    new = fix(st)
                    if new != st:
                        m["st"] = new
                        m.setdefault("w", INCOMPLETE)  # "w" is the last key of a node map: order stays canonical
                        changed = True
                kept.append(m)
            result = tree_id
            if changed:
                raw = encode_tree(kept)
                result = self._repo.blob_id(raw)
                self._packer.add(BlobType.TREE, result, raw)
            done[tree_id] = result
            return result

        return fix(root), left_out, left_bytes


def _nodes(raw: bytes) -> list[dict[str, Any]]:
    """The node maps of a tree blob this run encoded (canonical, so they re-encode to the same bytes)."""
    return msgpack.unpackb(raw)["nodes"]
