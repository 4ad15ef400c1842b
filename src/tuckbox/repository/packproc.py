"""The backup's pack process: compression, encryption and uploads beside the walk, not under its GIL.

In one CPython process the walk (per file: stat, open, read, hash, a tree
node, a files-cache record) and the packer's per-blob work (zstd, AES-GCM,
the pack's bookkeeping) take turns holding one GIL, so a backup of many small
files keeps neither core busy (measured on 200,000 small files: the walk
alone 7.5 s, with packing in the same process 10.6-15 s). ``PackProcess`` has
the ``Packer``'s interface, but the packing runs in a child forked when the
run starts, while the backup process has no other thread
(``backends.fork.alone``).

The backup process keeps everything that decides and records: which blobs are
new (the master index plus this run's pending blobs), the index objects, the
stop. The child runs a ``Packer`` that compresses, encrypts, packs and
uploads through its own copy of the storage (its own connections), journals
each pack it stored (journal.py) and reports the pack's record; the backup
process then adds it to the index and writes an index object every 8 packs
and at ``flush``, as the in-process packer does, so the write order of
docs/design.md ("Crash consistency") is unchanged.

Blob bytes travel through a ring of shared memory, made before the fork:
``add`` copies a blob into it (the one copy the in-process packer makes too)
and a batch's descriptors (type, id, offset, length) go over a pipe; the child
compresses the bytes in place and says when a batch's space may be used again
(once its blobs are sealed into pack buffers, or dropped by a stop). A blob
too large for the ring travels inside its message.

Protocol (msgpack lists):

    to the child   ["b", seq, [[type, id, offset, length] | [type, id, -1, bytes], ...]]   a batch
                   ["s", grace]  stop    ["A", grace]  abandon    ["F"]  flush    ["C"]  close
    to the parent  ["r", seq]  batch seq's ring space is free      ["p", record]  a pack was stored
                   ["e", pickled exception]      ["a"] / ["f"] / ["c"]  abandon / flush / close done

Where a fork is not possible (another thread already runs, storage that cannot
be used from two processes, not Linux, or the fork fails) or
``TUCKBOX_PACK_PROCESS=0`` is set, ``open_packer`` returns the in-process
``Packer``.
"""

from __future__ import annotations

import dataclasses
import fcntl
import gc
import mmap
import os
import queue
import signal
import threading
from collections import deque
from multiprocessing.connection import Connection, Pipe
from operator import itemgetter
from typing import Any, Callable

import msgpack

from .. import allocator
from ..backends.fork import F_SETPIPE_SZ, PIPE_SIZE, after_fork, die_with_parent, forkable, pickle_error, prepare_fork
from ..backends.fork import unpickle_error
from ..errors import TuckboxError
from ..types import Backend, BlobType
from .index import MasterIndex, PackRecord, RawPack
from .journal import PackJournal, encode_record
from .packer import BATCH_BYTES, BATCH_COUNT, STOP_GRACE, Ledger, Packer

# room for two of the largest chunks (8 MiB); every page of it is resident in both processes, so it counts
# whole in the pack process's peak memory (24 MiB measured no faster on either benchmark set)
RING_SIZE = 16 << 20
INLINE_OVER = 8 << 20  # a larger blob (a huge directory's tree, a custom chunker's maximum) travels in its message
ENV = "TUCKBOX_PACK_PROCESS"  # "0": pack in the backup process (threads only)


def open_packer(
    backend: Backend,
    index: MasterIndex,
    recipient: Callable[[BlobType], bytes],
    pack_size: int,
    write_index: Callable[[list[PackRecord]], None],
    journal: PackJournal,
    *,
    connections: int = 4,
) -> "Packer | PackProcess":
    """A pack process when one can be forked now, else an in-process packer (which journals itself)."""
    if os.environ.get(ENV, "1") != "0" and forkable(backend, any_wrapper=True) and prepare_fork(
        backend, any_wrapper=True
    ):
        try:
            process = PackProcess(backend, index, recipient, pack_size, write_index, journal, connections=connections)
        except OSError:
            pass  # no fork to be had here: the same packer, as threads
        else:
            after_fork(backend, any_wrapper=True)  # this process writes the indexes and the snapshot
            return process
    return Packer(
        backend, index, recipient, pack_size, write_index, connections=connections, on_pack_saved=journal.record
    )


