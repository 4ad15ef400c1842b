"""Reading one file's content as chunks and holes, and streaming large files from a reader thread.

``read_chunks`` is the one implementation of "file descriptor -> chunk ids and
holes": it asks the file system for the data extents (holes stay holes and
cost no reading), cuts each extent with the content-defined chunker and hashes
every chunk. The walking thread calls it directly (retries, fallbacks); for
large files a reader thread calls it ahead of the walk, hands each new chunk
to the packer itself (the stream's ``sink``) and passes the walking thread
only chunk ids and lengths through a ``Stream``, so reading, chunking, hashing
and handing over the chunks of large files run beside the walking thread
instead of inside it (the system calls, the chunker and BLAKE3 all release the
GIL), and the walk never waits for a reader chunk by chunk, nor a reader for
the walk.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections import deque
from typing import Callable, Iterator, Union

from ..chunker import Chunker
from ..fsmeta import data_extents, open_for_backup, read_xattrs

# an open that failed so: the path no longer leads to the file listed (a directory on the way renamed or
# replaced); the walk may still reach it through the directory it holds open
LOST = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})
VANISHED = "vanished during backup"  # a read's error when the file is no longer there
SMALL_FILE = 4 << 20  # read whole and cut in memory below this size (prefetch.py)
STREAM_BYTES = 64 << 20  # how far (in file bytes) a reader may run ahead of the walk in one large file

BlobId = Callable[[Union[bytes, memoryview]], bytes]
# a chunk: (its id, its bytes; or its length, when a Stream's sink stored it); a hole: its length
Piece = Union[tuple[bytes, Union[bytes, memoryview, int]], int]


def read_chunks(fd: int, size: int, chunker: Chunker, blob_id: BlobId, emit: Callable[[Piece], None]) -> int:
    """Emit the chunks and holes of ``fd`` (``size`` from its stat); return the bytes covered.

    A chunk's bytes may be a memoryview valid only during ``emit``. Less than
    ``size`` is returned when the file shrank while being read.
    """
    if size == 0:
        return _read_unsized(fd, chunker, blob_id, emit)
    pos = 0
    for off, length in data_extents(fd, size):
        if off > pos:
            emit(off - pos)
            pos = off
        got = 0
        if length <= SMALL_FILE:
            data = os.pread(fd, length, off)
            while len(data) < length:
                more = os.pread(fd, length - len(data), off + len(data))
                if not more:
                    break
                data += more
            for chunk in chunker.chunks_of(data):
                emit((blob_id(chunk), chunk))
            got = len(data)
        else:
            for chunk in chunker.chunks_fd(fd, off, length):
                emit((blob_id(chunk), chunk))
                got += len(chunk)
        pos += got
        if got < length:
            return pos  # the file shrank while being read
    if pos < size:
        emit(size - pos)
        pos = size
    return pos


UNSIZED_READ = 1 << 16  # one read of a file whose size says 0 (a /proc/sys file refuses one of 4 MiB: ENOMEM)


def _read_unsized(fd: int, chunker: Chunker, blob_id: BlobId, emit: Callable[[Piece], None]) -> int:
    """Emit the chunks of a file whose size says 0, read to its end; return the bytes read.

    A file may still grow, and a pseudo-file (/proc) says 0 whatever it holds (``/proc/kallsyms``: 5 MiB
    and more). Cut ``SMALL_FILE`` bytes at a time: every chunk but the last of a round is final (a cut
    depends only on the bytes from its chunk's start), the last one is cut again with the next round's
    bytes, so the cuts are those of one pass over the whole and memory stays bounded.
    """
    rest = b""
    parts: list[bytes] = []
    fresh = total = 0  # bytes read since the last round, and in all
    while True:
        piece = os.read(fd, UNSIZED_READ)
        if piece:
            parts.append(piece)
            fresh += len(piece)
            total += len(piece)
            if fresh < SMALL_FILE:
                continue
        data = rest + b"".join(parts)
        parts.clear()
        chunks = list(chunker.chunks_of(data))
        if piece and chunks:
            last = chunks.pop()
            rest = bytes(last)
        else:
            rest = b""
        for chunk in chunks:
            emit((blob_id(chunk), chunk))
        fresh = 0
        if not piece:
            return total


class StreamCancelled(Exception):
    """The walk no longer wants this file (the run is stopping)."""


class _SinkFailed(Exception):
    """Storing a chunk failed (the storage, not the file): the walk raises ``cause`` itself."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Stream:
    """A large file read by a reader thread, handed to the walking thread piece by piece.

    With a ``sink`` (the archiver's), the reader stores each chunk through it
    and the pieces the walk takes are ``(chunk id, length)``: no chunk bytes
    wait for the walk, and memory is bounded by the packer's own queues.
    Without one, pieces carry the chunk bytes. Either way the reader blocks
    once ``STREAM_BYTES`` of the file wait for the walk (so a file read far
    ahead of it is still read while the walk reaches it, and progress follows
    the walk). The outcome (error, stat after reading, bytes covered,
    extended attributes) is set before the end is signalled.
    """

    def __init__(self, sink: Callable[[bytes, Union[bytes, memoryview]], object] | None = None) -> None:
        self._sink = sink
        self._cond = threading.Condition()
        self._items: deque[Piece] = deque()
        self._held = 0
        self._done = False
        self._cancelled = False
        self.error: str | None = None  # the file could not be read (a warning: the backup goes on)
        self.lost = False  # ... because its path led nowhere (``LOST``)
        self.failure: BaseException | None = None  # storing its chunks failed (the backup cannot go on)
        self.before: os.stat_result | None = None
        self.after: os.stat_result | None = None
        self.read_at = 0
        self.nbytes = 0
        self._xattrs: tuple[list[tuple[bytes, bytes]], list[str]] | None = None
        self._opened = threading.Event()

    @property
    def xattrs(self) -> tuple[list[tuple[bytes, bytes]], list[str]] | None:
        """Extended attributes read through the reader's descriptor (None if it could not open the file)."""
        self._opened.wait()
        return self._xattrs

    # -- the reader thread --

    def put(self, piece: Piece) -> None:
        size = 0 if isinstance(piece, int) else len(piece[1])
        with self._cond:
            while self._held >= STREAM_BYTES and not self._cancelled:
                self._cond.wait()
            if self._cancelled:
                raise StreamCancelled
        if not isinstance(piece, int):
            if self._sink is not None:
                try:
                    self._sink(piece[0], piece[1])  # stored (or found stored) from this thread
                except Exception as e:  # noqa: BLE001 - the storage failed, not the file: the walk re-raises it
                    raise _SinkFailed(e) from e
                piece = (piece[0], size)
            else:
                piece = (piece[0], bytes(piece[1]))  # the chunker's buffer is reused: copy, here rather than in the walk
        with self._cond:
            if self._cancelled:
                raise StreamCancelled
            self._items.append(piece)
            self._held += size
            self._cond.notify_all()

    def finish(self) -> None:
        with self._cond:
            self._done = True
            self._cond.notify_all()

    # -- the walking thread --

    def pieces(self) -> Iterator[Piece]:
        while True:
            with self._cond:
                while not self._items and not self._done:
                    self._cond.wait()
                if not self._items:
                    return
                piece = self._items.popleft()
                if not isinstance(piece, int):
                    self._held -= piece[1] if isinstance(piece[1], int) else len(piece[1])
                self._cond.notify_all()
            yield piece

    def cancel(self) -> None:
        with self._cond:
            self._cancelled = True
            self._items.clear()
            self._held = 0
            self._cond.notify_all()


def stream_file(path: bytes, chunker: Chunker, blob_id: BlobId, stream: Stream, at: bytes | None = None) -> None:
    """Run in a reader thread: read, chunk and hash ``path`` (reached at ``at`` when not there) into ``stream``."""
    stream.read_at = time.time_ns()
    try:
        try:
            fd = open_for_backup(at or path)
        except FileNotFoundError:
            stream.error = VANISHED
            stream.lost = True
            return
        except OSError as e:
            stream.error = f"cannot read: {e.strerror}"
            stream.lost = e.errno in LOST
            return
        try:
            before = stream.before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                stream.error = "replaced by another kind of entry during backup; skipped"
                return
            # the metadata is taken from the same file as the content, even if it is unlinked meanwhile
            stream._xattrs = read_xattrs(path, fd)
            stream._opened.set()
            stream.nbytes = read_chunks(fd, before.st_size, chunker, blob_id, stream.put)
            stream.after = os.fstat(fd)
        except _SinkFailed as e:
            stream.failure = e.cause
        except OSError as e:
            stream.error = f"read error: {e.strerror}"
        except StreamCancelled:
            pass
        except Exception as e:  # noqa: BLE001 - e.g. the chunker or hashing failed: the walk re-raises it
            stream.failure = e
        finally:
            os.close(fd)
    finally:
        stream._opened.set()
        stream.finish()
