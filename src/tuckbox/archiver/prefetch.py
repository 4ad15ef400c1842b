"""Reading files ahead of the walk.

Small files (up to ``INLINE_MAX``) are read by the walking thread itself, but
opened a window ahead of it with ``posix_fadvise(WILLNEED)``: the kernel reads
them into the page cache in the background, many at once, without a thread.
Handing them to reader threads instead costs more than it saves: each of the
five system calls per file releases the GIL, and getting it back while the
walking thread runs Python stalls the reader (measured on the 200,000-file
set: 11.3 s with two reader threads, 9.2 s read inline; on a cold cache
readahead keeps the disk as busy as four threads).

Larger files are read by a pool of reader threads: up to ``SMALL_FILE`` whole,
in batches; beyond that read, chunked and hashed as a ``Stream`` (reading.py).
The window ahead is bounded in files and bytes, so memory stays flat.
"""

from __future__ import annotations

import errno
import os
import resource
import stat
import time
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from ..fsmeta import open_for_backup, read_xattrs
from .reading import LOST, SMALL_FILE, STREAM_BYTES, VANISHED, Stream

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
    lost: bool = False  # it could not be opened because its path led nowhere (reading.LOST)


_BLOCK = 4096
# (chunk id function, largest file that is one chunk): small files are hashed by the reader thread
Hasher = tuple[Callable[[bytes], bytes], int]


def _open_error(e: OSError) -> Prefetched:
    if isinstance(e, FileNotFoundError):
        return Prefetched(error=VANISHED, lost=True)
    return Prefetched(error=f"cannot read: {e.strerror}", lost=e.errno in LOST)


def _read_small(
    path: bytes, size: int, blocks: int = 0, hasher: Hasher | None = None, at: bytes | None = None
) -> Prefetched:
    """Open and read a whole small file (reached at ``at`` when not at ``path``: longpath.py)."""
    read_at = time.time_ns()
    try:
        fd = open_for_backup(at or path)
    except OSError as e:
        return _open_error(e)
    return _read_open(fd, read_at, path, size, blocks, hasher)


def _read_open(
    fd: int, read_at: int, path: bytes, size: int, blocks: int = 0, hasher: Hasher | None = None
) -> Prefetched:
    """Read a whole small file from ``fd`` (opened at ``read_at``), and close it."""
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


def _read_batch(batch: list[tuple[bytes, int, int, bytes | None]], hasher: Hasher | None) -> list[Prefetched]:
    return [_read_small(path, size, blocks, hasher, at) for path, size, blocks, at in batch]


PREFETCH_BYTES = 8 << 20
PREFETCH_FILES = 64  # files ahead of the walk (small ones: opened, at most OPEN_AHEAD at once)
INLINE_MAX = 256 << 10  # files up to this size are read by the walking thread (see the module's docstring)


