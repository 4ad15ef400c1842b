"""Repository check: structure always, every byte with ``read_data``.

Structure: every index object matches its name and decrypts; every indexed
pack exists with the indexed size; every snapshot decrypts; every tree of
every snapshot loads; every chunk a file names is indexed. ``read_data``
downloads every pack, checks its hash against its name, decrypts every blob
and checks it against its id and the index. Problems name the damaged object
and every file that depends on it; nothing is repaired here.
"""

from __future__ import annotations

import math
import os
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from ..backends.wrappers import cancel_scope
from ..errors import IntegrityError, ObjectNotFound, TuckboxError
from ..pack.format import PackKey
from ..repository.index import PackRecord, decode_index_raw
from ..repository.repo import Repository, forget_hint, object_name, snapshot_problem
from ..snapshot.model import Snapshot
from ..snapshot.tree import DIR, FILE, Node, decode_tree
from ..text import display_path as _display
from ..types import BlobType, ObjectType


UNREADABLE_SHOWN = 10  # packs the storage did not deliver, named one by one; the rest counted in one line
FOREIGN_SHOWN = 10  # files in the object directories that are not tuckbox's, named one by one; the rest counted


@dataclass
class CheckReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # worth a look, not damage: the check still passes
    notes: list[str] = field(default_factory=list)
    damaged_files: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors




def pack_subset(spec: str) -> Callable[[list[str]], set[str]]:
    """Which packs ``check --read-data-subset`` reads, chosen from the names of the stored packs: ``N/M`` is
    the N-th of M fixed parts (split by pack name, so running 1/M ... M/M, say one a week, reads every pack
    exactly once), ``P%`` a random P % of the packs, rounded up (so at least one pack whenever there is one:
    a small repository's 10 % is not "no pack at all"). ValueError with a message on anything else."""
    text = spec.strip()
    if text.endswith("%"):
        try:
            share = float(text[:-1])
        except ValueError:
            share = -1.0
        if not 0 < share <= 100:
            raise ValueError(f"--read-data-subset {spec!r}: a percentage must be above 0 and at most 100, e.g. 10%")

        def sample(names: list[str]) -> set[str]:
            count = min(len(names), max(1, math.ceil(len(names) * share / 100 - 1e-9)))  # (1e-9: float noise)
            return set(random.SystemRandom().sample(names, count))

        return sample
    part, sep, parts = text.partition("/")
    if not (sep and part.isdigit() and parts.isdigit() and 1 <= int(part) <= int(parts)):
        raise ValueError(f"--read-data-subset {spec!r}: write N/M (1 <= N <= M, e.g. 2/5) or a percentage (e.g. 10%)")
    n, m = int(part), int(parts)
    return lambda names: {name for name in names if int(name[:16], 16) % m == n - 1}


