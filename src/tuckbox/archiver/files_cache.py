"""The files cache: lets a backup skip reading files that have not changed.

Key: the file's path; value: (device, inode, size, mtime_ns, ctime_ns) and the
content list stored last time. A file whose five values all match is assumed
unchanged, provided every chunk it names is still in the repository index.
Files modified within ``RACY_NS`` of being read are never cached (a second
write within the file system's timestamp granularity would be invisible).

Stored as one msgpack file in the repository's local state directory, written
atomically at the end of a successful backup. A damaged cache is discarded.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import msgpack

RACY_NS = 1_000_000_000
VERSION = 1

Entry = tuple[int, int, int, int, int, list[Any]]


class FilesCache:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.old: dict[bytes, list[Any]] = {}
        self.new: dict[bytes, list[Any]] = {}
        if path is not None:
            try:
                doc = msgpack.unpackb(path.read_bytes(), use_list=True)
                if doc.get("v") == VERSION and isinstance(doc.get("files"), dict):
                    self.old = doc["files"]
            except (OSError, ValueError, TypeError, AttributeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
                self.old = {}

    def lookup(self, path: bytes, st: os.stat_result) -> list[Any] | None:
        e = self.old.get(path)
        if e is None or len(e) != 6:
            return None
        if (e[0], e[1], e[2], e[3], e[4]) != (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns):
            return None
        return e[5]

    def known(self, path: bytes) -> bool:
        return path in self.old

    def remember(self, path: bytes, st: os.stat_result, content: list[Any], read_at_ns: int) -> None:
        if max(st.st_mtime_ns, st.st_ctime_ns) >= read_at_ns - RACY_NS:
            return
        self.new[path] = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, content]

    def save(self, backed_up: list[bytes]) -> None:
        """Keep old entries outside this run's paths, replace everything inside them."""
        if self.path is None:
            return
        prefixes = [p.rstrip(b"/") + b"/" for p in backed_up]
        merged = {
            k: v
            for k, v in self.old.items()
            if k not in backed_up and not any(k.startswith(p) for p in prefixes)
        }
        merged.update(self.new)
        tmp = self.path.with_name(f".tmp-{secrets.token_hex(6)}")
        try:
            tmp.write_bytes(msgpack.packb({"v": VERSION, "files": merged}))
            os.replace(tmp, self.path)
        except OSError:
            try:
                tmp.unlink()
            except OSError:
                pass
