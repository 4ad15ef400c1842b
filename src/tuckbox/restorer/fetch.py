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

import threading
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Iterator

from ..errors import PermanentError, TuckboxError
from ..types import ObjectType

GAP = 1 << 20  # fetch across gaps smaller than this rather than issue another request
MAX_RANGE = 8 << 20  # but request at most this much at once


def ranges(locs: list[Any]) -> list[list[Any]]:
    """One pack's needed blobs (index locations) as requests, in offset order."""
    locs.sort(key=lambda loc: loc.entry.offset)
    groups: list[list[Any]] = [[locs[0]]]
    gap, most = GAP, MAX_RANGE
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


class Fetcher:
    """Loads windows' ranges on a pool of ``connections`` threads (made when first needed: not before a fork).

    ``start`` requests a window's ranges; each comes back in order from the
    returned ``Fetch``. Ranges beyond the first are requested ahead within a
    byte budget shared by all windows (so a big file is fetched over several
    connections); the first one a window needs is always allowed, so no window
    waits for another to consume its read-ahead. A range that cannot be read
    comes back as its error (PermanentError, storage-wide, is raised).
    """

    def __init__(self, backend: Any, connections: int, budget: int) -> None:
        self.backend = backend
        self.connections = max(1, connections)
        self._pool: ThreadPoolExecutor | None = None
        self._free = budget
        self._lock = threading.Lock()

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
            return self.backend.load(ObjectType.PACK, group[0].pack.name, start, length)
        except PermanentError:
            raise  # the storage itself is unusable (gone, no access): stop; a rerun resumes
        except TuckboxError as e:
            return e

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
