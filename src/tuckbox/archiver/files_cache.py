"""The files cache: lets a backup skip reading files that have not changed.

Key: the file's path; value: (device, inode, size, mtime_ns, ctime_ns) and the
file's whole tree node as stored last time (its encoded map, content
included). A file whose five values all match is assumed unchanged, provided
every chunk it names is still in the repository index; since every metadata
change (mode, owner, xattrs, ACLs, link count) moves ctime, the stored node is
reused as it is (only a different atime is filled in), with no further
system call.
Files modified within ``RACY_NS`` of being read are never cached (a second
write within the file system's timestamp granularity would be invisible).

Stored as one msgpack file in the repository's local state directory, written
atomically at the end of a successful backup. A damaged cache is discarded.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, Callable

import msgpack

RACY_NS = 1_000_000_000
VERSION = 2

Entry = tuple[int, int, int, int, int, list[Any]]


class FilesCache:
    """The cache, plus an append-only journal of entries learnt since it was last saved.

    The journal (``<path>.journal``) lets a run that dies before saving the
    cache still spare the next run from re-reading the files it finished:
    entries are replayed on load, and every lookup still requires each chunk
    to be in the repository index, so an entry whose data never got stored is
    simply not trusted.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.old: dict[bytes, list[Any]] = {}
        self.new: dict[bytes, list[Any]] = {}
        self._journal: Any = None
        if path is None:
            return
        try:
            doc = msgpack.unpackb(path.read_bytes(), use_list=True)
            if doc.get("v") == VERSION and isinstance(doc.get("files"), dict):
                self.old = doc["files"]
        except (OSError, ValueError, TypeError, AttributeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            self.old = {}
        self._replay()

    @property
    def journal_path(self) -> Path | None:
        return self.path.with_name(self.path.name + ".journal") if self.path else None

    def _replay(self) -> None:
        jp = self.journal_path
        try:
            data = jp.read_bytes() if jp else b""
        except OSError:
            return
        unpacker = msgpack.Unpacker(use_list=True)
        unpacker.feed(data)
        try:
            for rec in unpacker:
                if isinstance(rec, list) and len(rec) == 2 and isinstance(rec[0], bytes) and len(rec[1]) == 6 \
                        and isinstance(rec[1][5], dict):
                    self.old[rec[0]] = rec[1]
        except Exception:  # noqa: BLE001 - a torn tail: keep what was read
            pass

    def flush_journal(self) -> None:
        if self._journal is not None:
            try:
                self._journal.flush()
            except OSError:
                self._journal = None

    def _append(self, path: bytes, entry: list[Any]) -> None:
        jp = self.journal_path
        if jp is None:
            return
        try:
            if self._journal is None:
                self._journal = open(jp, "ab", buffering=256 * 1024)
            self._journal.write(msgpack.packb([path, entry]))
        except OSError:
            self._journal = None

    def lookup(self, path: bytes, st: os.stat_result) -> dict[str, Any] | None:
        e = self.old.get(path)
        if e is None or len(e) != 6:
            return None
        if (e[0], e[1], e[2], e[3], e[4]) != (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns):
            return None
        return e[5] if isinstance(e[5], dict) else None

    def _dirty(self, backed_up: list[bytes]) -> bool:
        """Whether a final save would change anything (an unchanged tree skips the write)."""
        if self._journal is not None or (self.journal_path is not None and self.journal_path.exists()):
            return True
        old = self.old
        for k, v in self.new.items():
            if old.get(k) is not v and old.get(k) != v:
                return True
        prefixes = tuple(p.rstrip(b"/") + b"/" for p in backed_up)
        inside = sum(1 for k in old if k in backed_up or k.startswith(prefixes))
        return inside != len(self.new)

    def keep(self, path: bytes) -> None:
        """The file is unchanged: carry its entry over as it is."""
        self.new[path] = self.old[path]

    def known(self, path: bytes) -> bool:
        return path in self.old

    def remember(self, path: bytes, st: os.stat_result, node_map: dict[str, Any], read_at_ns: int) -> None:
        if max(st.st_mtime_ns, st.st_ctime_ns) >= read_at_ns - RACY_NS:
            return
        entry = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, node_map]
        self.new[path] = entry
        if self.old.get(path) != entry:
            self._append(path, entry)

    def save(self, backed_up: list[bytes], *, durable: Callable[[bytes], bool], final: bool) -> None:
        """Write the cache atomically.

        Only entries whose every chunk is ``durable`` (stored) are written. A
        ``final`` save (after a complete snapshot) drops old entries inside this
        run's paths that were not seen again (deleted files); an intermediate
        save keeps them, so a resumed run still skips unchanged files it had
        not reached yet.
        """
        if self.path is None:
            return
        if final and not self._dirty(backed_up):
            return
        if final:
            prefixes = [p.rstrip(b"/") + b"/" for p in backed_up]
            merged = {
                k: v
                for k, v in self.old.items()
                if k not in backed_up and not any(k.startswith(p) for p in prefixes)
            }
        else:
            merged = dict(self.old)
        for k, v in self.new.items():
            if all(durable(c) for c in v[5].get("c", ()) if isinstance(c, bytes)):
                merged[k] = v
        tmp = self.path.with_name(f".tmp-{secrets.token_hex(6)}")
        try:
            tmp.write_bytes(msgpack.packb({"v": VERSION, "files": merged}))
            os.replace(tmp, self.path)
            if self._journal is not None:
                self._journal.close()
                self._journal = None
            if self.journal_path is not None:
                self.journal_path.unlink(missing_ok=True)  # its entries are in the cache (or not durable)
        except OSError:
            try:
                tmp.unlink()
            except OSError:
                pass
