"""Getting blobs for restore: requests by pack range, read-ahead within a budget, a cache of recent blobs.

A window's blobs are grouped by pack and requested range by range: needs
closer than ``GAP`` share one request (reading a little unneeded data is
cheaper than another request), and no request is larger than ``MAX_RANGE``.

Recently used decrypted blobs stay in a small ``BlobCache``, so content that
recurs across windows (the same small file in many directories) is not
fetched again while it keeps recurring; a blob that comes back after falling
out of it is fetched again as its own small range. This replaces a plan of the
whole restore (which would hold every entry of the tree in memory) with a
bounded one.
"""

from __future__ import annotations

import mmap
import struct
import threading
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator

from ..backends.wrappers import cancel_scope
from ..errors import Cancelled, PermanentError, TransientError, TuckboxError
from ..types import ObjectType

GAP = 1 << 20  # fetch across gaps smaller than this rather than issue another request (a local repository)
# from remote storage bytes cost more than requests: bridging at most 256 KiB fetched 10 % less of the mixed
# benchmark set from S3 (504 instead of 560 MiB, 90 more requests, ~0.2 s more CPU: it pays below ~280 MiB/s)
GAP_REMOTE = 256 << 10
COPY_MIN = 64 << 10  # a blob this large that a later window needs again is read back from the target
SOURCES = 1 << 14  # how many such blobs are remembered (the most recently written)
MAX_RANGE = 8 << 20  # but request at most this much at once


def ranges(locs: list[Any], gap: int = GAP) -> list[list[Any]]:
    """One pack's needed blobs (index locations) as requests, in offset order: blobs closer than ``gap`` share one."""
    locs.sort(key=lambda loc: loc.entry.offset)
    groups: list[list[Any]] = [[locs[0]]]
    most = MAX_RANGE
    for loc in locs[1:]:
        group = groups[-1]
        prev, e = group[-1].entry, loc.entry
        if e.offset - (prev.offset + prev.length) < gap and e.offset + e.length - group[0].entry.offset <= most:
            group.append(loc)
        else:
            groups.append([loc])
    return groups


def span(group: list[Any]) -> tuple[int, int]:
    """(offset, length) of the request for a group of locations."""
    start = group[0].entry.offset
    return start, group[-1].entry.offset + group[-1].entry.length - start


