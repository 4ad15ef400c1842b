"""Writing large runs of bytes with ``O_DIRECT``: from our buffer to the disk, not through the page cache.

Copying freshly made bytes into the page cache is the most expensive step of
storing a pack or restoring a large file on the machines we measure on (a VM
whose free memory goes back to its host: every new page-cache page costs a
fault on the host, 0.9 s of system time per 448 MiB written, against 0.02 s
with ``O_DIRECT``), and neither a backup nor a restore reads those pages
again. ``O_DIRECT`` needs the memory, the file offset and the length aligned
to the device's block size; ``ALIGN`` (the page size, at least 4 KiB)
satisfies every device Linux supports. Callers write the aligned middle of a
run this way and the unaligned ends through the page cache; both are plain
``pwrite``s on one descriptor, whose ``O_DIRECT`` flag is switched on only
around the direct write.

Only file systems on a block device are offered this (``worth_it``):
network, FUSE, tmpfs, btrfs and ZFS mounts have an anonymous device (major
0), and there ``O_DIRECT`` is refused, uncached or emulated. A refusal
(``EINVAL``: the file system or the buffer's alignment) is reported to the
caller, which then writes buffered; durability is the caller's fsync either
way.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os

ALIGN = max(4096, mmap.PAGESIZE)
O_DIRECT = getattr(os, "O_DIRECT", 0)


def worth_it(path: str | bytes) -> bool:
    """Whether files under ``path`` are on a file system where direct writes are supported and pay."""
    if not O_DIRECT:
        return False
    try:
        return os.major(os.stat(path).st_dev) != 0
    except OSError:
        return False


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(errno.EIO, "short write")
        view = view[n:]
        offset += n


def write_direct(fd: int, view: memoryview, offset: int) -> bool:
    """Write ``view`` at ``offset`` with O_DIRECT; False (nothing reliably written) where that is refused.

    ``view`` must start at an ``ALIGN``-aligned address and, like ``offset``,
    have an ``ALIGN``-multiple length. The descriptor is back in buffered mode
    when this returns or raises.
    """
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | O_DIRECT)
    except OSError:
        return False
    try:
        pwrite_all(fd, view, offset)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        return False
    finally:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)
    return True


class Staging:
    """One reusable page-aligned buffer for copying unaligned bytes into before a direct write (one thread)."""

    def __init__(self) -> None:
        self._buf: mmap.mmap | None = None

    def view(self, data: memoryview, start: int, length: int) -> memoryview:
        """``data[start:start + length]`` copied to the front of the buffer (grown as needed)."""
        if self._buf is None or len(self._buf) < length:
            if self._buf is not None:
                self._buf.close()
            self._buf = mmap.mmap(-1, max(length, 1 << 20))
        self._buf[:length] = data[start : start + length]
        return memoryview(self._buf)[:length]

    def close(self) -> None:
        if self._buf is not None:
            try:
                self._buf.close()
            except BufferError:
                pass
            self._buf = None
