"""One backup run: lock, walk, flush packs and index, then save the snapshot."""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass, field
from typing import Callable

from .. import __version__
from ..chunker import Chunker
from ..repository.keyring import record_own_snapshot
from ..repository.locks import Lock
from ..repository.repo import Repository
from ..snapshot.model import Snapshot, now_iso
from ..types import BlobType
from .archiver import Archiver, Progress, normalize_paths
from .files_cache import FilesCache


class _Store:
    """The BlobStore the archiver sees: dedup against the index and this run's pending blobs."""

    def __init__(self, repo: Repository, packer) -> None:  # type: ignore[no-untyped-def]
        self._repo = repo
        self._packer = packer

    def blob_id(self, data: bytes | memoryview) -> bytes:
        return self._repo.blob_id(data)

    def has_blob(self, blob_id: bytes) -> bool:
        return self._packer.known(blob_id)

    def add_blob(self, blob_type: BlobType, blob_id: bytes, data: bytes | memoryview) -> bool:
        return self._packer.add(blob_type, blob_id, data)


@dataclass
class BackupRequest:
    paths: list[str | bytes]
    tags: list[str] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)
    host: str = ""
    one_file_system: bool = False


@dataclass
class BackupResult:
    snapshot: Snapshot
    warnings: list[str]


def _find_parent(repo: Repository, host: str, paths: list[bytes]) -> str:
    if not repo.is_full():
        return ""
    candidates = [s for s in repo.snapshots() if s.host == host and sorted(s.paths) == sorted(paths) and not s.partial]
    return candidates[-1].id if candidates else ""


def run_backup(
    repo: Repository,
    request: BackupRequest,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> BackupResult:
    paths = normalize_paths(request.paths)
    host = request.host or socket.gethostname()
    lock = Lock(repo.backend, repo.keys.index_key, exclusive=False).acquire()
    packer = repo.new_packer()
    try:
        parent = _find_parent(repo, host, paths)
        chunker = Chunker(repo.config.chunker, repo.keys.chunker_seed)
        files_cache = FilesCache(repo.cache.state_dir / "files-cache" if repo.cache.enabled else None)
        archiver = Archiver(
            _Store(repo, packer),
            chunker,
            files_cache,
            excludes=request.excludes,
            progress=progress,
            one_file_system=request.one_file_system,
            should_stop=should_stop,
        )
        tree = archiver.run(paths)
        packer.flush()  # every pack, then the index naming them, is stored
        summary = archiver.summary.as_dict()
        summary.update(
            {
                "blobs_new": packer.stats.blobs_new,
                "bytes_new_raw": packer.stats.bytes_new_raw,
                "bytes_added": packer.stats.bytes_new_stored,
                "packs_new": packer.stats.packs_new,
            }
        )
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid())
        snap = Snapshot(
            time=now_iso(),
            host=host,
            user=user,
            paths=paths,
            tree=tree,
            tags=sorted(set(request.tags)),
            parent=parent,
            summary=summary,
            program=f"tuckbox {__version__}",
        )
        repo.save_snapshot(snap)  # only after the index is durable
        if not repo.is_full():  # a write-only key cannot read it back: remember it locally
            record_own_snapshot(repo, snap)
        files_cache.save(paths)
        return BackupResult(snap, archiver.summary.warnings)
    finally:
        packer.close()
        lock.release()
