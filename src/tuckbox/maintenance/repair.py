"""Rebuilding the index from the packs themselves (``tuckbox repair index``).

The index objects are the only map from a blob to its pack: when one is
damaged (a flipped byte fails its hash or AEAD tag) or lost, the packs it
listed are still whole, but no restore can find their blobs. Each pack carries
its own encrypted header listing its blobs, so a full key can index it again:

1. read every index object; the damaged ones are replaced;
2. an index object naming a pack that is not stored (with its indexed size) is
   replaced by one without that pack: the index then stops promising blobs
   that are gone, so the next backup stores those chunks again rather than
   deduplicating against nothing (the snapshots that needed them stay
   damaged: ``check`` names the files);
3. every stored pack that no remaining index object names is indexed from its
   header (three ranged reads: prefix, trailer, header; the header is
   authenticated). A pack whose header cannot be read is left alone and
   reported.

New index objects are written before any old one is removed, so a crash at
any point leaves a repository at least as readable as before (blobs listed
twice are fine: any copy serves). It runs under the exclusive lock.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import IntegrityError, ObjectNotFound, TuckboxError, UnsupportedFormat
from ..pack.format import PREFIX_LEN, TRAILER_LEN, PackKey, parse_prefix
from ..repository.index import PackRecord, RawPack, decode_index_raw
from ..repository.repo import Repository, object_name
from ..snapshot.model import Snapshot
from .rewrite import Counts, Memo, Verdict, rewrite_tree, save_rewritten
from ..pack.format import BlobEntry
from ..types import BlobType, ObjectType

Progress = Callable[[str], None]


@dataclass
class RepairReport:
    indexes_damaged: list[str] = field(default_factory=list)  # index objects that could not be read
    indexes_replaced: list[str] = field(default_factory=list)  # ... and those naming missing packs
    packs_missing: list[str] = field(default_factory=list)  # named by an index, not stored (or truncated)
    packs_reindexed: list[str] = field(default_factory=list)  # indexed again from their headers
    packs_unreadable: list[str] = field(default_factory=list)  # stored, unindexed, header unreadable
    blobs_lost: int = 0  # blobs only the missing packs held
    indexes_written: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def nothing_to_do(self) -> bool:
        return not (self.indexes_damaged or self.indexes_replaced or self.packs_reindexed)

    def as_dict(self) -> dict[str, object]:
        return {
            "indexes_damaged": self.indexes_damaged,
            "indexes_replaced": self.indexes_replaced,
            "packs_missing": self.packs_missing,
            "packs_reindexed": len(self.packs_reindexed),
            "packs_unreadable": self.packs_unreadable,
            "blobs_lost": self.blobs_lost,
            "indexes_written": self.indexes_written,
            "problems": self.problems,
        }


def read_pack_record(repo: Repository, name: str, size: int) -> PackRecord:
    """A stored pack's record, from its own (authenticated) header; raises IntegrityError if unreadable."""
    backend = repo.backend
    if size < PREFIX_LEN + TRAILER_LEN:
        raise IntegrityError("pack is truncated")
    prefix = backend.load(ObjectType.PACK, name, 0, PREFIX_LEN)
    epk = parse_prefix(prefix)
    trailer = backend.load(ObjectType.PACK, name, size - TRAILER_LEN, TRAILER_LEN)
    problem: TuckboxError | None = None
    for kind, private in ((BlobType.DATA, repo.keys.data_private), (BlobType.TREE, repo.keys.meta_private)):
        assert private is not None
        key = PackKey(private, epk)
        try:
            offset, length = key.read_trailer(trailer, size)
        except IntegrityError as e:
            problem = e
            continue  # not this recipient's key: try the other
        header = backend.load(ObjectType.PACK, name, offset, length)
        entries = key.parse_header(header, prefix, offset)
        if any(e.type is not kind for e in entries):
            raise IntegrityError("pack mixes blob types or was sealed to the other key")
        return PackRecord(name, epk, kind, size, tuple(entries))
    raise problem or IntegrityError("pack trailer is unreadable")


