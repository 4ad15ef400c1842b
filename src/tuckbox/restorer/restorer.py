"""Restore: plan by pack, fetch each pack's needed range once, write files in parallel.

Order: directories (owner-writable for now), then empty files of the right
size (holes stay holes: only data chunks are written), symlinks, special files
and hardlinks; then every pack's blobs are decrypted, verified against their
ids and written with pwrite by a pool of threads; then file metadata; and
directory metadata last, deepest first, so directory mtimes survive.

A restore into a directory holding ``.tuckbox-restore`` for the same snapshot
is a resumed restore: files whose size and every chunk hash already match are
not written again. The marker is removed when the restore completes.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import IntegrityError, PermanentError, TargetExists, TuckboxError, UsageError
from ..fsmeta import apply_metadata, create_special
from ..snapshot.model import Snapshot
from ..snapshot.tree import BLOCKDEV, CHARDEV, DIR, FIFO, FILE, SYMLINK, Node, decode_tree
from ..types import BlobType, ObjectType

MARKER = b".tuckbox-restore"
_TARGET_WIDE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}  # write errors that are about the target, not a file
GAP = 1 << 20  # fetch across gaps smaller than this rather than issue another request


class RestoreProgress:
    def bytes_done(self, n: int) -> None:  # noqa: D102
        pass

    def warning(self, message: str) -> None:  # noqa: D102
        pass


@dataclass
class RestoreResult:
    files: int = 0
    dirs: int = 0
    others: int = 0
    bytes_written: int = 0
    files_skipped: int = 0  # already correct (resumed restore)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class _Dest:
    """``dest[i]``: where entry i is restored (computed when asked, so 200k paths are not all held)."""

    __slots__ = ("target", "entries")

    def __init__(self, target: bytes, entries: list[tuple[bytes, Node]]) -> None:
        self.target = target
        self.entries = entries

    def __getitem__(self, i: int) -> bytes:
        return os.path.join(self.target, self.entries[i][0].lstrip(b"/"))


def _display(path: bytes) -> str:
    return os.fsdecode(path).encode("utf-8", "backslashreplace").decode("utf-8")


def _matches(path: bytes, patterns: list[bytes]) -> bool:
    name = os.path.basename(path)
    return any(fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def select(entries: list[tuple[bytes, Node]], includes: list[str], excludes: list[str]) -> list[tuple[bytes, Node]]:
    if not includes and not excludes:
        return entries
    inc = [os.fsencode(p).rstrip(b"/") or b"/" for p in includes]
    exc = [os.fsencode(p).rstrip(b"/") or b"/" for p in excludes]
    chosen: set[bytes] = set()
    excluded_dirs: list[bytes] = []
    included_dirs: list[bytes] = []
    for path, node in entries:  # parents come before children
        if any(path.startswith(d + b"/") for d in excluded_dirs):
            continue
        if exc and _matches(path, exc):
            if node.type == DIR:
                excluded_dirs.append(path)
            continue
        if inc:
            inside = any(path.startswith(d + b"/") for d in included_dirs)
            if not inside and not _matches(path, inc):
                continue
            if node.type == DIR:
                included_dirs.append(path)
        chosen.add(path)
        parent = os.path.dirname(path)
        while parent != b"/" and parent not in chosen:
            chosen.add(parent)
            parent = os.path.dirname(parent)
    return [(p, n) for p, n in entries if p in chosen]


class Restorer:
    def __init__(self, repo: Any, progress: RestoreProgress | None = None, connections: int = 4) -> None:
        self.repo = repo
        self.progress = progress or RestoreProgress()
        self.connections = connections
        self.result = RestoreResult()
        self._lock = threading.Lock()
        self._damaged: set[int] = set()
        self._opened: set[int] = set()

    def _warn(self, msg: str) -> None:
        self.result.warnings.append(msg)
        self.progress.warning(msg)

    def restore(
        self,
        snap: Snapshot,
        target: bytes,
        includes: list[str] | None = None,
        excludes: list[str] | None = None,
        numeric_owner: bool = False,
    ) -> RestoreResult:
        target = os.path.abspath(target)
        marker = os.path.join(target, MARKER)
        resume = False
        if os.path.lexists(target):
            if not os.path.isdir(target) or os.path.islink(target):
                raise TargetExists(f"restore target {_display(target)} exists and is not a directory; choose a new one")
            existing = os.listdir(target)
            if existing:
                try:
                    with open(marker, "rb") as f:
                        resume = f.read().strip() == snap.id.encode()
                except OSError:
                    resume = False
                if not resume:
                    raise TargetExists(
                        f"restore target {_display(target)} exists and is not empty; choose a new directory "
                        "(a restore interrupted into it resumes only for the same snapshot)"
                    )
        try:
            os.makedirs(target, exist_ok=True)
            with open(marker, "wb") as f:
                f.write(snap.id.encode() + b"\n")
        except OSError as e:
            raise TuckboxError(f"cannot write to restore target {_display(target)}: {e.strerror}") from None

        # a damaged directory listing costs what is below it, not the whole restore (the root's costs all)
        unreadable: dict[bytes, str] = {}
        entries: list[tuple[bytes, Node]] = []

        def visit(tree_id: bytes, prefix: bytes) -> None:
            try:
                nodes = decode_tree(self.repo.load_blob(BlobType.TREE, tree_id))
            except TuckboxError as e:
                if prefix == b"/":
                    raise
                unreadable[prefix] = str(e)
                return
            for node in nodes:
                path = os.path.join(prefix, node.name)
                node.ctime_ns = 0  # not restorable; dropping it (and inodes outside hardlink groups) saves memory
                if node.nlink <= 1 or node.type != FILE:
                    node.inode = node.dev = 0
                entries.append((path, node))
                if node.type == DIR and node.subtree:
                    visit(node.subtree, path)

        visit(snap.tree, b"/")
        entries = select(entries, includes or [], excludes or [])
        if (includes or excludes) and not entries:
            raise UsageError("no entries in the snapshot match the --include/--exclude patterns")
        for path, _ in entries:
            if path in unreadable:
                self.result.errors.append(f"{_display(path)}: contents not restored: directory listing damaged: {unreadable[path]}")
                self.progress.warning(self.result.errors[-1])

        dest = _Dest(target, entries)  # target paths made on demand, not held for every entry
        files: list[int] = []
        links: dict[tuple[int, int], int] = {}
        hardlinked: list[tuple[int, int]] = []
        for i, (path, node) in enumerate(entries):
            try:
                if node.type == DIR:
                    os.makedirs(dest[i], mode=0o700, exist_ok=True)
                    self.result.dirs += 1
                    continue
                if node.type == FILE and node.nlink > 1 and node.inode:
                    first = links.setdefault((node.dev, node.inode), i)
                    if first != i:
                        hardlinked.append((i, first))
                        continue
                lazy = node.type == FILE and not resume and any(isinstance(c, bytes) for c in node.content)
                if not lazy:  # files with data are created by their first write (one open instead of two)
                    self._create(dest[i], node, resume)
                if node.type == FILE:
                    files.append(i)
                    self.result.files += 1
                else:
                    self.result.others += 1
            except OSError as e:
                self._warn(f"{_display(path)}: cannot create: {e.strerror}")
        skip: set[int] = set()
        if resume:
            skip = {i for i in files if self._already_restored(dest[i], entries[i][1])}
            self.result.files_skipped = len(skip)
        self._write_data([i for i in files if i not in skip], entries, dest)
        for i in files:
            if i in self._damaged:
                try:
                    os.unlink(dest[i])
                except OSError:
                    pass
        for i, first in hardlinked:
            if first in self._damaged:
                continue
            try:
                if os.path.lexists(dest[i]):
                    os.unlink(dest[i])
                os.link(dest[first], dest[i])
                self.result.files += 1
            except OSError as e:
                self._warn(f"{_display(entries[i][0])}: cannot create hardlink: {e.strerror}")
        # metadata: everything but directories, then directories deepest first
        for i, (path, node) in enumerate(entries):
            if node.type != DIR and i not in self._damaged and os.path.lexists(dest[i]):
                for w in apply_metadata(dest[i], node, numeric_owner=numeric_owner):
                    self._warn(w)
        dirs = [i for i, (_, n) in enumerate(entries) if n.type == DIR]
        for i in sorted(dirs, key=lambda k: dest[k].count(b"/"), reverse=True):
            for w in apply_metadata(dest[i], entries[i][1], numeric_owner=numeric_owner):
                self._warn(w)
        if not self.result.errors:
            try:
                os.unlink(marker)
            except OSError:
                pass
        return self.result

    def _create(self, path: bytes, node: Node, resume: bool) -> None:
        if resume and os.path.lexists(path):
            st = os.lstat(path)
            if node.type == FILE and stat.S_ISREG(st.st_mode):
                return
            if stat.S_ISDIR(st.st_mode):
                raise OSError(21, "a directory is in the way")
            os.unlink(path)
        if node.type == FILE:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                os.ftruncate(fd, node.size)
            finally:
                os.close(fd)
        elif node.type == SYMLINK:
            os.symlink(node.link_target, path)
        elif node.type in (FIFO, CHARDEV, BLOCKDEV):
            for w in create_special(path, node):
                self._warn(w)

    def _chunks(self, node: Node) -> list[tuple[bytes | None, int, int]]:
        """(blob id or None for a hole, offset in file, length)."""
        out: list[tuple[bytes | None, int, int]] = []
        pos = 0
        for item in node.content:
            if isinstance(item, int):
                out.append((None, pos, item))
                pos += item
                continue
            length = self.repo.index.raw_length(item) or 0
            out.append((item, pos, length))
            pos += length
        return out

    def _already_restored(self, path: bytes, node: Node) -> bool:
        try:
            if os.lstat(path).st_size != node.size:
                return False
            with open(path, "rb") as f:
                for blob_id, off, length in self._chunks(node):
                    f.seek(off)
                    data = f.read(length)
                    if len(data) != length:
                        return False
                    if blob_id is None:
                        if data.count(0) != length:
                            return False
                    elif self.repo.blob_id(data) != blob_id:
                        return False
            return True
        except OSError:
            return False

    def _write_data(self, files: list[int], entries: list[tuple[bytes, Node]], dest: list[bytes]) -> None:
        # blob id -> [(file index, offset)]; pack name -> blob ids
        # blob id -> its targets as a flat list [file index, offset, file index, offset, ...]
        wants: dict[bytes, list[int]] = {}
        by_pack: dict[str, list[bytes]] = {}  # pack name -> blob ids (locations looked up per pack)
        index = self.repo.index
        for i in files:
            node = entries[i][1]
            for blob_id, off, _ in self._chunks(node):
                if blob_id is None:
                    continue
                targets = wants.get(blob_id)
                if targets is None:
                    loc = index.lookup(blob_id)
                    if loc is None:
                        self._fail_file(i, entries, f"data blob {blob_id.hex()[:8]} is missing from the repository")
                        continue
                    targets = wants[blob_id] = []
                    by_pack.setdefault(loc.pack.name, []).append(blob_id)
                targets += (i, off)

        def do_pack(ids: list[bytes]) -> None:
            locs = [index.lookup(b) for b in ids]
            locs.sort(key=lambda loc: loc.entry.offset)
            groups: list[list[Any]] = [[locs[0]]]
            for loc in locs[1:]:
                prev = groups[-1][-1].entry
                if loc.entry.offset - (prev.offset + prev.length) < GAP:
                    groups[-1].append(loc)
                else:
                    groups.append([loc])
            for group in groups:
                start = group[0].entry.offset
                end = group[-1].entry.offset + group[-1].entry.length
                try:
                    data = self.repo.backend.load(ObjectType.PACK, group[0].pack.name, start, end - start)
                except PermanentError:
                    raise  # the storage itself is unusable (gone, no access): stop; a rerun resumes
                except TuckboxError as e:
                    for loc in group:
                        self._fail_blob(loc.entry.id, wants, entries, f"cannot read pack {loc.pack.name[:8]}: {e}")
                    continue
                view = memoryview(data)
                for loc in group:
                    e = loc.entry
                    try:
                        if e.offset + e.length - start > len(data):
                            raise IntegrityError(f"pack {loc.pack.name[:8]} is truncated")
                        plain = self.repo.open_blob(loc.pack, e, view[e.offset - start : e.offset - start + e.length])
                    except TuckboxError as err:
                        self._fail_blob(e.id, wants, entries, str(err))
                        continue
                    targets = wants[e.id]
                    for i, off in zip(targets[::2], targets[1::2]):
                        if i in self._damaged:
                            continue
                        try:
                            with self._lock:
                                first = i not in self._opened
                                self._opened.add(i)
                            fd = os.open(dest[i], os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                            try:
                                content = entries[i][1].content
                                if first and isinstance(content[-1], int):  # a trailing hole: set the size
                                    os.ftruncate(fd, entries[i][1].size)  # idempotent: writes lie within it
                                os.pwrite(fd, plain, off)
                            finally:
                                os.close(fd)
                        except OSError as err:
                            if err.errno in _TARGET_WIDE:  # every other file would fail the same way: stop
                                raise TuckboxError(
                                    f"cannot write to the restore target ({_display(dest[i])}): {err.strerror}; "
                                    "make room (or make it writable) and run the same restore again to resume"
                                ) from None
                            self._fail_file(i, entries, f"cannot write: {err.strerror}")
                            continue
                        with self._lock:
                            self.result.bytes_written += len(plain)
                        self.progress.bytes_done(len(plain))

        with ThreadPoolExecutor(self.connections) as pool:
            for _ in pool.map(do_pack, by_pack.values()):
                pass

    def _fail_blob(self, blob_id: bytes, wants: dict[bytes, list[int]], entries: list[tuple[bytes, Node]], why: str) -> None:
        for i in wants.get(blob_id, [])[::2]:
            self._fail_file(i, entries, why)

    def _fail_file(self, i: int, entries: list[tuple[bytes, Node]], why: str) -> None:
        with self._lock:
            if i in self._damaged:
                return
            self._damaged.add(i)
            self.result.errors.append(f"{_display(entries[i][0])}: not restored: {why}")
        self.progress.warning(self.result.errors[-1])


def dump_file(repo: Any, node: Node, write: Callable[[bytes], Any]) -> int:
    """Write a file node's content (holes as zeros) through ``write``; return bytes written."""
    total = 0
    for item in node.content:
        if isinstance(item, int):
            left = item
            while left:
                n = min(left, 1 << 20)
                write(bytes(n))
                left -= n
            total += item
        else:
            data = repo.load_blob(BlobType.DATA, item)
            write(data)
            total += len(data)
    return total