def _open_ahead_limit() -> int:
    """How many small files may be held open ahead: a sixteenth of the descriptor limit, so that the
    packer, the backends and the rest of the process never run short because of the readahead."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return 1 << 10
    return max(0, soft // 16)


OPEN_AHEAD = _open_ahead_limit()
BATCH_FILES = 8  # small files read per task
BATCH_BYTES = 256 << 10


class Prefetcher:
    """Keeps the reader pool a bounded window ahead of the walk through one directory's files.

    ``start_stream(path, stream, at)``, when given, is submitted for large regular
    files: they are then handed over as a ``Stream`` (whose reader stores the
    chunks through ``sink``, when given) instead of ``None``.
    ``hasher``, when given, names the chunk id of files that are one chunk.
    ``base``, when given, is where the directory's files are reached (by name
    below it) instead of at their paths: a directory too deep for one system
    call to name (longpath.py); ``settle`` then waits until no reader uses it.
    """

    def __init__(
        self,
        pool: ThreadPoolExecutor | None,
        todo: list[tuple[bytes, bytes, os.stat_result, Any]],
        start_stream: Callable[[bytes, Stream, bytes | None], None] | None = None,
        hasher: Hasher | None = None,
        sink: Callable[[bytes, bytes | memoryview], object] | None = None,
        base: bytes | None = None,
    ) -> None:
        self.pool = pool
        self.sink = sink
        self.hasher = hasher
        self.todo = todo
        self.start_stream = start_stream
        self.base = base
        self.submitted: list[Future[Any]] = []  # with a ``base``: every task, for ``settle``
        self.futures: dict[int, tuple[Future[list[Prefetched]], int]] = {}  # file -> (its batch, place in it)
        self.streams: dict[int, tuple[Stream, Future[None]]] = {}
        self.opened: dict[int, tuple[int, int]] = {}  # small file -> (descriptor, when it was opened)
        self.ahead = True  # open small files ahead (off after running out of file descriptors)
        self.next = 0
        self.bytes = 0
        self._fill(0)

    @staticmethod
    def _cost(st: os.stat_result) -> int:
        return min(st.st_size, STREAM_BYTES)

    def _at(self, k: int) -> bytes | None:
        """Where file ``k`` is reached, when not at its path."""
        return None if self.base is None else self.base + b"/" + self.todo[k][1]

    def _submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        fut = self.pool.submit(fn, *args)  # type: ignore[union-attr]
        if self.base is not None:
            self.submitted.append(fut)
        return fut

    def _inline(self, st: os.stat_result) -> bool:
        """Whether the walking thread reads this file itself (a small regular file, or any up to
        ``SMALL_FILE`` when there is no reader pool)."""
        return stat.S_ISREG(st.st_mode) and st.st_size <= (SMALL_FILE if self.pool is None else INLINE_MAX)

    def _fill(self, current: int) -> None:
        while (
            self.next < len(self.todo)
            and self.next < current + PREFETCH_FILES
            and self.bytes < PREFETCH_BYTES
        ):
            path, _, st, _ = self.todo[self.next]
            if self._inline(st):
                if self.ahead and len(self.opened) < OPEN_AHEAD:
                    self._open_ahead(self.next, self._at(self.next) or path, st.st_size)
            elif stat.S_ISREG(st.st_mode) and self.pool is not None:
                if st.st_size <= SMALL_FILE:
                    self._submit_batch(current)
                    continue
                if self.start_stream is not None:
                    stream = Stream(self.sink)
                    fut = self._submit(self.start_stream, path, stream, self._at(self.next))
                    self.streams[self.next] = (stream, fut)
                    self.bytes += self._cost(st)
            self.next += 1

    def _open_ahead(self, k: int, path: bytes, size: int) -> None:
        """Open file ``k`` and ask the kernel to read it into the page cache in the background."""
        read_at = time.time_ns()
        try:
            fd = open_for_backup(path)
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE):
                self.ahead = False  # opened when its turn comes, like any other (and reported then)
            return  # (any other error is met again, and reported, when its turn comes)
        self.opened[k] = (fd, read_at)
        if size:
            try:
                os.posix_fadvise(fd, 0, size, os.POSIX_FADV_WILLNEED)
            except OSError:
                pass  # only a hint

    def _submit_batch(self, current: int) -> None:
        """Submit the run of small files starting at ``self.next`` as one task (one hand-off, not one per file)."""
        batch: list[tuple[bytes, int, int, bytes | None]] = []
        first = self.next
        size = 0
        while (
            self.next < len(self.todo)
            and self.next < current + PREFETCH_FILES
            and len(batch) < BATCH_FILES
            and size < BATCH_BYTES
        ):
            path, _, st, _ = self.todo[self.next]
            if not (stat.S_ISREG(st.st_mode) and st.st_size <= SMALL_FILE) or self._inline(st):
                break
            batch.append((path, st.st_size, st.st_blocks, self._at(self.next)))
            size += st.st_size
            self.next += 1
        fut = self._submit(_read_batch, batch, self.hasher)
        for i in range(len(batch)):
            self.futures[first + i] = (fut, i)
        self.bytes += size

    def take(self, k: int) -> Prefetched | Stream | None:
        """File ``k``, read (a small file, read now), being read (a ``Stream``), or None: the caller reads it."""
        batched = self.futures.pop(k, None)
        streamed = self.streams.pop(k, None)
        opened = self.opened.pop(k, None)
        if batched is not None or streamed is not None:
            self.bytes -= self._cost(self.todo[k][2])
        self._fill(k + 1)
        if streamed is not None:
            return streamed[0]
        if batched is None:
            path, _, st, _ = self.todo[k]
            if opened is not None:
                return _read_open(opened[0], opened[1], path, st.st_size, st.st_blocks, self.hasher)
            if self._inline(st):
                return _read_small(path, st.st_size, st.st_blocks, self.hasher, self._at(k))
            return None
        fut, i = batched
        return fut.result()[i]

    def cancel(self) -> None:
        for fd, _ in self.opened.values():
            os.close(fd)
        self.opened.clear()
        for fut, _ in self.futures.values():
            fut.cancel()
        self.futures.clear()
        for stream, sfut in self.streams.values():
            stream.cancel()
            sfut.cancel()
        self.streams.clear()

    def settle(self) -> None:
        """After ``cancel``: wait until no reader still works below ``base`` (its descriptor may then close)."""
        for fut in self.submitted:
            if not fut.cancelled():
                try:
                    fut.exception()
                except CancelledError:
                    pass
        self.submitted.clear()