class BlobCache:
    """Recently used decrypted blobs, up to ``limit`` bytes (least recently used go first); thread-safe."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._blobs: OrderedDict[bytes, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, blob_id: bytes) -> bytes | None:
        data = self._blobs.get(blob_id)
        if data is not None:
            try:
                self._blobs.move_to_end(blob_id)
            except KeyError:  # evicted by another thread meanwhile: still a good copy
                pass
        return data

    def put(self, blob_id: bytes, data: bytes) -> None:
        if len(data) > self.limit >> 3:
            return
        with self._lock:
            blobs = self._blobs
            if blob_id not in blobs:
                blobs[blob_id] = data
                self._size += len(data)
                while self._size > self.limit:
                    self._size -= len(blobs.popitem(last=False)[1])


class Sources:
    """Where this restore wrote each large blob (the ``SOURCES`` most recent), so that a later window
    needing the same blob again — a copy of a big file elsewhere in the tree, a file that also sits in
    another directory — reads it back from the file already restored instead of fetching it from the
    storage again. The blob cache holds only the last 16 MiB of blobs; without this, a remote repository
    would be read (and, for a cloud, billed) once more for every such copy. The reader checks what it reads
    against the blob's id and fetches the blob after all if it does not match (the file failed, was removed
    or was changed meanwhile). Used by the restoring thread only.
    """

    def __init__(self, raw_length: Callable[[bytes], int | None], limit: int = SOURCES) -> None:
        self._raw_length = raw_length
        self._where: OrderedDict[bytes, tuple[bytes, int, int, int]] = OrderedDict()
        self._limit = limit

    def note(self, w: Any, path: bytes, content: Any) -> None:
        """The file at ``path`` (in the snapshot) goes into window ``w`` with ``content`` (its chunk list):
        remember where its large blobs will be, and give ``w`` the earlier places of those already placed."""
        where, pos = self._where, 0
        try:
            for item in content:
                if type(item) is int:
                    pos += item
                    continue
                n = self._raw_length(item)
                if n is None:
                    return  # missing from the index: the window's writer reports the file
                if n >= COPY_MIN:
                    source = where.get(item)
                    if source is None:
                        where[item] = (path, pos, n, w.id)
                        if len(where) > self._limit:
                            where.popitem(last=False)
                    elif source[3] != w.id:  # (within one window a blob is fetched once anyway)
                        w.copies[item] = source
                pos += n
        except TypeError:
            return  # a malformed entry: the writer reports it



class DoneMark:
    """The id of the last window up to which every window is complete (written, its files closed), in
    shared memory: advanced as windows complete (``complete``, from whichever thread completes their
    futures), read by the writers of later windows (in worker processes, forked after it was made), which
    read blobs back only from files of complete windows."""

    def __init__(self) -> None:
        self._buf = mmap.mmap(-1, 8)
        self._mark = -1
        self._done: set[int] = set()
        self._lock = threading.Lock()
        struct.pack_into("q", self._buf, 0, -1)

    def complete(self, window_id: int, future: Any) -> None:
        if future.cancelled() or future.exception() is not None:
            return  # not written: the mark stops before it (the restore is failing anyway)
        with self._lock:
            self._done.add(window_id)
            mark = self._mark
            while mark + 1 in self._done:
                mark += 1
                self._done.discard(mark)
            if mark != self._mark:
                self._mark = mark
                struct.pack_into("q", self._buf, 0, mark)

    def get(self) -> int:
        return struct.unpack_from("q", self._buf, 0)[0]


DOWN_AFTER = 3  # range loads in a row that failed all their retries: the storage is down, the restore stops


class Fetcher:
    """Loads windows' ranges on a pool of ``connections`` threads (made when first needed: not before a fork).

    ``start`` requests a window's ranges; each comes back in order from the
    returned ``Fetch``. Ranges beyond the first are requested ahead within a
    byte budget shared by all windows (so a big file is fetched over several
    connections); the first one a window needs is always allowed, so no window
    waits for another to consume its read-ahead. A range that cannot be read
    comes back as its error (PermanentError, storage-wide, is raised). So does a
    transient one (a load that failed all its retries), unless it is the
    ``DOWN_AFTER``-th in a row, of more than one pack, with no load succeeding in
    between: the storage is down (the server gone, the line cut; not one object it
    cannot serve, which costs only the files that need it), and a restore that went on would fail
    every file left, one error line each, with nothing written; it stops instead
    (a rerun resumes), as for a full target disk.
    """

    def __init__(self, backend: Any, connections: int, budget: int, gap: int = GAP) -> None:
        self.backend = backend
        self.gap = gap  # for ``ranges``
        self.connections = max(1, connections)
        self._pool: ThreadPoolExecutor | None = None
        self._free = budget
        self._lock = threading.Lock()
        self._stop = threading.Event()  # set by ``abort``
        self._failed_in_a_row: list[str] = []  # packs of the loads that failed for good since one succeeded

    def abort(self) -> None:
        """The restore is stopping: loads waiting for bandwidth, a connection or a retry give up at once."""
        self._stop.set()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.connections, thread_name_prefix="restore-fetch")
        return self._pool

    def load(self, group: list[Any]) -> bytes | TuckboxError:
        start, length = span(group)
        try:
            with cancel_scope(self._stop):
                data = self.backend.load(ObjectType.PACK, group[0].pack.name, start, length)
        except (PermanentError, Cancelled):
            raise  # the storage itself is unusable (gone, no access), or the restore is stopping: a rerun resumes
        except TransientError as e:
            with self._lock:
                failed = self._failed_in_a_row
                failed.append(group[0].pack.name)
                down = len(failed) >= DOWN_AFTER and len(set(failed)) > 1  # (not one pack the server cannot serve)
            if down:
                raise PermanentError(
                    f"the storage stopped answering ({e}); run the same restore again when it is reachable, "
                    "to resume"
                ) from None
            return e
        except TuckboxError as e:
            return e
        if self._failed_in_a_row:
            with self._lock:
                self._failed_in_a_row.clear()
        return data

    def charge(self, n: int) -> bool:
        with self._lock:
            if self._free < n:
                return False
            self._free -= n
            return True

    def refund(self, n: int) -> None:
        if n:
            with self._lock:
                self._free += n

    def start(self, groups: list[list[Any]], eager: bool) -> "Fetch":
        """The loads of one window's ranges; ``eager``: request them now (else when first iterated)."""
        fetch = Fetch(self, groups)
        if eager:
            fetch.top_up()
        return fetch


class Fetch:
    """One window's ranges, in order; iterate once (or ``cancel``)."""

    def __init__(self, fetcher: Fetcher, groups: list[list[Any]]) -> None:
        self.fetcher = fetcher
        self.groups = groups
        self.next = 0  # the first range not yet requested
        self.ahead: deque[tuple[list[Any], Future[bytes | TuckboxError], int]] = deque()

    def top_up(self) -> None:
        fetcher, groups = self.fetcher, self.groups
        while self.next < len(groups):
            group = groups[self.next]
            cost = span(group)[1] if self.ahead else 0  # the next one needed is free
            if cost and not fetcher.charge(cost):
                return
            self.ahead.append((group, fetcher.pool().submit(fetcher.load, group), cost))
            self.next += 1

    def __iter__(self) -> Iterator[tuple[list[Any], bytes | TuckboxError]]:
        try:
            if not self.ahead and len(self.groups) == 1:  # nothing to overlap with: load it here
                self.next = 1
                yield self.groups[0], self.fetcher.load(self.groups[0])
                return
            while self.next < len(self.groups) or self.ahead:
                self.top_up()
                group, future, cost = self.ahead.popleft()
                try:
                    data = future.result()
                finally:
                    self.fetcher.refund(cost)
                yield group, data
        finally:
            self.cancel()

    def cancel(self) -> None:
        while self.ahead:
            _, future, cost = self.ahead.popleft()
            future.cancel()
            self.fetcher.refund(cost)