class Checker:
    def __init__(self, repo: Repository, on_progress: Callable[[str], None] | None = None) -> None:
        self.repo = repo
        self.report = CheckReport()
        self.on_progress = on_progress or (lambda _msg: None)
        self._bad_blobs: dict[bytes, str] = {}  # blob id -> why
        self._bad_trees: dict[bytes, str] = {}
        self._not_indexed: set[bytes] = set()  # blobs (trees, chunks) the snapshots need that no index names
        self._damaged_packs: set[str] = set()  # stored with the indexed size, but their bytes are damaged

    def _error(self, msg: str) -> None:
        self.report.errors.append(msg)

    def run(self, read_data: bool = False, subset: Callable[[list[str]], set[str]] | None = None) -> CheckReport:
        """``subset``: with ``read_data``, read only the packs it selects (from their names)."""
        backend = self.repo.backend
        self.repo.trees_from_storage = True  # (the cache's copies would hide damage in the repository)
        # snapshots are listed before indexes: a backup running meanwhile stores its index before its
        # snapshot, so every snapshot listed here has its index in the listing below
        snapshot_names = sorted(i.name for i in backend.list(ObjectType.SNAPSHOT))
        self.on_progress("loading indexes")
        index_names = sorted(i.name for i in backend.list(ObjectType.INDEX))
        repairable = False
        for name in index_names:
            try:
                raw = backend.load(ObjectType.INDEX, name)
                if object_name(raw) != name:
                    raise IntegrityError(f"index {name[:8]} does not match its name: it was modified or damaged")
                for pack in decode_index_raw(raw, self.repo.keys.index_key, name):
                    self.repo.index.add_raw(pack)
            except TuckboxError as e:
                self._error(f"index {name}: {e}")
                repairable = True
        self.repo.index.index_names.update(index_names)
        self.on_progress("listing packs")
        stored = {i.name: i.size for i in backend.list(ObjectType.PACK)}
        for name, pack in self.repo.index.packs.items():
            if name not in stored:
                repairable = True
                self._error(f"pack {name}: missing (named by the index)")
                self._mark_pack(pack, "its pack is missing")
            elif stored[name] != pack.size:
                repairable = True
                self._error(f"pack {name}: size {stored[name]} but the index says {pack.size} (truncated or damaged)")
                self._mark_pack(pack, "its pack is damaged")
        if repairable:
            self.report.notes.append(
                "'tuckbox repair index' indexes the packs of a damaged index object again from their own headers, "
                "and drops missing packs from the index so that the next backup stores their data again"
            )
        unindexed = set(stored) - set(self.repo.index.packs)
        if read_data:
            readable = [p for n, p in sorted(self.repo.index.packs.items()) if n in stored]
            picked = None if subset is None else subset([p.name for p in readable])
            chosen = [p for p in readable if picked is None or p.name in picked]
            self._read_data(chosen)
            self.report.counts["packs_read"] = len(chosen)
            if self._damaged_packs and self.repo.is_full():
                names = sorted(self._damaged_packs)
                shown = " ".join(n[:8] for n in names[:10]) + (" ..." if len(names) > 10 else "")
                self.report.notes.append(
                    f"'tuckbox repair packs {shown}' stores the intact blobs of the damaged pack(s) again and "
                    "removes them, so that the next backup stores the damaged data again instead of building on it"
                )
        snaps: list[Snapshot] = []
        if self.repo.is_full():
            for name in snapshot_names:
                try:
                    snaps.append(self.repo.load_snapshot(name, from_storage=True))  # not the cache's copy
                except ObjectNotFound:
                    continue  # removed since it was listed (a checkpoint superseded by a complete backup)
                except IntegrityError as e:  # damaged: it can only be removed
                    self._error(f"{snapshot_problem(name, e)}; {forget_hint(name)}")
                except TuckboxError as e:
                    self._error(snapshot_problem(name, e))
            self.on_progress("checking trees")
            self._check_trees(snaps)
        else:
            self.report.notes.append("write-only key: snapshots and trees were not checked (they need a full key)")
        if unindexed and self._not_indexed:
            self.report.notes.append(
                f"{len(unindexed)} pack(s) are not in any index, and snapshots need {len(self._not_indexed)} blob(s) "
                "that no index names: run 'tuckbox repair index' to index those packs again from their own headers "
                "(a pack it reports unreadable is damaged: what only it held is lost, and 'tuckbox repair snapshots' "
                "leaves it out of the snapshots)"
            )
        elif unindexed:
            self.report.notes.append(
                f"{len(unindexed)} pack(s) are not in any index (written by a backup still running, or by an "
                "interrupted one: the next backup from that machine indexes them; or left by an interrupted "
                "prune: the next prune removes them; harmless)"
            )
        self._foreign()
        renew = getattr(backend, "renew_leases", None)
        if callable(renew):
            try:
                self.on_progress("renewing storage leases")
                result = renew()
                walked = getattr(result, "objects", None)
                self.report.notes.append(
                    "storage leases renewed" + (f" on {walked} objects" if walked is not None else "")
                )
                if getattr(result, "unhealthy", 0):
                    self.report.notes.append(f"{result.unhealthy} stored object(s) have fewer shares than wanted")
                if getattr(result, "unrecoverable", 0):
                    self._error(f"{result.unrecoverable} stored object(s) are unrecoverable in the storage grid")
            except TuckboxError as e:
                self._error(f"renewing storage leases failed: {e}")
        self.report.counts = {
            **self.report.counts,
            "indexes": len(index_names),
            "packs": len(stored),
            "blobs": len(self.repo.index),
            "snapshots": len(snaps),
        }
        return self.report

    def _foreign(self) -> None:
        """Name what the object directories hold that is not tuckbox's (another program's file, a sync tool's
        copy): every command skips it and none removes it, so only the user can tell whether it is needed."""
        foreign = getattr(self.repo.backend, "foreign", None)  # (storage that can tell: a local repository)
        if not callable(foreign):
            return
        try:
            names: list[str] = list(foreign())
        except (OSError, TuckboxError):
            return
        for name in names[:FOREIGN_SHOWN]:
            self.report.warnings.append(
                f"{_display(name)}: not a tuckbox object; left alone (remove it yourself if nothing needs it)"
            )
        if len(names) > FOREIGN_SHOWN:
            self.report.warnings.append(
                f"{len(names) - FOREIGN_SHOWN} more file(s) in the repository's object directories are not tuckbox objects"
            )
        if names:
            self.report.counts["foreign"] = len(names)

    def _mark_pack(self, pack: PackRecord, why: str) -> None:
        for entry in self.repo.index.pack_blobs(pack.name):
            self._bad_blobs.setdefault(entry.id, why)

    def _read_data(self, packs: list[PackRecord]) -> None:
        full = self.repo.is_full()
        total = len(packs)
        stop = threading.Event()  # set when the check is stopping: reads waiting for bandwidth give up

        unreadable: list[str] = []  # packs the storage did not deliver (down, cut off): not damage

        def check_pack(pack: PackRecord) -> list[str]:
            problems: list[str] = []
            try:
                with cancel_scope(stop):
                    data = self.repo.backend.load(ObjectType.PACK, pack.name)
            except ObjectNotFound:
                return [f"pack {pack.name}: missing"]
            except TuckboxError as e:
                unreadable.append(pack.name)
                if len(unreadable) > UNREADABLE_SHOWN:
                    return []  # (counted in one line at the end)
                return [f"pack {pack.name}: cannot be read: {e}"]
            if object_name(data) != pack.name:
                problems.append(f"pack {pack.name}: contents do not match its name (modified or damaged)")
                self._damaged_packs.add(pack.name)
                if not full:  # without a key every blob of the pack is suspect
                    self._mark_pack(pack, f"its pack {pack.name[:8]} is damaged")
            if not full:
                return problems
            private = self.repo.keys.data_private if pack.kind is BlobType.DATA else self.repo.keys.meta_private
            assert private is not None
            try:
                key = PackKey(private, pack.epk)
                header = {e.id: e for e in key.read_header(data)}
            except TuckboxError as e:
                problems.append(f"pack {pack.name}: header damaged: {e}")
                self._damaged_packs.add(pack.name)
                header = {}
            for entry in self.repo.index.pack_blobs(pack.name):
                if header and header.get(entry.id) != entry:
                    problems.append(f"pack {pack.name}: blob {entry.id.hex()[:8]} differs between pack header and index")
                try:
                    sealed = memoryview(data)[entry.offset : entry.offset + entry.length]
                    if len(sealed) != entry.length:
                        raise IntegrityError("pack is truncated")
                    self.repo.open_blob(pack, entry, sealed)
                except TuckboxError as e:
                    with_id = f"{entry.id.hex()[:8]}"
                    problems.append(f"pack {pack.name}: blob {with_id} damaged: {e}")
                    self._damaged_packs.add(pack.name)
                    self._bad_blobs.setdefault(entry.id, f"damaged in pack {pack.name[:8]}")
            return problems

        pool = ThreadPoolExecutor(max(1, min(self.repo.connections, os.cpu_count() or 2)))
        try:
            for done, problems in enumerate(pool.map(check_pack, packs), 1):
                for p in problems:
                    self._error(p)
                if done % 20 == 0:
                    self.on_progress(f"read {done}/{total} packs")
        except BaseException:  # Ctrl-C, SIGTERM: not after reading every pack still queued
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown()
        if unreadable:
            more = len(unreadable) - UNREADABLE_SHOWN
            if more > 0:
                self._error(f"{more} more pack(s) cannot be read from the storage")
            self.report.counts["packs_unreadable"] = len(unreadable)
            self.report.notes.append(
                f"{len(unreadable)} of {total} pack(s) could not be read from the storage (the storage or the "
                "connection failed, which is not damage found in the data): run the check again when the storage "
                "is reachable"
            )

    def _check_trees(self, snaps: list[Snapshot]) -> None:
        seen: set[bytes] = set()
        damaged: set[str] = set()

        def enter(tree_id: bytes, prefix: bytes, snap: Snapshot) -> tuple[list[Node], bool] | None:
            """The entries of a tree (and whether it is seen for the first time), or None if it is damaged."""
            if tree_id in self._bad_trees:
                damaged.add(f"{_display(prefix)} (snapshot {snap.short_id}): {self._bad_trees[tree_id]}")
                return None
            first_visit = tree_id not in seen
            seen.add(tree_id)
            try:
                if tree_id in self._bad_blobs:
                    raise IntegrityError(f"tree {tree_id.hex()[:8]} {self._bad_blobs[tree_id]}")
                if not self.repo.index.has(tree_id):
                    self._not_indexed.add(tree_id)
                    raise IntegrityError(f"tree {tree_id.hex()[:8]} is missing from the index")
                nodes = decode_tree(self.repo.load_blob(BlobType.TREE, tree_id))
            except TuckboxError as e:
                self._bad_trees[tree_id] = str(e)
                self._error(f"tree {tree_id.hex()[:16]} at {_display(prefix)} (snapshot {snap.short_id}): {e}")
                damaged.add(f"{_display(prefix)} (snapshot {snap.short_id}): directory listing damaged")
                return None
            return nodes, first_visit

        def visit(root: bytes, snap: Snapshot) -> None:
            """Depth first, with an explicit stack: trees may be ~2,000 directories deep (the longest path)."""
            top = enter(root, b"/", snap)
            if top is None:
                return
            stack = [(iter(top[0]), b"/", top[1])]
            while stack:
                nodes, prefix, first_visit = stack[-1]
                node = next(nodes, None)
                if node is None:
                    stack.pop()
                    continue
                path = os.path.join(prefix, node.name)
                if node.type == DIR:
                    if node.subtree and (first_visit or node.subtree in self._bad_trees or self._bad_blobs):
                        below = enter(node.subtree, path, snap)
                        if below is not None:
                            stack.append((iter(below[0]), path, below[1]))
                elif node.type == FILE:
                    for item in node.content:
                        if not isinstance(item, bytes):
                            continue
                        why = self._bad_blobs.get(item)
                        if why is None and not self.repo.index.has(item):
                            why = "a chunk is missing from the index"
                            self._not_indexed.add(item)
                            self._error(f"chunk {item.hex()[:16]} of {_display(path)} is missing from the index")
                            self._bad_blobs[item] = why
                        if why is not None:
                            damaged.add(f"{_display(path)} (snapshot {snap.short_id}): {why}")
                            break

        for snap in snaps:
            if not self.repo.index.has(snap.tree):
                self._not_indexed.add(snap.tree)
                self._error(f"snapshot {snap.id}: its root tree is missing from the index")
                continue
            visit(snap.tree, snap)
        self.report.damaged_files = sorted(damaged)
