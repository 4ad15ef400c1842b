"""Turns new blobs into packs and uploads them, keeping both cores busy.

Pipeline: the callers (the archiver's walking thread, and its reader threads
for the chunks of large files; ``add`` is thread-safe) hand over a blob; a worker pool
compresses it (zstd releases the GIL) and seals it into the open pack of its
type (AES-GCM releases the GIL); a full pack is finished, hashed and uploaded on
an upload thread (at most one per connection). Bounded queues keep memory flat.

Write order (docs/design.md, "Crash consistency"): a pack is uploaded
completely before any index names it; ``flush`` writes the index of every
uploaded pack and returns only when that index is stored, so a snapshot saved
after ``flush`` never references a blob that is not durably indexed.

Stopping (Ctrl-C): ``stop`` (any thread, returns at once) makes the packer
drop every new data blob and cancel the data-pack uploads under way while they
wait for bandwidth, a connection or a retry (``backends.wrappers.cancel_scope``).
``abandon`` (the walking thread, once it has stopped adding data; a reader's
add still under way finishes first, later ones drop their data) then drops
the open data pack, gives uploads already transferring a short grace, and
forgets the data blobs of every pack not stored: they are no longer pending,
so ``known`` is False for them and they are not in the index. Packs that were
stored stay indexed (and journaled); tree blobs are still accepted and
``flush`` stores them. A pack still transferring after the grace is left to
its (daemon) thread: whole or absent, never indexed by this run.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Callable, Iterable

import blake3

from ..backends.wrappers import cancel_scope
from ..errors import Cancelled
from ..pack.format import PackBuilder, buffer_pool, compress_many
from ..types import Backend, BlobType, ObjectType
from .index import MasterIndex, PackRecord


BATCH_BYTES = 1 << 20  # hand blobs to a worker once this much is queued ...
BATCH_COUNT = 256  # ... or this many
_SLACK = 20 << 20  # pack buffer beyond the pack size: the last blob (up to a 16 MiB chunk), header, padding
STOP_GRACE = 1.0  # seconds a stopping run waits for data-pack transfers already under way


@dataclass
class PackerStats:
    blobs_new: int = 0
    bytes_new_raw: int = 0  # plaintext bytes of new blobs
    bytes_new_stored: int = 0  # bytes of packs uploaded
    packs_new: int = 0


@dataclass(eq=False)
class _Upload:
    builder: PackBuilder
    future: Future[None] = field(default_factory=Future)
    slot_held: bool = True  # holds one of the upload slots
    abandoned: bool = False  # given up by ``abandon``: its result is ignored


class Ledger:
    """What a packer keeps track of, wherever its packing happens (here, or in a pack process:
    packproc.py): the blobs pending (accepted, not yet in a stored pack), the stored packs no index
    object names yet, the counts, the stop and the first error."""

    def __init__(self, index: MasterIndex, write_index: Callable[[list[PackRecord]], None], index_every: int) -> None:
        self.index = index
        self.write_index = write_index
        self.index_every = index_every
        self.stats = PackerStats()
        self._lock = threading.Lock()
        self._add_lock = threading.Lock()  # blobs come from the walk and from reader threads
        self._pending: dict[bytes, BlobType] = {}  # queued or in an unstored pack
        self._data_added = 0  # data blobs ever made pending (written under _add_lock) ...
        self._data_settled = 0  # ... and those since stored or given up (written under the lock)
        self._unindexed: list[PackRecord] = []
        self._stop = threading.Event()  # set: drop data blobs, cancel data-pack uploads
        self._error: BaseException | None = None

    def known(self, blob_id: bytes) -> bool:
        return self.index.has(blob_id) or blob_id in self._pending

    def known_all(self, blob_ids: list[bytes]) -> bool:
        """``known`` for every one (the unchanged-file check: one call per file, not per chunk)."""
        return self.index.has_all(blob_ids, self._pending)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def data_pending(self) -> bool:
        """Whether a data blob was accepted but is not in a stored pack yet."""
        return self._data_added != self._data_settled

    def _pend(self, blob_type: BlobType, blob_id: bytes) -> None:
        """The blob was accepted (the caller holds ``_add_lock``)."""
        self._pending[blob_id] = blob_type
        if blob_type is BlobType.DATA:
            self._data_added += 1

    def _stored(self, record: PackRecord, blob_ids: Iterable[bytes], raw_bytes: int) -> None:
        """A pack holding ``blob_ids`` was stored and added to the index (the caller holds ``_lock``)."""
        pop, settled = self._pending.pop, 0
        for blob_id in blob_ids:
            if pop(blob_id, None) is BlobType.DATA:
                settled += 1
        self._data_settled += settled
        self._unindexed.append(record)
        stats = self.stats
        stats.packs_new += 1
        stats.blobs_new += len(record.blobs)
        stats.bytes_new_raw += raw_bytes
        stats.bytes_new_stored += record.size

    def _forget_unstored(self) -> int:
        """After a stop: the data blobs no stored pack holds are no longer pending; how many there were."""
        with self._lock:
            dropped = [b for b, t in self._pending.items() if t is BlobType.DATA and not self.index.has(b)]
            for blob_id in dropped:
                del self._pending[blob_id]
            self._data_settled += len(dropped)
        return len(dropped)

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

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


class Packer(Ledger):
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
        compress_each: bool = False,
    ) -> None:
        super().__init__(index, write_index, index_every)
        self.backend = backend
        self.recipient = recipient
        self.pack_size = pack_size
        self.on_pack_saved = on_pack_saved
        self._compress_each = compress_each  # (no walk shares this process's GIL: see compress_many)
        nworkers = workers or max(2, os.cpu_count() or 2)
        self._workers = ThreadPoolExecutor(nworkers, thread_name_prefix="tuckbox-pack")
        self._blob_slots = threading.BoundedSemaphore(nworkers + 1)
        self._upload_slots = threading.BoundedSemaphore(connections)
        self._open: dict[BlobType, PackBuilder] = {}
        self._inflight: set[Future[None]] = set()
        self._uploads: set[_Upload] = set()
        self._closing = False
        self._batch: list[tuple[BlobType, bytes, bytes]] = []
        self._batch_bytes = 0

    # -- public --

    def add(self, blob_type: BlobType, blob_id: bytes, data: bytes | memoryview) -> bool:
        """Queue a blob for storage; False if the repository (or this run) already has it.

        Small blobs are handed to the workers in batches: one hand-off per blob
        would cost more than compressing it. Any thread may call this.
        """
        if self._error is not None:
            raise self._error
        with self._add_lock:
            if blob_id in self._pending or self.index.has(blob_id):
                return False
            if blob_type is BlobType.DATA and self._stop.is_set():
                return True  # stopping: dropped, never stored (the caller leaves its file out)
            self._pend(blob_type, blob_id)
            self._batch.append((blob_type, blob_id, bytes(data)))
            self._batch_bytes += len(data)
            if self._batch_bytes >= BATCH_BYTES or len(self._batch) >= BATCH_COUNT:
                self._submit_batch()
            return True

    def submit(self, blobs: list[tuple[BlobType, bytes, bytes | memoryview]], done: Callable[[], None]) -> None:
        """Store ``blobs``, already deduplicated by the caller, as one batch (the pack process's input:
        packproc.py). ``done()`` is called once their bytes are no longer needed: sealed into a pack,
        or dropped by a stop."""
        if self._error is not None:
            raise self._error
        self._blob_slots.acquire()
        try:
            fut = self._workers.submit(self._store, blobs, done)
        except BaseException:
            self._blob_slots.release()
            raise
        self._track(fut)

    def _submit_batch(self) -> None:
        """Hand the batch being gathered to a worker (the caller holds ``_add_lock``)."""
        if self._stop.is_set():
            self._batch = [b for b in self._batch if b[0] is not BlobType.DATA]
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
        with self._add_lock:
            self._submit_batch()
        self._wait_all()
        with self._lock:
            builders = [b for b in self._open.values() if len(b)]
            self._open.clear()
        for builder in builders:
            self._upload(builder)
        self._wait_all()
        self._write_pending_index(force=True)

    def stop(self, grace: float = STOP_GRACE) -> None:
        """From any thread, at once: drop new data blobs and cancel the data-pack uploads under way.

        Uploads already transferring get ``grace`` seconds, then they are given up as well (so
        they never hold up the tree pack and index a stopping run still stores).
        """
        with self._lock:
            if self._stop.is_set():
                return
            self._stop.set()
        timer = threading.Timer(grace, self._give_up_transfers)
        timer.daemon = True
        timer.start()

    def abandon(self, grace: float = STOP_GRACE) -> int:
        """Finish a stop; return how many data blobs were given up. Call from the walking thread."""
        self.stop(grace)
        with self._add_lock:  # an add that began before the stop has finished; later ones drop their data
            self._submit_batch()
        with self._lock:
            data_jobs = [u.future for u in self._uploads if u.builder.kind is BlobType.DATA]
        wait_futures(data_jobs, timeout=grace)
        self._give_up_transfers()
        with self._lock:
            uploads = {u.future for u in self._uploads}
            workers = [f for f in self._inflight if f not in uploads]
        wait_futures(workers)  # they drop data blobs now: quick
        with self._lock:
            self._open.pop(BlobType.DATA, None)
        dropped = self._forget_unstored()
        self._raise_error()
        return dropped

    def _give_up_transfers(self) -> None:
        """Abandon the data-pack uploads still running: nothing waits for them or indexes them."""
        with self._lock:
            late = [u for u in self._uploads if u.builder.kind is BlobType.DATA and not u.future.done()]
            for job in late:
                job.abandoned = True
                self._inflight.discard(job.future)
                self._uploads.discard(job)
        for job in late:
            self._release_slot(job)

    def close(self) -> None:
        """Stop the workers; wait for running uploads unless the run was stopped (then they are given up)."""
        self._closing = True
        self._workers.shutdown(wait=True, cancel_futures=True)
        if self._stop.is_set():
            return
        with self._lock:
            running = [u.future for u in self._uploads]
        wait_futures(running)
        buffer_pool.clear()  # the run's spare pack buffers go back to the system

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

    def _wait_all(self) -> None:
        while True:
            with self._lock:
                pending = list(self._inflight)
            if not pending:
                break
            # in slices: an upload a stop gives up leaves the set without ever finishing
            wait_futures(pending, timeout=0.1, return_when=FIRST_COMPLETED)
        self._raise_error()

    def _store(
        self, batch: list[tuple[BlobType, bytes, bytes | memoryview]], done: Callable[[], None] | None = None
    ) -> None:
        try:
            if self._stop.is_set():
                batch = [b for b in batch if b[0] is not BlobType.DATA]
            outputs = compress_many([d for _, _, d in batch], self._compress_each)
            compressed = [(t, i, len(d), *out) for (t, i, d), out in zip(batch, outputs)]
            full: list[PackBuilder] = []
            with self._lock:
                for blob_type, blob_id, raw_len, payload, compression in compressed:
                    if blob_type is BlobType.DATA and self._stop.is_set():
                        continue
                    builder = self._open.get(blob_type)
                    if builder is None:
                        builder = self._open[blob_type] = PackBuilder(
                            blob_type, self.recipient(blob_type), self.pack_size + _SLACK
                        )
                    builder.add(blob_id, blob_type, payload, raw_len, compression)
                    if builder.size >= self.pack_size:
                        full.append(self._open.pop(blob_type))
        finally:
            self._blob_slots.release()
            if done is not None:
                done()
        for builder in full:
            self._upload(builder)

    def _dropped(self, builder: PackBuilder) -> bool:
        # after a failed upload the run fails: a pack still waiting for a connection is not begun (each
        # would try the storage that just failed again, one after the other)
        return self._closing or self._error is not None or (builder.kind is BlobType.DATA and self._stop.is_set())

    def _upload(self, builder: PackBuilder) -> None:
        """Upload ``builder`` on its own thread, once one of the ``connections`` slots is free."""
        while not self._upload_slots.acquire(timeout=0.1):
            if self._dropped(builder):
                return
        if self._dropped(builder):
            self._upload_slots.release()
            return
        job = _Upload(builder)
        with self._lock:
            self._uploads.add(job)
        self._track(job.future)
        # a daemon thread: a stopping run does not wait at exit for a transfer it gave up
        threading.Thread(target=self._run_upload, args=(job,), name="tuckbox-upload", daemon=True).start()

    def _run_upload(self, job: _Upload) -> None:
        try:
            self._save_pack(job)
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread through the future
            with self._lock:
                ignored = job.abandoned  # nobody waits for it: its failure changes nothing
            job.future.set_result(None) if ignored else job.future.set_exception(e)
        else:
            job.future.set_result(None)
        finally:
            with self._lock:
                self._uploads.discard(job)

    def _release_slot(self, job: _Upload) -> None:
        with self._lock:
            held, job.slot_held = job.slot_held, False
        if held:
            self._upload_slots.release()

    def _save_pack(self, job: _Upload) -> None:
        builder = job.builder
        try:
            if self._dropped(builder):
                return
            data = builder.finish()
            size = len(data)
            name = blake3.blake3(data, max_threads=1).hexdigest()
            try:
                if builder.kind is BlobType.DATA:
                    try:
                        with cancel_scope(self._stop):
                            self.backend.save(ObjectType.PACK, name, data)
                    except Cancelled:
                        return  # not stored (saves are atomic); its blobs are forgotten by abandon()
                else:
                    self.backend.save(ObjectType.PACK, name, data)
            finally:
                try:
                    data.release()  # the buffer can be unmapped once nothing else views it
                except BufferError:
                    pass
            record = PackRecord(name, builder.epk, builder.kind, size, tuple(builder.entries))
            with self._lock:
                if job.abandoned:
                    return  # stored after the stop gave up on it: left unindexed, like a pack of a killed run
                self.index.add_pack(record)
                self._stored(record, (e.id for e in builder.entries), builder.raw_bytes)
            if self.on_pack_saved is not None:
                self.on_pack_saved(record)
        finally:
            builder.release()
            self._release_slot(job)
        self._write_pending_index(force=False)
