"""Small facts about entries met in the walk: cache directories, holes, and whether two stats are one state."""

from __future__ import annotations

import os
import stat
from typing import Any

__all__ = ["CACHEDIR_SIGNATURE", "add_hole", "is_cache_dir", "on_the_way", "same", "whole"]


CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"


def is_cache_dir(path: bytes) -> bool:
    """Whether a directory is marked as a cache by a ``CACHEDIR.TAG`` file (the Cache Directory Tagging
    Specification: the file begins with its signature), as browsers, build tools and package managers do."""
    try:
        with open(os.path.join(path, b"CACHEDIR.TAG"), "rb") as f:
            return f.read(len(CACHEDIR_SIGNATURE)) == CACHEDIR_SIGNATURE
    except OSError:
        return False


def add_hole(content: list[Any], length: int) -> None:
    if content and isinstance(content[-1], int):
        content[-1] += length
    else:
        content.append(length)


def whole(nbytes: int, after: os.stat_result) -> bool:
    """Whether reading ``nbytes`` covered the file: its size, or any amount for a file whose size says 0
    before and after (a pseudo-file such as those in /proc, whose size is always 0)."""
    return nbytes == after.st_size or after.st_size == 0


def same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ctime_ns, a.st_ino) == (b.st_size, b.st_mtime_ns, b.st_ctime_ns, b.st_ino)


def on_the_way(path: bytes) -> os.stat_result:
    """The state of a directory on the way to a path to back up (``/home`` for ``/home/ann``).

    A symbolic link there (``/home`` -> ``/data/home``) is described as the
    directory it leads to: the path as typed is what the snapshot holds, and a
    link node cannot hold the entries below it. Read its xattrs at ``path + b"/"``
    (the slash makes the system follow the link).
    """
    st = os.lstat(path)
    return os.stat(path) if stat.S_ISLNK(st.st_mode) else st
