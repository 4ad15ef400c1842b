"""Turns new blobs into packs and uploads them, keeping both cores busy.

Pipeline: the caller (the archiver's thread) hands over a blob; a worker pool
compresses it (zstd releases the GIL) and seals it into the open pack of its
type (AES-GCM releases the GIL); a full pack is finished, hashed and uploaded by
a second pool (one thread per connection). Bounded queues keep memory flat.

Write order (docs/design.md, "Crash consistency"): a pack is uploaded
completely before any index names it; ``flush`` writes the index of every
uploaded pack and returns only when that index is stored, so a snapshot saved
after ``flush`` never references a blob that is not durably indexed.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import blake3

from ..pack.format import PackBuilder, compress
from ..types import Backend, BlobType, ObjectType
from .index import MasterIndex, PackRecord


BATCH_BYTES = 1 << 20  # hand blobs to a worker once this much is queued ...
BATCH_COUNT = 256  # ... or this many


@dataclass
class PackerStats:
    blobs_new: int = 0
    bytes_new_raw: int = 0  # plaintext bytes of new blobs
    bytes_new_stored: int = 0  # bytes of packs uploaded
    packs_new: int = 0


class Packer:
    def __init__(
        self,
        backend: Backend,
        index: MasterIndex,
        recipient: Callable[[BlobType], bytes],
        pack_size: int,
        write_index: Callable[[list[PackRecord]], None],
        *,
        workers: int | None = None,
        connections: int = 4,
        index_every: int = 8,
        on_pack_saved: Callable[[PackRecord], None] | None = None,
    ) -> None:
        self.backend = backend
        self.index = index
        self.recipient = recipient
        self.pack_size = pack_size
        self.write_index = write_index
        self.index_every = index_every
        self.on_pack_saved = on_pack_saved
        self.stats = PackerStats()
        nworkers = workers or max(2, os.cpu_count() or 2)
        self._workers = ThreadPoolExecutor(nworkers, thread_name_prefix="tuckbox-pack")
        self._uploads = ThreadPoolExecutor(connections, thread_name_prefix="tuckbox-upload")
        self._blob_slots = threading.BoundedSemaphore(nworkers + 1)
        self._upload_slots = threading.BoundedSemaphore(connections)
        self._lock = threading.Lock()
        self._open: dict[BlobType, PackBuilder] = {}
        self._pending: set[bytes] = set()
        self._inflight: set[Future[None]] = set()
        self._unindexed: list[PackRecord] = []
        self._error: BaseException | None = None
        self._batch: list[tuple[BlobType, bytes, bytes]] = []
        self._batch_bytes = 0

    # -- public --

    def known(self, blob_id: bytes) -> bool:
        return self.index.has(blob_id) or blob_id in self._pending

    def add(self, blob_type: BlobType, blob_id: bytes, data: bytes | memoryview) -> bool:
        """Queue a blob for storage; False if the repository (or this run) already has it.

        Small blobs are handed to the workers in batches: one hand-off per blob
        would cost more than compressing it.
        """
        if self._error is not None:
            raise self._error
        if blob_id in self._pending or self.index.has(blob_id):
            return False
        self._pending.add(blob_id)  # only this (the archiver's) thread adds
        self._batch.append((blob_type, blob_id, bytes(data)))
        self._batch_bytes += len(data)
        if self._batch_bytes >= BATCH_BYTES or len(self._batch) >= BATCH_COUNT:
            self._submit_batch()
        return True

    def _submit_batch(self) -> None:
        if not self._batch:
            return
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        self._blob_slots.acquire()
        try:
            fut = self._workers.submit(self._store, batch)
        except BaseException:
            self._blob_slots.release()
            raise
        self._track(fut)

    def flush(self) -> None:
        """Finish open packs, wait for every upload, and write the index for them."""
        self._submit_batch()
        self._wait_all()
        with self._lock:
            builders = [b for b in self._open.values() if len(b)]
            self._open.clear()
        for builder in builders:
            self._upload(builder)
        self._wait_all()
        self._write_pending_index(force=True)

    def close(self) -> None:
        self._workers.shutdown(wait=True, cancel_futures=True)
        self._uploads.shutdown(wait=True, cancel_futures=True)

    # -- internals --

    def _track(self, fut: Future[None]) -> None:
        with self._lock:
            self._inflight.add(fut)
        fut.add_done_callback(self._done)

    def _done(self, fut: Future[None]) -> None:
        with self._lock:
            self._inflight.discard(fut)
        if not fut.cancelled() and fut.exception() is not None and self._error is None:
            self._error = fut.exception()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _wait_all(self) -> None:
        while True:
            with self._lock:
                pending = list(self._inflight)
            if not pending:
                break
            for fut in pending:
                try:
                    fut.result()
                except BaseException:
                    pass
        self._raise_error()

    def _store(self, batch: list[tuple[BlobType, bytes, bytes]]) -> None:
        try:
            compressed = [(t, i, len(d), *compress(d)) for t, i, d in batch]
            full: list[PackBuilder] = []
            with self._lock:
                for blob_type, blob_id, raw_len, payload, compression in compressed:
                    builder = self._open.get(blob_type)
                    if builder is None:
                        builder = self._open[blob_type] = PackBuilder(blob_type, self.recipient(blob_type))
                    sealed = builder.seal(blob_id, blob_type, payload, compression)
                    builder.append(blob_id, blob_type, sealed, raw_len, compression)
                    if builder.size >= self.pack_size:
                        full.append(self._open.pop(blob_type))
        finally:
            self._blob_slots.release()
        for builder in full:
            self._upload(builder)

    def _upload(self, builder: PackBuilder) -> None:
        self._upload_slots.acquire()
        try:
            fut = self._uploads.submit(self._save_pack, builder)
        except BaseException:
            self._upload_slots.release()
            raise
        self._track(fut)

    def _save_pack(self, builder: PackBuilder) -> None:
        try:
            data = builder.finish()
            name = blake3.blake3(data, max_threads=1).hexdigest()
            self.backend.save(ObjectType.PACK, name, data)
            record = PackRecord(name, builder.epk, builder.kind, len(data), tuple(builder.entries))
            self.index.add_pack(record)
            with self._lock:
                self._pending.difference_update(e.id for e in builder.entries)
                self._unindexed.append(record)
                self.stats.packs_new += 1
                self.stats.blobs_new += len(builder.entries)
                self.stats.bytes_new_raw += builder.raw_bytes
                self.stats.bytes_new_stored += len(data)
            if self.on_pack_saved is not None:
                self.on_pack_saved(record)
        finally:
            self._upload_slots.release()
        self._write_pending_index(force=False)

    def _write_pending_index(self, force: bool) -> None:
        with self._lock:
            if not self._unindexed or (not force and len(self._unindexed) < self.index_every):
                return
            batch, self._unindexed = self._unindexed, []
        try:
            self.write_index(batch)
        except BaseException:
            with self._lock:
                self._unindexed[:0] = batch
            raise
