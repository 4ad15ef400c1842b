"""Small facts about entries met in the walk: cache directories, holes, and whether two stats are one state."""

from __future__ import annotations

import dataclasses
import os
import stat
from typing import Any, Callable

from ..fsmeta import open_for_backup
from ..snapshot.tree import Node, RawNode, encode_tree
from ..text import display_path

__all__ = ["CACHEDIR_SIGNATURE", "add_hole", "encode_fitting", "fit_times", "is_cache_dir", "on_the_way", "same", "whole"]


CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"


def is_cache_dir(path: bytes) -> bool:
    """Whether a directory is marked as a cache by a ``CACHEDIR.TAG`` file (the Cache Directory Tagging
    Specification: the file begins with its signature), as browsers, build tools and package managers do.

    Only a regular file counts, opened as the backup opens files (a FIFO of that name would block a plain
    open for good, and a symlink may lead to a device whose opening does something)."""
    try:
        fd = open_for_backup(os.path.join(path, b"CACHEDIR.TAG"))
    except OSError:
        return False
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode) and os.pread(fd, len(CACHEDIR_SIGNATURE), 0) == CACHEDIR_SIGNATURE
    except OSError:
        return False
    finally:
        os.close(fd)


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


TIME_MIN, TIME_MAX = -(1 << 63), (1 << 64) - 1  # nanoseconds msgpack holds: the years 1677 to 2554
_TIMES = (("mt", "mtime_ns"), ("at", "atime_ns"), ("ct", "ctime_ns"))


def _fit(t: int) -> int:
    return min(max(t, TIME_MIN), TIME_MAX)


def fit_times(nodes: list[Any]) -> tuple[list[Any], list[bytes]]:
    """``nodes`` (Nodes, maps, RawNodes) with every time outside what a tree can encode set to the nearest
    one it can (a file dated in the year 31690, which tmpfs and btrfs keep), and the names of those changed.
    Only called once encoding failed, so a normal backup pays nothing for it."""
    out: list[Any] = []
    changed: list[bytes] = []
    for n in nodes:
        if type(n) is RawNode:
            out.append(n)
            continue
        if isinstance(n, Node):
            fixed = {attr: _fit(getattr(n, attr)) for _, attr in _TIMES}
            if any(fixed[attr] != getattr(n, attr) for _, attr in _TIMES):
                n = dataclasses.replace(n, **fixed)
                changed.append(n.name)
        else:
            if any(key in n and _fit(n[key]) != n[key] for key, _ in _TIMES):
                n = {k: (_fit(v) if k in ("mt", "at", "ct") else v) for k, v in n.items()}
                changed.append(n["n"])
        out.append(n)
    return out, changed


def encode_fitting(nodes: list[Any], path: bytes, warn: Callable[[str], None]) -> tuple[bytes, list[Any]]:
    """``encode_tree(nodes)``, and the nodes encoded: any time out of range set to the nearest (``fit_times``),
    each such entry of the directory ``path`` named in a warning."""
    try:
        return encode_tree(nodes), nodes
    except OverflowError:  # a time out of range: the only integers in a tree that have no bound
        nodes, names = fit_times(nodes)
        for name in names:
            warn(f"{display_path(os.path.join(path, name))}: a time outside the years 1677-2554 cannot be stored; "
                 "the nearest one was")
        return encode_tree(nodes), nodes