class _Ring:
    """Space in the shared buffer, handed out in order and given back batch by batch, in the same order."""

    def __init__(self, size: int) -> None:
        self.buf = mmap.mmap(-1, size)  # anonymous and shared: the forked child sees the same pages
        self.size = size
        self.head = 0  # where the next blob goes
        self.tail = 0  # where the oldest blob still in use starts
        self.gathering = 0  # blobs placed for the batch not sent yet
        self.batches: deque[list[int]] = deque()  # [seq, end, done] of the batches sent, oldest first
        self.cond = threading.Condition(threading.Lock())

    def place(self, n: int) -> int:
        """Offset of ``n`` free bytes, or -1 if there is no room now. Call with ``cond`` held."""
        if not self.batches and not self.gathering:
            self.head = self.tail = 0
        head, tail = self.head, self.tail
        if head > tail or (head == tail and not self.batches and not self.gathering):
            if head + n <= self.size:
                at = head
            elif n <= tail:
                at = 0  # the rest of the ring stays unused until the tail passes it
            else:
                return -1
        elif head < tail and head + n <= tail:
            at = head
        else:
            return -1
        self.head = at + n
        self.gathering += 1
        return at

    def sent(self, seq: int) -> None:
        """The gathered blobs went out as batch ``seq``. Call with ``cond`` held."""
        self.batches.append([seq, self.head, 0])
        self.gathering = 0

    def free(self, seq: int) -> None:
        with self.cond:
            for b in self.batches:
                if b[0] == seq:
                    b[2] = 1
                    break
            while self.batches and self.batches[0][2]:
                self.tail = self.batches.popleft()[1]
            self.cond.notify_all()


