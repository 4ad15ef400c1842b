"""Reading small files ahead of the walk, in a pool of reader threads.

The walking thread does the Python work (metadata, hashing, trees); opening,
reading and closing small files are system calls that release the GIL, so a
couple of reader threads keep the disk busy while it does. The window ahead is
bounded in files and bytes, so memory stays flat.
"""

from __future__ import annotations

import os
import stat
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..fsmeta import open_for_backup, read_xattrs

SMALL_FILE = 4 << 20  # read whole and cut in memory below this size


@dataclass
class Prefetched:
    data: bytes = b""
    after: os.stat_result | None = None
    read_at: int = 0
    error: str | None = None
    sparse: bool = False
    xattrs: tuple[list[tuple[bytes, bytes]], list[str]] | None = None  # read through the same descriptor


def _read_small(path: bytes, size: int) -> Prefetched:
    """Read a whole small file (in a reader thread: the system calls release the GIL)."""
    read_at = time.time_ns()
    try:
        fd = open_for_backup(path)
    except FileNotFoundError:
        return Prefetched(error="vanished during backup")
    except OSError as e:
        return Prefetched(error=f"cannot read: {e.strerror}")
    try:
        if size:
            if os.lseek(fd, 0, os.SEEK_HOLE) < size:
                return Prefetched(sparse=True)  # holes must stay holes: the walker reads it extent by extent
            os.lseek(fd, 0, os.SEEK_SET)
        parts = []
        want = size + 1  # one byte more shows a file that grew
        got = 0
        while True:
            piece = os.read(fd, want - got)
            if not piece:
                break
            parts.append(piece)
            got += len(piece)
            if got >= want:
                break
        after = os.fstat(fd)
        xattrs = read_xattrs(path, fd)
    except OSError as e:
        return Prefetched(error=f"read error: {e.strerror}")
    finally:
        os.close(fd)
    return Prefetched(parts[0] if len(parts) == 1 else b"".join(parts), after, read_at, xattrs=xattrs)


PREFETCH_BYTES = 16 << 20
PREFETCH_FILES = 128


class Prefetcher:
    """Keeps the reader pool a bounded window ahead of the walk through one directory's files."""

    def __init__(self, pool: ThreadPoolExecutor | None, todo: list[tuple[bytes, bytes, os.stat_result, Any]]) -> None:
        self.pool = pool
        self.todo = todo
        self.futures: dict[int, Future[Prefetched]] = {}
        self.next = 0
        self.bytes = 0
        self._fill(0)

    def _wanted(self, st: os.stat_result) -> bool:
        return stat.S_ISREG(st.st_mode) and st.st_size <= SMALL_FILE

    def _fill(self, current: int) -> None:
        if self.pool is None:
            return
        while (
            self.next < len(self.todo)
            and self.next < current + PREFETCH_FILES
            and self.bytes < PREFETCH_BYTES
        ):
            path, _, st, _ = self.todo[self.next]
            if self._wanted(st):
                self.futures[self.next] = self.pool.submit(_read_small, path, st.st_size)
                self.bytes += st.st_size
            self.next += 1

    def take(self, k: int) -> Prefetched | None:
        fut = self.futures.pop(k, None)
        if fut is not None:
            self.bytes -= self.todo[k][2].st_size
        self._fill(k + 1)
        return fut.result() if fut is not None else None

    def cancel(self) -> None:
        for fut in self.futures.values():
            fut.cancel()
        self.futures.clear()
