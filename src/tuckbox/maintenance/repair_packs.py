"""Replacing damaged packs (``tuckbox repair packs PACK...``).

``check --read-data`` finds a pack whose bytes no longer match its name (a
flipped bit on the disk, a bad sector, a storage provider's fault). Its
index entries still promise its blobs, so restores fail on them, and every
later backup deduplicates against them: a file that is still on the disk is
never stored again, and the damage never heals. ``repair index`` cannot help
(the pack is stored, with its indexed size). This does, under the exclusive
lock, in an order a crash at any instant leaves valid:

1. every blob of the pack that still decrypts and matches its id (from the
   local cache's verified copy of a tree pack when it has one) is stored again
   in new packs, and the index naming them is written;
2. the index objects naming the pack are replaced by ones without it
   (``repair_index`` with the pack dropped: new objects before old ones go);
3. the pack is removed.

Its damaged blobs are then indexed nowhere: the next backup stores those
chunks and trees again where the files still exist (content addressing makes
the old snapshots whole again too), and ``repair snapshots`` rewrites the
snapshots that still need what is gone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..errors import IntegrityError, ObjectNotFound, TuckboxError, UsageError
from ..pack.format import BlobEntry
from ..repository.index import MasterIndex, PackRecord
from ..repository.packer import Packer
from ..repository.repo import Repository
from ..types import BlobType, ObjectType
from .repair import read_pack_record, repair_index

Progress = Callable[[str], None]


@dataclass
class PackRepairReport:
    packs: list[str] = field(default_factory=list)  # the packs repaired (full names)
    blobs_salvaged: int = 0  # intact blobs stored again in new packs
    blobs_damaged: int = 0  # blobs of those packs that could not be read
    blobs_lost: int = 0  # ... and that no other pack holds: the next backup stores them again, if it can
    packs_written: int = 0
    packs_removed: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "packs": self.packs,
            "blobs_salvaged": self.blobs_salvaged,
            "blobs_damaged": self.blobs_damaged,
            "blobs_lost": self.blobs_lost,
            "packs_written": self.packs_written,
            "packs_removed": self.packs_removed,
            "notes": self.notes,
        }


def resolve_packs(repo: Repository, refs: list[str], stored: dict[str, int]) -> list[str]:
    """Full pack names for ``refs`` (names or unique prefixes of at least 4 hex digits), among the stored and
    the indexed packs; UsageError on anything else."""
    if not refs:
        raise UsageError("'repair packs' needs the packs to repair: the names 'tuckbox check --read-data' reports")
    known = sorted(set(stored) | set(repo.index.packs))
    out: list[str] = []
    for ref in refs:
        r = ref.strip().lower()
        if len(r) < 4 or any(c not in "0123456789abcdef" for c in r):
            raise UsageError(f"'{ref}' is not a pack name (write at least 4 hex digits of it)")
        found = [n for n in known if n.startswith(r)]
        if not found:
            raise UsageError(f"no pack {ref} in the repository (neither stored nor indexed)")
        if len(found) > 1:
            raise UsageError(f"'{ref}' names {len(found)} packs; give more of its digits")
        if found[0] not in out:
            out.append(found[0])
    return out


def _pack_bytes(repo: Repository, name: str, kind: BlobType | None) -> bytes | None:
    """The pack's bytes: the cache's copy of a tree pack (verified against its name) if there is one, else
    the stored bytes (perhaps damaged); None if it is not stored or cannot be read."""
    if kind is BlobType.TREE:
        cached = repo.cache.get("trees", name)
        if cached is not None:
            return cached
    try:
        return repo.backend.load(ObjectType.PACK, name)
    except ObjectNotFound:
        return None


def _entries(repo: Repository, name: str, size: int | None) -> tuple[PackRecord | None, list[BlobEntry]]:
    """The pack's record and blobs: from the index, else (a pack no index names) from its own header."""
    pack = repo.index.packs.get(name)
    if pack is not None:
        return pack, repo.index.pack_blobs(name)
    if size is None:
        return None, []
    try:
        record = read_pack_record(repo, name, size)
    except (TuckboxError, ValueError):
        return None, []
    return record, list(record.blobs)


def repair_packs(repo: Repository, refs: list[str], progress: Progress | None = None,
                 dry_run: bool = False) -> PackRepairReport:
    """Replace the named packs by their intact blobs (see the module docstring). The caller holds the
    exclusive lock, set ``repo.guard`` and loaded the index."""
    progress = progress or (lambda _m: None)
    repo.keys.require_full("repair packs (it must decrypt them)")
    stored = {i.name: i.size for i in repo.backend.list(ObjectType.PACK)}
    names = resolve_packs(repo, refs, stored)
    report = PackRepairReport(packs=names)
    doomed = set(names)
    # the blobs every other pack holds: salvaged blobs are stored only where no other copy exists
    target = MasterIndex()
    for name in repo.index.packs:
        if name not in doomed:
            pack = repo.index.packs[name]
            target.add_pack(PackRecord(pack.name, pack.epk, pack.kind, pack.size, tuple(repo.index.pack_blobs(name))))
    packer = None if dry_run else Packer(repo.backend, target, repo.recipient, repo.config.pack_size,
                                         repo.write_index, connections=repo.connections)
    try:
        for name in names:
            progress(f"reading pack {name[:8]}")
            pack, entries = _entries(repo, name, stored.get(name))
            data = None if pack is None else _pack_bytes(repo, name, pack.kind)
            if data is None:
                report.notes.append(f"pack {name[:8]}: cannot be read; none of its blobs can be kept")
            view = memoryview(data or b"")
            for e in entries:
                try:
                    if data is None or e.offset + e.length > len(data):
                        raise IntegrityError("pack is truncated")
                    assert pack is not None
                    plain = repo.open_blob(pack, e, view[e.offset : e.offset + e.length])
                except TuckboxError:
                    report.blobs_damaged += 1
                    if not target.has(e.id):
                        report.blobs_lost += 1
                    continue
                report.blobs_salvaged += 1
                if packer is not None:
                    packer.add(e.type, e.id, plain)
        if packer is not None:
            packer.flush()  # the intact blobs, and the index naming them, before any index forgets the pack
            report.packs_written = packer.stats.packs_new
    finally:
        if packer is not None:
            packer.close()
    if dry_run:
        return report
    # the index objects naming the packs, replaced by ones without them (new before old)
    rebuilt = repair_index(repo, progress, drop=frozenset(doomed))
    report.notes += rebuilt.problems
    report.blobs_lost = rebuilt.blobs_lost
    progress(f"removing {len(names)} pack(s)")
    for name in names:
        if repo.guard is not None:
            repo.guard()
        try:
            repo.backend.remove(ObjectType.PACK, name)
            report.packs_removed += 1
        except ObjectNotFound:
            pass
        repo.cache.discard("trees", name)
    return report
