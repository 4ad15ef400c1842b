"""Repository statistics from the index and snapshot summaries (no pack is read)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..repository.repo import Repository
from ..types import BlobType


@dataclass
class Stats:
    snapshots: int
    packs: int
    stored_bytes: int  # sum of pack sizes: what the storage holds
    blobs: int
    data_blobs: int
    tree_blobs: int
    unique_bytes: int  # plaintext of every unique blob
    unique_data_bytes: int  # of those, the file-content blobs (not the trees)
    original_bytes: int  # sum of file sizes over every snapshot
    latest_original_bytes: int
    compression_ratio: float  # unique plaintext / stored
    dedup_ratio: float  # original (all snapshots) / unique file content (trees are not file data)
    space_saving_ratio: float  # original (all snapshots) / stored

    def as_dict(self) -> dict:
        return asdict(self)


def compute_stats(repo: Repository) -> Stats:
    packs = repo.index.packs.values()
    stored = sum(p.size for p in packs)
    unique = unique_data = 0
    data = trees = 0
    seen: set[bytes] = set()
    for _, entry in repo.index.entries():
        if entry.id in seen:
            continue
        seen.add(entry.id)
        unique += entry.raw_length
        if entry.type is BlobType.DATA:
            data += 1
            unique_data += entry.raw_length
        else:
            trees += 1
    original = latest = 0
    snaps = repo.snapshots() if repo.is_full() else []
    for s in snaps:
        original += int(s.summary.get("bytes_total", 0))
    complete = [s for s in snaps if not s.partial]
    if complete:
        latest = int(complete[-1].summary.get("bytes_total", 0))
    return Stats(
        snapshots=len(snaps),
        packs=len(repo.index.packs),
        stored_bytes=stored,
        blobs=len(seen),
        data_blobs=data,
        tree_blobs=trees,
        unique_bytes=unique,
        unique_data_bytes=unique_data,
        original_bytes=original,
        latest_original_bytes=latest,
        compression_ratio=round(unique / stored, 3) if stored else 0.0,
        dedup_ratio=round(original / unique_data, 3) if unique_data else 0.0,
        space_saving_ratio=round(original / stored, 3) if stored else 0.0,
    )