class PackProcess(Ledger):
    """The ``Packer`` interface, with the packing done by a forked child (see the module's docstring)."""

    def __init__(
        self,
        backend: Backend,
        index: MasterIndex,
        recipient: Callable[[BlobType], bytes],
        pack_size: int,
        write_index: Callable[[list[PackRecord]], None],
        journal: PackJournal,
        *,
        connections: int = 4,
        index_every: int = 8,
        ring_size: int = RING_SIZE,
    ) -> None:
        super().__init__(index, write_index, index_every)
        self._ring = _Ring(ring_size)
        self._inline_over = min(INLINE_OVER, ring_size // 2)
        self._send_lock = threading.Lock()
        self._batch: list[tuple[Any, ...]] = []
        self._batch_bytes = 0
        self._seq = 0
        self._gone = False  # the child's messages ended
        self._closing = False
        self._replies: queue.SimpleQueue[str] = queue.SimpleQueue()

        down_recv, self._down = Pipe(duplex=False)
        self._up, up_send = Pipe(duplex=False)
        for conn in (self._down, up_send):
            try:
                fcntl.fcntl(conn.fileno(), F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:
                pass  # a smaller pipe only means more, shorter waits
        parent = os.getpid()
        try:
            self.pid = os.fork()
        except OSError:  # (a process limit, no memory, a sandbox that forbids it): the caller packs in-process
            for conn in (down_recv, self._down, self._up, up_send):
                conn.close()
            self._ring.buf.close()
            raise
        if self.pid == 0:  # the child: never returns
            code = 1
            try:
                gc.freeze()  # the inherited objects are never collected here, so their pages stay shared
                self._down.close()
                self._up.close()
                die_with_parent(parent)
                for sig in (signal.SIGINT, signal.SIGTERM):
                    signal.signal(sig, signal.SIG_IGN)  # the backup process decides when to stop
                allocator.give_back_freed()  # (the backup process keeps what it frees: its peak is elsewhere)
                _serve(down_recv, up_send, self._ring.buf, backend, recipient, pack_size, connections, journal)
                code = 0
            finally:
                os._exit(code)
        down_recv.close()
        up_send.close()
        self._reader = threading.Thread(target=self._receive, name="tuckbox-pack-process", daemon=True)
        self._reader.start()

    # -- the Packer interface --

    def add(self, blob_type: BlobType, blob_id: bytes, data: bytes | memoryview) -> bool:
        """Queue a blob for storage; False if the repository (or this run) already has it. Any thread."""
        if self._error is not None:
            raise self._error
        with self._add_lock:
            if blob_id in self._pending or self.index.has(blob_id):
                return False
            if blob_type is BlobType.DATA and self._stop.is_set():
                return True  # stopping: dropped, never stored (the caller leaves its file out)
            n = len(data)
            if n > self._inline_over:
                entry: tuple[Any, ...] = (blob_type, blob_id, -1, bytes(data))
            else:
                ring = self._ring
                with ring.cond:
                    at = ring.place(n)
                if at < 0:
                    at = self._place(n, blob_type)
                    if at < 0:
                        return True  # a data blob, and the run stopped while it waited for room
                ring.buf[at : at + n] = data
                entry = (blob_type, blob_id, at, n)
            self._pend(blob_type, blob_id)
            self._batch.append(entry)
            self._batch_bytes += n
            if self._batch_bytes >= BATCH_BYTES or len(self._batch) >= BATCH_COUNT:
                self._send_batch()
            return True

    def flush(self) -> None:
        """Finish open packs, wait for every upload, and write the index for them."""
        with self._add_lock:
            self._send_batch()
        self._request(["F"], "f")
        self._write_pending_index(force=True)

    def stop(self, grace: float = STOP_GRACE) -> None:
        """From any thread, at once: drop new data blobs and cancel the data-pack uploads under way."""
        with self._lock:
            if self._stop.is_set():
                return
            self._stop.set()
        with self._ring.cond:
            self._ring.cond.notify_all()  # a data blob waiting for room is dropped instead
        self._send(["s", grace])

    def abandon(self, grace: float = STOP_GRACE) -> int:
        """Finish a stop; return how many data blobs were given up. Call from the walking thread."""
        self.stop(grace)
        with self._add_lock:
            self._send_batch()  # (its data blobs are dropped by the child, and their room freed)
        self._request(["A", grace], "a")
        return self._forget_unstored()

    def close(self) -> None:
        """End the child: it waits for running uploads unless the run was stopped (then they are given up)."""
        self._closing = True
        if not self._gone:
            self._send(["C"])
            self._wait_reply("c", raise_error=False)
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        self._reader.join()
        for conn in (self._down, self._up):
            conn.close()
        try:
            self._ring.buf.close()
        except BufferError:
            pass

    # -- internals --

    def _place(self, n: int, blob_type: BlobType) -> int:
        """Room for ``n`` bytes in the ring once the child has freed some (the caller holds ``_add_lock``)."""
        ring = self._ring
        self._send_batch()  # what was gathered must go first, or its room never comes back
        with ring.cond:
            while True:
                at = ring.place(n)
                if at >= 0:
                    return at
                self._raise_error()
                if blob_type is BlobType.DATA and self._stop.is_set():
                    return -1
                ring.cond.wait(0.5)

    def _send_batch(self) -> None:
        """Send the blobs gathered so far (the caller holds ``_add_lock``)."""
        if not self._batch:
            return
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        self._seq += 1
        with self._ring.cond:
            self._ring.sent(self._seq)
        self._send(["b", self._seq, batch])

    def _send(self, msg: list[Any]) -> None:
        data = msgpack.packb(msg)
        with self._send_lock:
            try:
                self._down.send_bytes(data)
            except OSError:
                self._child_gone()

    def _request(self, msg: list[Any], reply: str) -> None:
        self._send(msg)
        self._wait_reply(reply)

    def _wait_reply(self, reply: str, raise_error: bool = True) -> None:
        while True:
            try:
                got = self._replies.get(timeout=0.2)
            except queue.Empty:
                if self._gone:
                    break
                continue
            if got == reply or got == "gone":
                break
        if raise_error:
            self._raise_error()

    def _receive(self) -> None:
        """The child's messages, in the order it sent them (a pack's record before the flush that waited for it)."""
        try:
            while True:
                msg = msgpack.unpackb(self._up.recv_bytes())
                kind = msg[0]
                if kind == "r":
                    self._ring.free(msg[1])
                elif kind == "p":
                    self._saved(msgpack.unpackb(msg[1]))
                elif kind == "e":
                    self._fail(unpickle_error(msg[1], "the pack process"))
                else:
                    self._replies.put(kind)
        except (EOFError, OSError):
            pass
        except Exception as e:  # noqa: BLE001 - a garbled message: nothing more can be trusted
            self._fail(e)
        self._child_gone()
        self._replies.put("gone")

    def _child_gone(self) -> None:
        self._gone = True
        if not self._closing:
            self._fail(TuckboxError("the backup's pack process stopped unexpectedly; run the same backup again "
                                    "to resume"))
        with self._ring.cond:
            self._ring.cond.notify_all()

    def _fail(self, e: BaseException) -> None:
        with self._lock:
            if self._error is None:
                self._error = e

    def _saved(self, doc: dict[str, Any]) -> None:
        """A pack the child stored (and journaled): index it, as ``Packer._save_pack`` does.

        Its blob entries stay the lists they arrived as (``MasterIndex.add_raw`` takes them column by
        column, and an index object encodes them as it would ``BlobEntry`` tuples): no object per blob.
        """
        blobs = doc["blobs"]
        record = PackRecord(str(doc["id"]), bytes(doc["epk"]), BlobType(doc["kind"]), int(doc["size"]), ())
        with self._lock:
            self.index.add_raw(RawPack(record, blobs), new=True)
            self._stored(dataclasses.replace(record, blobs=tuple(blobs)), map(itemgetter(0), blobs),
                         sum(map(itemgetter(4), blobs)))
        try:
            self._write_pending_index(force=False)
        except BaseException as e:  # noqa: BLE001 - raised on the walking thread by its next call
            self._fail(e)


# ----------------------------------------------------------------------------- the child


class _Unconsulted(MasterIndex):
    """The pack process's index: never consulted (the backup process decided which blobs are new), so what
    it stores is not kept in it either."""

    def add_pack(self, pack: PackRecord) -> None:
        pass


def _serve(
    recv: Connection,
    send: Connection,
    ring: mmap.mmap,
    backend: Backend,
    recipient: Callable[[BlobType], bytes],
    pack_size: int,
    connections: int,
    journal: PackJournal,
) -> None:
    """The child's work: batches and commands in the order sent; a stop at once, from a thread of its own
    (the main thread may be waiting for a free worker, and that wait can last an upload's time)."""
    lock = threading.Lock()

    def reply(*msg: Any) -> None:
        data = msgpack.packb(msg)
        with lock:
            send.send_bytes(data)

    def saved(record: PackRecord) -> None:
        journal.record(record)  # durable before the backup process can depend on it
        reply("p", encode_record(record))

    packer = Packer(
        backend, _Unconsulted(), recipient, pack_size, lambda _: None,
        connections=connections, index_every=1 << 30, on_pack_saved=saved, compress_each=True,
    )
    inbox: queue.SimpleQueue[list[Any] | None] = queue.SimpleQueue()

    def receive() -> None:
        while True:
            try:
                msg = msgpack.unpackb(recv.recv_bytes())
            except (EOFError, OSError):
                packer.stop(0)  # the backup process is gone: give everything up
                inbox.put(None)
                return
            if msg[0] == "s":
                packer.stop(msg[1])
            else:
                inbox.put(msg)

    threading.Thread(target=receive, name="tuckbox-pack-inbox", daemon=True).start()
    view = memoryview(ring)
    while True:
        msg = inbox.get()
        if msg is None:
            return
        kind = msg[0]
        try:
            if kind == "b":
                seq = msg[1]
                # [type, id, offset, length] in the ring, or [type, id, -1, bytes]
                blobs = [(BlobType(t), i, view[at : at + n] if at >= 0 else n) for t, i, at, n in msg[2]]
                try:
                    packer.submit(blobs, lambda seq=seq: reply("r", seq))
                except BaseException:
                    reply("r", seq)  # never stored: its room is free
                    raise
            elif kind == "A":
                packer.abandon(msg[1])
            elif kind == "F":
                packer.flush()
            elif kind == "C":
                packer.close()
        except Exception as e:  # noqa: BLE001 - the backup process raises it where the in-process packer would
            reply("e", pickle_error(e))
        if kind in ("A", "F", "C"):
            reply(kind.lower())
        if kind == "C":
            return
