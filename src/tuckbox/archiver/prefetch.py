"""Reading files ahead of the walk, in a pool of reader threads.

The walking thread does the Python work (metadata, hashing small files,
trees); opening, reading and closing small files are system calls that release
the GIL, so a couple of reader threads keep the disk busy while it does. Large
files are read, chunked and hashed by a reader thread as a ``Stream``
(reading.py). The window ahead is bounded in files and bytes, so memory stays
flat.
"""

from __future__ import annotations

import os
import stat
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from ..fsmeta import open_for_backup, read_xattrs
from .reading import SMALL_FILE, STREAM_BYTES, Stream

__all__ = ["SMALL_FILE", "Prefetched", "Prefetcher"]


@dataclass
class Prefetched:
    data: bytes = b""
    after: os.stat_result | None = None
    read_at: int = 0
    error: str | None = None
    sparse: bool = False
    xattrs: tuple[list[tuple[bytes, bytes]], list[str]] | None = None  # read through the same descriptor
    chunk_id: bytes | None = None  # of ``data``, when it is one chunk (hashed here, not in the walk)


_BLOCK = 4096
# (chunk id function, largest file that is one chunk): small files are hashed by the reader thread
Hasher = tuple[Callable[[bytes], bytes], int]


def _read_small(path: bytes, size: int, blocks: int = 0, hasher: Hasher | None = None) -> Prefetched:
    """Read a whole small file (in a reader thread: the system calls release the GIL)."""
    read_at = time.time_ns()
    try:
        fd = open_for_backup(path)
    except FileNotFoundError:
        return Prefetched(error="vanished during backup")
    except OSError as e:
        return Prefetched(error=f"cannot read: {e.strerror}")
    try:
        if size and not (size <= _BLOCK and blocks * 512 >= size):
            # (a file of at most one page whose allocated blocks cover its size has no hole: no need to ask)
            if os.lseek(fd, 0, os.SEEK_HOLE) < size:
                return Prefetched(sparse=True)  # holes must stay holes: the walker reads it extent by extent
        parts = []
        want = size + 1  # one byte more shows a file that grew
        got = 0
        while True:
            piece = os.pread(fd, want - got, got)
            if not piece:
                break
            parts.append(piece)
            got += len(piece)
            if got >= want or got == size:
                # a regular file's read comes back short only at its end: asking again to see the
                # end would cost a system call per file; a file that grows meanwhile shows in fstat
                break
        after = os.fstat(fd)
        xattrs = read_xattrs(path, fd)
    except OSError as e:
        return Prefetched(error=f"read error: {e.strerror}")
    finally:
        os.close(fd)
    data = parts[0] if len(parts) == 1 else b"".join(parts)
    chunk_id = None
    if hasher is not None and 0 < len(data) <= hasher[1]:
        chunk_id = hasher[0](data)
    return Prefetched(data, after, read_at, xattrs=xattrs, chunk_id=chunk_id)


def _read_batch(batch: list[tuple[bytes, int, int]], hasher: Hasher | None) -> list[Prefetched]:
    return [_read_small(path, size, blocks, hasher) for path, size, blocks in batch]


PREFETCH_BYTES = 8 << 20
PREFETCH_FILES = 128
BATCH_FILES = 8  # small files read per task
BATCH_BYTES = 256 << 10


class Prefetcher:
    """Keeps the reader pool a bounded window ahead of the walk through one directory's files.

    ``start_stream(path, stream)``, when given, is submitted for large regular
    files: they are then handed over as a ``Stream`` (whose reader stores the
    chunks through ``sink``, when given) instead of ``None``.
    ``hasher``, when given, names the chunk id of files that are one chunk.
    """

    def __init__(
        self,
        pool: ThreadPoolExecutor | None,
        todo: list[tuple[bytes, bytes, os.stat_result, Any]],
        start_stream: Callable[[bytes, Stream], None] | None = None,
        hasher: Hasher | None = None,
        sink: Callable[[bytes, bytes | memoryview], object] | None = None,
    ) -> None:
        self.pool = pool
        self.sink = sink
        self.hasher = hasher
        self.todo = todo
        self.start_stream = start_stream
        self.futures: dict[int, tuple[Future[list[Prefetched]], int]] = {}  # file -> (its batch, place in it)
        self.streams: dict[int, tuple[Stream, Future[None]]] = {}
        self.next = 0
        self.bytes = 0
        self._fill(0)

    @staticmethod
    def _cost(st: os.stat_result) -> int:
        return min(st.st_size, STREAM_BYTES)

    def _fill(self, current: int) -> None:
        if self.pool is None:
            return
        while (
            self.next < len(self.todo)
            and self.next < current + PREFETCH_FILES
            and self.bytes < PREFETCH_BYTES
        ):
            path, _, st, _ = self.todo[self.next]
            if stat.S_ISREG(st.st_mode):
                if st.st_size <= SMALL_FILE:
                    self._submit_batch(current)
                    continue
                if self.start_stream is not None:
                    stream = Stream(self.sink)
                    self.streams[self.next] = (stream, self.pool.submit(self.start_stream, path, stream))
                    self.bytes += self._cost(st)
            self.next += 1

    def _submit_batch(self, current: int) -> None:
        """Submit the run of small files starting at ``self.next`` as one task (one hand-off, not one per file)."""
        batch: list[tuple[bytes, int, int]] = []
        first = self.next
        size = 0
        while (
            self.next < len(self.todo)
            and self.next < current + PREFETCH_FILES
            and len(batch) < BATCH_FILES
            and size < BATCH_BYTES
        ):
            path, _, st, _ = self.todo[self.next]
            if not (stat.S_ISREG(st.st_mode) and st.st_size <= SMALL_FILE):
                break
            batch.append((path, st.st_size, st.st_blocks))
            size += st.st_size
            self.next += 1
        fut = self.pool.submit(_read_batch, batch, self.hasher)  # type: ignore[union-attr]
        for i in range(len(batch)):
            self.futures[first + i] = (fut, i)
        self.bytes += size

    def take(self, k: int) -> Prefetched | Stream | None:
        batched = self.futures.pop(k, None)
        streamed = self.streams.pop(k, None)
        if batched is not None or streamed is not None:
            self.bytes -= self._cost(self.todo[k][2])
        self._fill(k + 1)
        if streamed is not None:
            return streamed[0]
        if batched is None:
            return None
        fut, i = batched
        return fut.result()[i]

    def cancel(self) -> None:
        for fut, _ in self.futures.values():
            fut.cancel()
        self.futures.clear()
        for stream, sfut in self.streams.values():
            stream.cancel()
            sfut.cancel()
        self.streams.clear()