def repair_index(repo: Repository, progress: Progress | None = None, dry_run: bool = False,
                 drop: frozenset[str] = frozenset()) -> RepairReport:
    """Rebuild what the index is missing (see the module docstring); the caller holds the exclusive lock.

    ``drop``: packs to treat as not stored (damaged ones ``repair packs`` is about to remove)."""
    progress = progress or (lambda _m: None)
    repo.keys.require_full("repair the index (it must read pack headers)")
    backend = repo.backend
    report = RepairReport()
    progress("listing packs and index objects")
    stored = {i.name: i.size for i in backend.list(ObjectType.PACK) if i.name not in drop}
    index_names = sorted(i.name for i in backend.list(ObjectType.INDEX))

    def load(name: str) -> tuple[str, list[RawPack] | None]:
        try:
            raw = backend.load(ObjectType.INDEX, name)
            if object_name(raw) != name:
                raise IntegrityError("it does not match its name")
            return name, decode_index_raw(raw, repo.keys.index_key, name)
        except ObjectNotFound:
            return name, []
        except (IntegrityError, UnsupportedFormat) as e:
            report.problems.append(f"index {name[:8]}: {e}")
            return name, None

    good: dict[str, list[RawPack]] = {}
    with ThreadPoolExecutor(max(1, repo.connections)) as pool:
        for name, packs in pool.map(load, index_names):
            if packs is None:
                report.indexes_damaged.append(name)
            else:
                good[name] = packs
    # which index objects stay as they are, and the packs they vouch for
    kept_packs: set[str] = set()
    carried: dict[str, RawPack] = {}  # packs of replaced index objects that are still fine
    lost_ids: set[bytes] = set()
    for name, packs in good.items():
        bad = [p for p in packs if stored.get(p.record.name) != p.record.size]
        if not bad:
            kept_packs.update(p.record.name for p in packs)
            continue
        report.indexes_replaced.append(name)
        for p in packs:
            if stored.get(p.record.name) == p.record.size:
                carried.setdefault(p.record.name, p)
            else:
                report.packs_missing.append(p.record.name)
                lost_ids.update(b[0] for b in p.blobs if isinstance(b, list) and b and isinstance(b[0], bytes))
    report.packs_missing = sorted(set(report.packs_missing) - kept_packs)
    carried = {n: p for n, p in carried.items() if n not in kept_packs}
    # every stored pack nothing vouches for: read its header
    todo = sorted(n for n in stored if n not in kept_packs and n not in carried)
    progress(f"reading the headers of {len(todo)} pack(s)")
    records: list[PackRecord] = []

    def header(name: str) -> PackRecord | str:
        try:
            return read_pack_record(repo, name, stored[name])
        except (TuckboxError, ValueError) as e:
            return f"pack {name[:8]}: header unreadable ({e}); left as it is"

    with ThreadPoolExecutor(max(1, repo.connections)) as pool:
        for name, got in zip(todo, pool.map(header, todo)):
            if isinstance(got, str):
                report.packs_unreadable.append(name)
                report.problems.append(got)
            else:
                records.append(got)
    report.packs_reindexed = [r.name for r in records]
    # blobs no longer stored anywhere
    have: set[bytes] = set()
    for packs in (p for n, p in good.items() if n not in report.indexes_replaced):
        for p in packs:
            have.update(b[0] for b in p.blobs if isinstance(b, list) and b and isinstance(b[0], bytes))
    for p in carried.values():
        have.update(b[0] for b in p.blobs if isinstance(b, list) and b and isinstance(b[0], bytes))
    for r in records:
        have.update(e.id for e in r.blobs)
    report.blobs_lost = len(lost_ids - have)
    if dry_run or report.nothing_to_do:
        return report
    # write the new index objects, then remove the ones they replace
    out: list[PackRecord] = []
    for p in carried.values():
        out.append(PackRecord(p.record.name, p.record.epk, p.record.kind, p.record.size,
                              tuple(BlobEntry.from_list(b) for b in p.blobs)))  # type: ignore[arg-type]
    out += records
    report.indexes_written = repo.write_indexes(out)
    progress("removing the replaced index objects")
    for name in report.indexes_damaged + report.indexes_replaced:
        if repo.guard is not None:
            repo.guard()
        try:
            backend.remove(ObjectType.INDEX, name)
        except ObjectNotFound:
            pass
        repo.cache.discard("index", name)
    return report


# ---------------------------------------------------------------------------------------------- snapshots


@dataclass
class RepairedSnapshot:
    old: str
    new: str  # "" in a dry run, or when the snapshot cannot be repaired (its root directory is lost)
    removed: list[bytes]  # absolute paths of entries left out (a lost directory is kept, empty: "path/")
    lost: bool = False  # its root listing is lost: nothing to keep (forget it)

    def as_dict(self) -> dict[str, object]:
        from ..text import json_paths_fields

        return {"old": self.old, "new": self.new, "lost": self.lost, **json_paths_fields("removed", self.removed)}


REPAIRED_TAG = "repaired"


def repair_snapshots(
    repo: Repository, snaps: list[Snapshot], progress: Progress | None = None, dry_run: bool = False,
    every: list[Snapshot] | None = None,
) -> list[RepairedSnapshot]:
    """Rewrite each snapshot that needs data the repository no longer has, without the damaged entries.

    A file with a chunk that is not indexed, or whose pack is not stored, is left out; a directory whose
    listing is lost is kept, empty. The new snapshot (tagged ``repaired``, with the left-out count in its
    summary) is saved before the old one is removed. A snapshot whose root listing is lost is reported and
    left alone (forget it). The caller holds a lock and set ``repo.guard``. ``every``: all the snapshots
    listed (default ``snaps``), where a repaired snapshot an interrupted run saved is found again.
    """
    progress = progress or (lambda _m: None)
    repo.keys.require_full("repair snapshots (it must read them)")
    stored = {i.name for i in repo.backend.list(ObjectType.PACK)}

    def available(blob_id: bytes) -> bool:
        loc = repo.index.lookup(blob_id)
        return loc is not None and loc.pack.name in stored

    def judge(_path: bytes, m: dict[str, Any]) -> Verdict:
        content = m.get("c")
        if content and not all(available(c) for c in content if type(c) is bytes):
            return "drop"
        return "keep"

    packer = None if dry_run else repo.new_packer()
    memo: Memo = {}
    out: list[tuple[Snapshot, bytes | None, Counts, RepairedSnapshot]] = []
    try:
        for snap in snaps:
            progress(f"checking snapshot {snap.short_id}")
            new_root, removed, counts = rewrite_tree(repo, snap.tree, judge, memo, packer, available)
            if new_root != snap.tree:
                out.append((snap, new_root, counts, RepairedSnapshot(snap.id, "", [b"/"] if new_root is None else removed,
                                                             lost=new_root is None)))
        if packer is not None:
            packer.flush()  # the new trees, and the index naming them, before any snapshot needs them
        if not dry_run:
            for snap, new_root, counts, item in out:
                if new_root is not None:  # (a lost root listing: nothing to keep; reported, forget it)
                    item.new = save_rewritten(repo, snap, new_root, REPAIRED_TAG, len(item.removed), counts,
                                              snaps if every is None else every)
    finally:
        if packer is not None:
            packer.close()
    return [item for _, _, _, item in out]
