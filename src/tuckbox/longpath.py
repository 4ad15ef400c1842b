"""Places deeper than one system call can name.

Linux takes at most ``PATH_MAX`` (4096) bytes of path per call, yet a tree can
be nested deeper than that (each name up to 255 bytes). A backup must still
read such a place and a restore must still make it, so both reach it a piece at
a time:

* ``open_deep`` opens a path of any length: the longest leading part that fits,
  then the rest relative to it (``openat``), one piece after another.
* ``held(fd)`` and ``through(fd, name)`` name a directory held open as ``fd``,
  and an entry in it, by a short path (``/proc/self/fd/N/name``), for the calls
  that take no directory descriptor (``scandir`` by path, extended attributes,
  ``lchown``, ``utime`` of a symlink); valid while ``fd`` stays open.

Paths that fit — every path in an ordinary tree — go straight to the kernel.
"""

from __future__ import annotations

import errno
import os
import resource

__all__ = [
    "DIR_PATH", "PATH_MAX", "fits", "held", "link_deep", "more_descriptors", "open_deep", "room_for_children", "through",
]

PATH_MAX = 4096  # bytes, with the terminating NUL (linux/limits.h)
NAME_MAX = 255
DIR_PATH = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC  # a directory held only to reach what is below it


def more_descriptors(want: int = 1 << 16) -> None:
    """Raise the soft limit on open files towards ``want`` (within the hard limit): a walk that holds a
    descriptor per directory level of a deep tree would otherwise run out at the usual 1024."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY:
            want = min(hard, want)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        pass


def reason(e: OSError) -> str:
    """``e``'s reason for a message; out of descriptors (a tree nested deeper than the open-file limit allows,
    each directory on the way being held open) with what to do about it."""
    if e.errno != errno.EMFILE:
        return str(e.strerror)
    try:
        limit = f" ({resource.getrlimit(resource.RLIMIT_NOFILE)[1]})"
    except (ValueError, OSError):
        limit = ""
    return (f"{e.strerror}: the tree is nested deeper than the open-file limit{limit} allows; "
            "raise it ('ulimit -n 65536', LimitNOFILE= in a systemd unit) and run again")


def fits(path: bytes) -> bool:
    """Whether one system call takes ``path``."""
    return len(path) < PATH_MAX


def room_for_children(path: bytes) -> bool:
    """Whether ``path + b"/" + name`` fits one system call for any name."""
    return len(path) + 1 + NAME_MAX < PATH_MAX


def held(fd: int) -> bytes:
    """A short path to the directory open as ``fd`` (for as long as ``fd`` is open)."""
    return b"/proc/self/fd/%d" % fd


def through(fd: int, name: bytes) -> bytes:
    """A short path to ``name`` in the directory open as ``fd`` (for as long as ``fd`` is open)."""
    return held(fd) + b"/" + name


def _split(path: bytes) -> tuple[bytes, bytes]:
    """``path`` cut at the last ``/`` that leaves a leading part one call takes."""
    cut = path.rfind(b"/", 1, PATH_MAX - 1)
    if cut < 0:
        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
    return path[:cut], path[cut:].lstrip(b"/")


def open_deep(path: bytes, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
    """``os.open(path, flags, mode, dir_fd=dir_fd)`` for a path of any length.

    Every directory on the way is looked up as the kernel would look up a short path (symlinks on the
    way are followed, ``flags`` apply to the last name only)."""
    if fits(path):
        return os.open(path, flags, mode, dir_fd=dir_fd)
    head, rest = _split(path)
    fd = os.open(head, DIR_PATH, dir_fd=dir_fd)
    try:
        return open_deep(rest, flags, mode, dir_fd=fd)
    finally:
        os.close(fd)


def link_deep(source: bytes, name: bytes, dst_dir_fd: int) -> None:
    """Hard-link the file at ``source`` (a path of any length, not followed) as ``name`` in ``dst_dir_fd``."""
    if fits(source):
        os.link(source, name, dst_dir_fd=dst_dir_fd, follow_symlinks=False)
        return
    head, base = os.path.split(source)
    fd = open_deep(head, DIR_PATH)
    try:
        os.link(base, name, src_dir_fd=fd, dst_dir_fd=dst_dir_fd, follow_symlinks=False)
    finally:
        os.close(fd)
