"""Prune: delete the data no snapshot needs any more, in two steps — plan, then execute.

``plan_prune`` reads every snapshot's trees and the index and decides, per
pack: *keep* (everything, or nearly everything, in it is used), *repack* (at
least ``max_unused`` of its bytes are unused: its used blobs are copied into
new packs), or *remove* (nothing in it is used). Packs no index names (left by
a backup that was killed) are removed too. Planning deletes nothing, so
``--dry-run`` is the plan printed.

The plan is made only from a repository read without a single problem: a
snapshot, tree or index that cannot be read would make used data look unused,
so any such problem stops prune before it deletes anything ("run check").

``execute_prune`` runs under the exclusive lock (no backup, check or restore
runs meanwhile) and writes in the order that leaves a valid repository after
a crash at any instant (docs/design.md, "Prune"):

1. the used blobs of repacked packs into new packs, then the index naming them;
2. new index objects for every kept pack;
3. only then removes the old index objects, and last the packs.

A crash before 3 leaves blobs indexed twice (any copy serves); during 3, packs
no index names (the next prune removes them). The lock's ``ensure_held`` runs
before every index written and every removal: a prune whose lock lapsed (the
machine slept) stops, since a backup may have started meanwhile.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from ..errors import IntegrityError, ObjectNotFound, TuckboxError, UsageError
from ..pack.format import BlobEntry
from ..repository.index import MasterIndex, PackRecord
from ..repository.locks import read_locks
from ..repository.packer import Packer
from ..repository.repo import Repository, object_name
from ..snapshot.model import Snapshot
from ..snapshot.walk import decode_maps
from ..types import BlobType, ObjectType

DEFAULT_MAX_UNUSED = 0.10  # a pack with at least this share of unused bytes is repacked

Progress = Callable[[str], None]


class PruneRefused(TuckboxError):
    """The repository could not be read completely: nothing may be deleted."""

    def __init__(self, message: str) -> None:
        super().__init__(f"{message}; prune deleted nothing (run 'tuckbox check')")


@dataclass
class PrunePlan:
    snapshots: int
    used_blobs: int
    keep: list[tuple[PackRecord, list[BlobEntry]]] = field(default_factory=list)  # with all their entries
    repack: list[tuple[PackRecord, list[BlobEntry]]] = field(default_factory=list)  # with the used entries
    remove: list[PackRecord] = field(default_factory=list)  # indexed, nothing used
    unindexed: dict[str, int] = field(default_factory=dict)  # pack name -> size: no index names it
    resumable: dict[str, int] = field(default_factory=dict)  # unindexed, kept: a killed backup adopts them
    notes: list[str] = field(default_factory=list)
    indexes: list[str] = field(default_factory=list)  # every index object the plan replaces
    unused_bytes_kept: int = 0  # stored bytes of unused blobs in kept packs (below the threshold)

    @property
    def bytes_removed(self) -> int:
        """Stored bytes the plan deletes (repacked packs count whole; their used part is stored again)."""
        return (sum(p.size for p in self.remove) + sum(p.size for p, _ in self.repack)
                + sum(self.unindexed.values()))

    @property
    def bytes_repacked(self) -> int:
        return sum(e.length for _, entries in self.repack for e in entries)

    @property
    def nothing_to_do(self) -> bool:
        return not (self.remove or self.repack or self.unindexed)

    def as_dict(self) -> dict[str, int]:
        return {
            "snapshots": self.snapshots,
            "used_blobs": self.used_blobs,
            "packs_kept": len(self.keep),
            "packs_repacked": len(self.repack),
            "packs_removed": len(self.remove),
            "packs_unindexed_removed": len(self.unindexed),
            "packs_unindexed_kept": len(self.resumable),
            "bytes_removed": self.bytes_removed,
            "bytes_repacked": self.bytes_repacked,
            "unused_bytes_kept": self.unused_bytes_kept,
            "indexes_replaced": len(self.indexes),
        }


@dataclass
class PruneResult:
    packs_written: int = 0
    bytes_written: int = 0
    indexes_written: int = 0
    indexes_removed: int = 0
    packs_removed: int = 0
    bytes_freed: int = 0  # removed minus written
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "packs_written": self.packs_written,
            "bytes_written": self.bytes_written,
            "indexes_written": self.indexes_written,
            "indexes_removed": self.indexes_removed,
            "packs_removed": self.packs_removed,
            "bytes_freed": self.bytes_freed,
            "notes": self.notes,
        }


def used_blobs(repo: Repository, snaps: list[Snapshot], progress: Progress) -> set[bytes]:
    """Every blob a snapshot needs: its trees and the chunks of its files. Raises on anything unreadable."""
    used: set[bytes] = set()
    stack = [s.tree for s in snaps]
    trees = 0
    while stack:
        tree_id = stack.pop()
        if tree_id in used:
            continue
        used.add(tree_id)
        try:
            maps = decode_maps(repo.load_blob(BlobType.TREE, tree_id))
        except TuckboxError as e:
            raise PruneRefused(f"tree {tree_id.hex()[:8]} cannot be read: {e}") from None
        for m in maps:
            content = m.get("c")
            if content:
                used.update(c for c in content if type(c) is bytes)
            sub = m.get("st")
            if sub and sub not in used:
                stack.append(sub)
        trees += 1
        if trees % 5000 == 0:
            progress(f"read {trees} trees")
    return used


def plan_prune(
    repo: Repository,
    max_unused: float = DEFAULT_MAX_UNUSED,
    progress: Progress | None = None,
    without: frozenset[str] = frozenset(),
) -> PrunePlan:
    """Decide what to remove and what to repack (reads trees and the index; writes nothing).

    ``without``: snapshot ids to plan as if they were gone (``forget --dry-run --prune``)."""
    progress = progress or (lambda _m: None)
    if not 0.0 <= max_unused <= 1.0:
        raise UsageError("--max-unused must be a percentage between 0 and 100")
    repo.keys.require_full("prune (it must read every snapshot to know what is still used)")
    backend = repo.backend
    # snapshots are listed before the index is loaded (as check does): nothing writes meanwhile anyway
    snaps = [s for s in repo.snapshots() if s.id not in without]
    for name in without & set(repo.damaged_snapshots):  # a damaged one being forgotten: no longer in the way
        repo.forget_damaged(name)
    if not repo.index.index_names:
        repo.load_index()
    if repo.problems:
        raise PruneRefused(repo.problems[0])
    progress(f"reading the trees of {len(snaps)} snapshot(s)")
    used = used_blobs(repo, snaps, progress)
    missing = [b for b in used if not repo.index.has(b)]
    if missing:
        raise PruneRefused(f"{len(missing)} blob(s) that snapshots need are missing from the index (e.g. {missing[0].hex()[:8]})")
    if repo.problems:
        raise PruneRefused(repo.problems[0])
    progress("listing packs")
    stored = {i.name: i.size for i in backend.list(ObjectType.PACK)}
    plan = PrunePlan(snapshots=len(snaps), used_blobs=len(used), indexes=sorted(repo.index.index_names))
    for name, pack in sorted(repo.index.packs.items()):
        if name not in stored:
            raise PruneRefused(f"pack {name[:8]} named by the index is missing from the storage")
        entries = repo.index.pack_blobs(name)
        live = [e for e in entries if e.id in used]
        if not live:
            plan.remove.append(pack)
            continue
        unused = pack.size - sum(e.length for e in live)
        if len(live) < len(entries) and unused >= max_unused * pack.size:
            plan.repack.append((pack, live))
        else:
            plan.keep.append((pack, entries))
            plan.unused_bytes_kept += sum(e.length for e in entries if e.id not in used)
    plan.unindexed = {n: s for n, s in stored.items() if n not in repo.index.packs}
    killed = [lk for lk in read_locks(backend, repo.keys.index_key) if lk.command == "backup" and lk.is_stale()]
    if plan.unindexed and killed:
        # (which packs are whose is not known: all wait until no killed backup's lock is left)
        plan.resumable, plan.unindexed = plan.unindexed, {}
        plan.notes.append(
            f"kept {len(plan.resumable)} pack(s) no index names: a backup that stopped without finishing "
            f"({killed[0].describe()}) adopts them when it runs again instead of uploading them again; once it "
            "has run (or after 'tuckbox unlock', if it never will), prune removes what is left"
        )
    return plan


def execute_prune(repo: Repository, plan: PrunePlan, progress: Progress | None = None) -> PruneResult:
    """Carry out ``plan`` in crash-safe order; the caller holds the exclusive lock and set ``repo.guard``."""
    progress = progress or (lambda _m: None)
    result = PruneResult()
    if plan.nothing_to_do:
        return result
    guard = repo.guard or (lambda: None)
    backend = repo.backend
    # 1. the used blobs of repacked packs, into new packs (a fresh index: the old copies must not count)
    kept_repack: list[tuple[PackRecord, list[BlobEntry]]] = []
    if plan.repack:
        target = MasterIndex()
        for pack, entries in plan.keep:
            target.add_pack(PackRecord(pack.name, pack.epk, pack.kind, pack.size, tuple(entries)))
        written: list[str] = []

        def write_index(records: list[PackRecord]) -> None:
            written.append(repo.write_index(records))

        def recipient(kind: BlobType) -> bytes:
            return repo.keys.data_public if kind is BlobType.DATA else repo.keys.meta_public

        packer = Packer(backend, target, recipient, repo.config.pack_size, write_index, connections=repo.connections)
        try:
            for done, (pack, entries) in enumerate(plan.repack, 1):
                if not _copy_pack(repo, packer, pack, entries, result):
                    kept_repack.append((pack, repo.index.pack_blobs(pack.name)))
                if done % 10 == 0:
                    progress(f"repacked {done}/{len(plan.repack)} packs")
            packer.flush()
        finally:
            packer.close()
        result.packs_written = packer.stats.packs_new
        result.bytes_written = packer.stats.bytes_new_stored
        result.indexes_written += len(written)
    # 2. every kept pack into new index objects
    progress("writing the new index")
    result.indexes_written += repo.write_indexes(
        [PackRecord(pack.name, pack.epk, pack.kind, pack.size, tuple(entries)) for pack, entries in plan.keep + kept_repack]
    )
    # 3. the old index objects, then the packs nothing names any more
    failed_repack = {p.name for p, _ in kept_repack}
    doomed = [p.name for p in plan.remove] + [p.name for p, _ in plan.repack if p.name not in failed_repack]
    doomed += sorted(plan.unindexed)
    progress(f"removing {len(plan.indexes)} old index object(s)")
    result.indexes_removed = _remove_all(repo, ObjectType.INDEX, plan.indexes, guard)
    for name in plan.indexes:
        repo.cache.discard("index", name)
    progress(f"removing {len(doomed)} pack(s)")
    result.packs_removed = _remove_all(repo, ObjectType.PACK, doomed, guard)
    sizes = {p.name: p.size for p in plan.remove} | {p.name: p.size for p, _ in plan.repack} | plan.unindexed
    result.bytes_freed = sum(sizes[n] for n in doomed) - result.bytes_written
    for name in doomed:
        repo.cache.discard("trees", name)
    return result


def _copy_pack(repo: Repository, packer: Packer, pack: PackRecord, entries: list[BlobEntry], result: PruneResult) -> bool:
    """Store the used blobs of one pack again; False (and a note) if one cannot be read: then the pack stays."""
    try:
        data = repo.backend.load(ObjectType.PACK, pack.name)
    except TuckboxError as e:
        result.notes.append(f"pack {pack.name[:8]} kept: it cannot be read ({e})")
        return False
    if object_name(data) != pack.name:
        # a damaged byte may sit in an unused blob: the used ones are still verified one by one below
        result.notes.append(f"pack {pack.name[:8]} does not match its name (damaged); its intact blobs were copied")
    view = memoryview(data)
    plain: list[tuple[BlobEntry, bytes]] = []
    try:
        for e in entries:
            plain.append((e, repo.open_blob(pack, e, view[e.offset : e.offset + e.length])))
    except IntegrityError as err:
        result.notes.append(f"pack {pack.name[:8]} kept: a blob in use is damaged ({err}); run 'tuckbox check --read-data'")
        return False
    for e, blob in plain:
        packer.add(e.type, e.id, blob)
    return True


GUARD_EVERY = 2.0  # seconds between lock checks while removing (each costs a stat of the lock object)


def _remove_all(repo: Repository, kind: ObjectType, names: list[str], guard: Callable[[], None]) -> int:
    """Remove objects in parallel, checking the lock first and every GUARD_EVERY seconds; return how many."""
    checked = [-GUARD_EVERY]
    mutex = threading.Lock()

    def remove(name: str) -> int:
        with mutex:
            if time.monotonic() - checked[0] >= GUARD_EVERY:
                guard()
                checked[0] = time.monotonic()
        try:
            repo.backend.remove(kind, name)
        except ObjectNotFound:
            return 0
        return 1

    with ThreadPoolExecutor(max(1, repo.connections)) as pool:
        return sum(pool.map(remove, names))
