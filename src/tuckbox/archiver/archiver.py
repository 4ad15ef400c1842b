"""The backup walk: file system -> chunks and trees, handed to a BlobStore.

The archiver depends on the narrow ``BlobStore`` protocol, not on the
repository. It reads each file once (never whole into memory: large files are
streamed through the chunker), skips files the files cache knows are
unchanged, keeps holes as holes, and reports every problem as a warning while
the rest of the snapshot goes on.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from stat import S_ISREG
from operator import itemgetter
from typing import Any, Callable


from ..chunker import Chunker
from ..fsmeta import Owners, SkipEntry, node_from_stat, open_for_backup, read_xattrs
from ..longpath import held, more_descriptors, reason, room_for_children
from ..patterns import Patterns
from ..snapshot.tree import DIR, FILE, INCOMPLETE, Node, RawNode
from ..text import display_path as _display
from ..types import BlobStore, BlobType
from .entries import add_hole, encode_fitting, is_cache_dir, on_the_way, same, whole
from .fastpath import FastPaths
from .files_cache import FilesCache, order_prefix
from .prefetch import Prefetched as _Prefetched
from .prefetch import Prefetcher as _Prefetcher
from .reading import LOST, VANISHED, Piece, Stream, read_chunks, stream_file
from .report import LEAF as _LEAF
from .report import Progress, Summary, path_spec

_first = itemgetter(0)  # a directory's entries are walked in the order of their raw names
VANISHED_SHOWN = 10  # entries of one directory warned about one by one when they vanish mid-walk
_DIR_READ = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _state(st: os.stat_result) -> tuple[int, int, int, int]:
    """What ``same`` compares of a stat."""
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def _replaced(path: bytes) -> str:
    return f"{_display(path)}: replaced by another kind of entry during backup; skipped"


class _Stopped(Exception):
    """Raised inside a file read when the run was asked to stop."""


class Archiver(FastPaths):
    def __init__(
        self,
        store: BlobStore,
        chunker: Chunker,
        files_cache: FilesCache,
        *,
        excludes: list[str] | None = None,
        progress: Progress | None = None,
        one_file_system: bool = False,
        file_systems: set[int] | None = None,
        exclude_caches: bool = False,
        should_stop: Callable[[], bool] | None = None,
        after_entry: Callable[[], None] | None = None,
        skip_dirs: set[tuple[int, int]] | None = None,
    ) -> None:
        self.store = store
        self.chunker = chunker
        self.files_cache = files_cache
        self.excludes = Patterns(excludes)
        self.progress = progress or Progress()
        self.one_file_system = one_file_system
        self.exclude_caches = exclude_caches
        self.should_stop = should_stop or (lambda: False)
        self.owners = Owners()
        self._names: dict[int, str] = {}  # uid -> user name, ~gid -> group name (the walking thread's own)
        self.summary = Summary()
        # (st_dev, st_ino) of a file with several links -> (size, mtime, ctime, content, when it was read)
        self._hardlinks: dict[tuple[int, int], tuple[int, int, int, list[Any], int]] = {}
        self._root_devs: set[int] = set(file_systems or ())  # (those of the paths given: one_file_system)
        self.after_entry = after_entry or (lambda: None)
        self._report_files = type(self.progress).files_unchanged is not Progress.files_unchanged
        self._has_blobs = store.has_blobs
        self._readers: ThreadPoolExecutor | None = ThreadPoolExecutor(2, thread_name_prefix="tuckbox-read")
        # directories being walked, outermost first: (their node in the parent, entries done so far)
        self._stack: list[tuple[Node | None, list[Node | dict[str, Any] | RawNode]]] = []
        self.stopped = False
        self._skip_dirs = skip_dirs or set()  # (st_dev, st_ino) of directories never backed up: tuckbox's own
        self.skipped_own: list[bytes] = []
        # entries gone since their directory was listed, per directory being walked (innermost last)
        self._gone: list[int] = []

    # ------------------------------------------------------------ entry point

    def run(self, paths: list[bytes]) -> bytes:
        """Back up ``paths`` (absolute, normalized); return the root tree id."""
        if sys.getrecursionlimit() < 10000:
            sys.setrecursionlimit(10000)
        more_descriptors()  # the walk holds each directory it is in open: one descriptor per level
        spec = path_spec(paths)
        try:
            if b"/" in paths:
                root = os.lstat(b"/")
                self._root_devs.add(root.st_dev)
                return self._save_dir(b"/", root, None) or self._save_tree([])
            return self._save_virtual(b"/", spec, None)
        finally:
            if self._readers is not None:
                self._readers.shutdown(wait=True, cancel_futures=True)
                self._readers = None

    def partial_tree(self) -> bytes:
        """Store trees for everything completed so far and return the root tree id (for checkpoints)."""
        child: Node | None = None
        root = b""
        for frame_node, nodes in reversed(list(self._stack)):
            entries = list(nodes) + ([child] if child is not None else [])
            tree_id = self._save_tree(entries)
            if frame_node is None:
                root = tree_id
                break
            child = dataclasses.replace(frame_node, subtree=tree_id, warning=INCOMPLETE)  # (it is still being walked)
        return root

    def _warn(self, message: str) -> None:
        self.summary.warnings.append(message)
        self.progress.warning(message)

    def _vanished(self, path: bytes) -> None:
        """An entry listed in the directory being walked is gone: warned one by one up to
        ``VANISHED_SHOWN`` per directory, the rest counted in one line when the directory is done (a
        directory of thousands of files deleted while it was walked)."""
        gone = self._gone
        if gone:
            gone[-1] += 1
            if gone[-1] > VANISHED_SHOWN:
                return
        self._warn(f"{_display(path)}: {VANISHED}")

    def _entry_problem(self, path: bytes, error: str) -> None:
        if error == VANISHED:
            self._vanished(path)
        else:
            self._warn(f"{_display(path)}: {error}")

    def _excluded(self, path: bytes, name: bytes) -> bool:
        return self.excludes.match(path, name)

    # ------------------------------------------------------------ trees

    def _save_tree(self, nodes: list[Node | dict[str, Any] | RawNode], path: bytes = b"") -> bytes:
        data, nodes = encode_fitting(nodes, path, self._warn)
        tree_id = self.store.blob_id(data)
        self.store.add_tree(tree_id, data, nodes)
        return tree_id

    def _save_virtual(self, prefix: bytes, spec: dict[bytes, Any], this: Node | None) -> bytes:
        nodes: list[Node | dict[str, Any] | RawNode] = []
        self._stack.append((this, nodes))
        found: list[tuple[bytes, bytes, os.stat_result, Any]] = []
        for name in sorted(spec):
            path = os.path.join(prefix, name)
            try:
                found.append((path, name, os.lstat(path) if spec[name] is _LEAF else on_the_way(path), spec[name]))
            except OSError as e:
                self._warn(f"{_display(path)}: cannot read: {e.strerror}")
        # the walk order (and so the files cache's order): entries that are not directories first
        found.sort(key=lambda f: (stat.S_ISDIR(f[2].st_mode), f[1]))
        for path, name, st, sub in found:
            if self.should_stop():
                self.stopped = True
                break
            if sub is _LEAF:
                self._root_devs.add(st.st_dev)
                hit = self._unchanged_file(path, st) if stat.S_ISREG(st.st_mode) else None
                if hit is not None and self._report_files:
                    self.progress.files_unchanged(path, 1, st.st_size)
                node = hit if hit is not None else self._save_entry(path, name, st, None, self.files_cache.last_known)
            else:
                node, warnings = node_from_stat(name, path, st, self.owners, at=path + b"/")
                for w in warnings:
                    self._warn(w)
                node.subtree = self._save_virtual(path, sub, node)
                if self.stopped:
                    node.warning = INCOMPLETE
            if node is not None:
                nodes.append(node)
        self._stack.pop()
        return self._save_tree(nodes, prefix)

    def _save_dir(
        self, path: bytes, st: os.stat_result, this: Node | None, at: bytes | None = None, via: bytes | None = None
    ) -> bytes | None:
        """One directory, listed as ``st`` (reached at ``at`` when not at ``path``; at ``via``, through its
        parent's descriptor, when given): its other entries first (read a window ahead: prefetch.py), then
        subdirectories; None (warned) when it is gone or no longer the directory listed.

        It is held open while it is walked, and its listing, its subdirectories and any second look at its
        files go through that descriptor: a directory swapped for a symlink mid-walk (by a user whose home is
        backed up, say, to ``/root/.ssh``) is never followed out of the tree, whose names would then hold
        what is there. Files are first opened at their paths (the fast way) and checked to be the inode
        listed. Entries whose paths could be too long for one system call are all reached through it
        (longpath.py)."""
        try:
            anchor = os.open(via or at or path, _DIR_READ)
        except FileNotFoundError:
            self._vanished(path)
            return None
        except OSError as e:
            if e.errno in (errno.ENOTDIR, errno.ELOOP):
                self._warn(_replaced(path))
                return None
            self._warn(f"{_display(path)}: cannot list directory: {reason(e)}")
            return self._save_tree([])  # (it is there, with its metadata, empty)
        try:
            now = os.fstat(anchor)
            # (another device: something was mounted there meanwhile, an automount triggered by the open,
            # say /boot/efi; what a rename can swap in is on the same device)
            if now.st_dev == st.st_dev and now.st_ino != st.st_ino:
                self._warn(f"{_display(path)}: replaced by another directory during backup; skipped")
                return None
            guard = held(anchor)
            return self._walk_dir(
                path, this, anchor, None if at is None and room_for_children(path) else guard, guard
            )
        finally:
            os.close(anchor)

    def _walk_dir(self, path: bytes, this: Node | None, fd: int, at: bytes | None, guard: bytes) -> bytes:
        self._gone.append(0)
        try:
            return self._walk_listed(path, this, fd, at, guard)
        finally:
            more = self._gone.pop() - VANISHED_SHOWN
            if more > 0:
                self._warn(f"{_display(path)}: {more} more of its entries {VANISHED} (not listed one by one)")

    def _walk_listed(self, path: bytes, this: Node | None, fd: int, at: bytes | None, guard: bytes) -> bytes:
        try:
            # listed (and its entries stat-ed) through the descriptor: names come as str, back to bytes here
            with os.scandir(fd) as it:
                listing = sorted(((os.fsencode(e.name), e) for e in it), key=_first)
        except OSError as e:
            self._warn(f"{_display(path)}: cannot list directory: {reason(e)}")
            listing = []
        files: list[tuple[bytes, bytes, os.stat_result]] = []
        dirs: list[tuple[bytes, bytes, os.stat_result]] = []
        for name, entry in listing:
            child = os.path.join(path, name)
            if self.excludes and self._excluded(child, name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                self._vanished(child)
                continue
            except OSError as e:
                self._warn(f"{_display(child)}: cannot stat: {e.strerror}")
                continue
            (dirs if stat.S_ISDIR(st.st_mode) else files).append((child, name, st))
        # a directory of a million entries: each entry's listing and stat (~1 KiB of objects) goes as soon
        # as it is done with, so what stays until the tree is written is its node alone
        del listing
        nodes: list[Node | dict[str, Any] | RawNode] = []
        self._stack.append((this, nodes))
        # files-cache lookups happen here, in walk order; what must be read is prefetched in parallel
        todo: list[tuple[bytes, bytes, os.stat_result, Any]] = []
        prefix = order_prefix(path)
        if files:
            unchanged = self._unchanged_file
            cache = self.files_cache
            count = size = 0
            last = b""
            for i, (child, name, st) in enumerate(files):
                files[i] = None  # type: ignore[call-overload]
                hit = unchanged(child, st, prefix + name, name) if S_ISREG(st.st_mode) else None
                if hit is not None:
                    nodes.append(hit)
                    count += 1
                    size += st.st_size
                    last = child
                else:
                    if not todo:
                        cache.hold_back(True)  # the records of the files after it wait for its record
                    todo.append((child, name, st, cache.last_known))
            cache.hold_back(False)
            if count and self._report_files:
                self.progress.files_unchanged(last, count, size)
        self.after_entry()
        window = _Prefetcher(
            self._readers, todo, self._start_stream, (self.store.blob_id, self.chunker.params.min_size),
            self._store_chunk, at,
        )
        try:
            small = self._small_file
            for k, (child, name, st, known) in enumerate(todo):
                if self.should_stop():
                    self.stopped = True
                    break
                ahead = window.take(k)
                todo[k] = None  # type: ignore[call-overload]  # (the window never looks back)
                if type(ahead) is _Prefetched:
                    node = small(child, name, st, ahead, known, prefix + name)
                    if node is not None:
                        nodes.append(node)
                        self.after_entry()
                        continue
                try:
                    node = self._save_entry(child, name, st, ahead, known, at and at + b"/" + name, guard + b"/" + name)
                finally:
                    if isinstance(ahead, Stream):
                        ahead.cancel()  # consumed, or not wanted after all: release its reader
                if node is not None:
                    nodes.append(node)
                    self.after_entry()
        finally:
            self.files_cache.drain()  # (before the subdirectories' records)
            window.cancel()
            if at is not None:
                window.settle()
        for child, name, st in dirs:
            if self.should_stop():
                self.stopped = True
                break
            node = self._save_entry(child, name, st, None, False, at and at + b"/" + name, guard + b"/" + name)
            if node is not None:
                nodes.append(node)
                self.after_entry()
        self._stack.pop()
        return self._save_tree(nodes, path)

    def _save_entry(
        self, path: bytes, name: bytes, st: os.stat_result, prefetched: "_Prefetched | Stream | None" = None,
        known: bool = False, at: bytes | None = None, via: bytes | None = None,
    ) -> Node | dict[str, Any] | None:
        """One entry (reached at ``at`` when not at ``path``; ``via``: at its name in its parent's held
        descriptor) as a node, or None with a warning."""
        if stat.S_ISSOCK(st.st_mode):
            return None  # sockets cannot be restored meaningfully; skipped silently
        if self._skip_dirs and stat.S_ISDIR(st.st_mode) and (st.st_dev, st.st_ino) in self._skip_dirs:
            self.skipped_own.append(path)  # the repository itself, or tuckbox's cache: never into itself
            return None
        if isinstance(prefetched, _Prefetched) and prefetched.error is not None:
            if prefetched.lost and via and os.path.lexists(via):
                prefetched, at = None, via  # its path leads nowhere now: look where it was listed
            else:
                self._entry_problem(path, prefetched.error)  # one warning: its metadata is not read either
                return None
        try:
            xattrs = prefetched.xattrs if prefetched is not None else None
            node, warnings = node_from_stat(name, path, st, self.owners, xattrs, via or at)
        except FileNotFoundError:
            self._vanished(path)
            return None
        except OSError as e:
            self._warn(f"{_display(path)}: cannot read: {e.strerror}")
            return None
        except SkipEntry as e:  # changed under us, or an unsupported type
            self._warn(str(e))
            return None
        for w in warnings:
            self._warn(w)
        if node.type == FILE:
            return self._save_file(path, st, node, prefetched, known, at, via)
        if node.type == DIR:
            if (self.one_file_system and st.st_dev not in self._root_devs) or (
                self.exclude_caches and is_cache_dir(via or at or path)
            ):
                node.subtree = self._save_tree([])  # the directory itself, empty
            else:
                subtree = self._save_dir(path, st, node, at, via)
                if subtree is None:
                    return None
                node.subtree = subtree
            self.summary.dirs += 1
            if self.stopped:
                node.warning = INCOMPLETE
            return node
        self.summary.others += 1
        return node

    # ------------------------------------------------------------ files

    def _save_file(
        self, path: bytes, st: os.stat_result, node: Node, prefetched: "_Prefetched | Stream | None" = None,
        known: bool = False, at: bytes | None = None, via: bytes | None = None,
    ) -> Node | dict[str, Any] | None:
        """Read a new or changed file (``known``: the files cache had it, so it changed).

        A second look (the file changed, or the path led to another inode than the one listed) goes
        through ``via``, its name in its directory's held descriptor, when given; a file read there that
        is not the inode listed (replaced by a rename meanwhile: an editor's save) is described as the
        file read, owner and extended attributes included."""
        self.progress.file_started(path, st.st_size)
        link_key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1:
            seen = self._hardlinks.get(link_key)
            if seen is not None and seen[:3] == (st.st_size, st.st_mtime_ns, st.st_ctime_ns):
                self.summary.bytes_total += st.st_size
                node.content = seen[3]
                self._count(known)
                self.progress.bytes_done(st.st_size)
                stored = node.to_map()
                # known to the files cache too: the next run finds this name unchanged (not new, not read)
                self.files_cache.remember(path, st, stored, seen[4])
                return stored
        # a read that ended before the size an unchanged stat claims, as (that stat's state, bytes read):
        # twice alike, it is a pseudo-file (a sysfs attribute says 4096 bytes and holds a few)
        short: tuple[tuple[int, int, int, int], int] | None = None
        for attempt in (0, 1):
            if isinstance(prefetched, Stream):
                # read, chunked and hashed by a reader thread: the same checks as below
                stream, prefetched = prefetched, None
                try:
                    content = self._consume_stream(stream)
                except _Stopped:
                    self.stopped = True
                    return None
                if stream.error is not None:
                    if stream.lost and via:
                        continue  # its path leads nowhere now: read it where it was listed
                    self._entry_problem(path, stream.error)
                    return None
                before, after, read_at, nbytes = stream.before, stream.after, stream.read_at, stream.nbytes
                assert before is not None and after is not None
                stable = same(before, after) and whole(nbytes, after)
                if stable and same(before, st):
                    break
                if same(before, after) and nbytes < after.st_size:
                    short = (_state(after), nbytes)
                now = self._restat(path, via or at)
                if now is None:
                    return None
                st = now
                continue
            if prefetched is not None and prefetched.sparse:
                prefetched = None
            if attempt == 0 and prefetched is not None:
                # read by the reader pool: the same checks as below, on bytes already in memory
                if prefetched.error is not None:
                    self._entry_problem(path, prefetched.error)
                    return None
                after, read_at = prefetched.after, prefetched.read_at
                assert after is not None
                if not stat.S_ISREG(after.st_mode):
                    self._warn(_replaced(path))
                    return None
                if same(st, after) and len(prefetched.data) == after.st_size:
                    try:
                        content = self._consume(prefetched.data, prefetched.chunk_id)
                        nbytes = len(prefetched.data)
                    except _Stopped:
                        self.stopped = True
                        return None
                    break
                if same(st, after) and len(prefetched.data) < after.st_size:
                    short = (_state(after), len(prefetched.data))
                prefetched = None
                st = after
                continue
            read_at = time.time_ns()
            try:
                fd = open_for_backup((via or at or path) if attempt else (at or path))
            except OSError as e:
                if attempt == 0 and via and e.errno in LOST:
                    continue  # its path leads nowhere now: look where it was listed
                if e.errno == errno.ENOENT:
                    self._vanished(path)
                elif e.errno == errno.ELOOP:  # (opened without following: a symlink now)
                    self._warn(_replaced(path))
                else:
                    self._warn(f"{_display(path)}: cannot read: {e.strerror}")
                return None
            try:
                before = os.fstat(fd)
                if not stat.S_ISREG(before.st_mode):
                    self._warn(_replaced(path))
                    return None
                content, nbytes = self._read_content(fd, before)
                after = os.fstat(fd)
                if attempt and (after.st_dev, after.st_ino) != (node.dev, node.inode):
                    node, warnings = node_from_stat(node.name, path, after, self.owners, read_xattrs(path, fd))
                    for w in warnings:
                        self._warn(w)
            except OSError as e:
                self._warn(f"{_display(path)}: read error: {e.strerror}")
                return None
            except _Stopped:
                self.stopped = True
                return None
            finally:
                os.close(fd)
            stable = same(before, after) and whole(nbytes, after)
            if stable and same(before, st):
                break
            if same(before, after) and nbytes < after.st_size:
                if short == (_state(after), nbytes):
                    break  # read short twice alike while nothing changed: all there is to read
                short = (_state(after), nbytes)
            if attempt == 0:
                now = self._restat(path, via or at)
                if now is None:
                    return None
                st = now
                continue
            if not stable:
                node.warning = "changed during backup"
                self._warn(f"{_display(path)}: changed while being read; the stored copy may mix old and new data")
        self._count(known)  # (a file that could not be read is not in the snapshot: not counted)
        self.summary.bytes_total += nbytes  # (what the snapshot holds: a /proc file says size 0)
        # metadata from the state the content was read in
        node.size = nbytes
        node.mtime_ns, node.ctime_ns, node.mode = after.st_mtime_ns, after.st_ctime_ns, stat.S_IMODE(after.st_mode)
        node.content = content
        if node.warning:
            return node
        stored = node.to_map()  # the tree takes the map too: made once
        # a pseudo-file (/proc says size 0, sysfs 4096, whatever they hold) changes with no stat moving:
        # known to the files cache, never trusted by it
        self.files_cache.remember(path, after, stored, read_at, trusted=nbytes == after.st_size)
        if after.st_nlink > 1:
            self._hardlinks[(after.st_dev, after.st_ino)] = (
                after.st_size, after.st_mtime_ns, after.st_ctime_ns, content, read_at
            )
        return stored

    def _count(self, known: bool) -> None:
        """One more file stored, read this run: changed if the files cache knew its name, else new."""
        if known:
            self.summary.files_changed += 1
        else:
            self.summary.files_new += 1

    def _restat(self, path: bytes, at: bytes | None) -> os.stat_result | None:
        """The state of a file that changed while it was read, to read it again; None (warned) if it is
        gone or no longer a regular file."""
        try:
            st = os.lstat(at or path)
        except OSError:
            self._vanished(path)
            return None
        if not stat.S_ISREG(st.st_mode):
            self._warn(_replaced(path))
            return None
        return st

    def _consume(self, data: bytes, chunk_id: bytes | None = None) -> list[Any]:
        """``data`` as chunks (``chunk_id``: its id, already computed, when it is one chunk)."""
        content: list[Any] = []
        if len(data) <= self.chunker.params.min_size:
            if data:
                self._add_piece((chunk_id or self.store.blob_id(data), data), content)
            return content
        for chunk in self.chunker.chunks_of(data):
            self._add_piece((self.store.blob_id(chunk), chunk), content)
        return content

    def _add_piece(self, piece: Piece, content: list[Any]) -> None:
        if isinstance(piece, int):
            add_hole(content, piece)
            return
        if self.should_stop():
            raise _Stopped
        blob_id, chunk = piece
        self.store.add_blob(BlobType.DATA, blob_id, chunk)
        content.append(blob_id)
        self.summary.bytes_read += len(chunk)
        self.progress.bytes_done(len(chunk))

    def _consume_stream(self, stream: Stream) -> list[Any]:
        content: list[Any] = []
        for piece in stream.pieces():
            if isinstance(piece, int) or not isinstance(piece[1], int):
                self._add_piece(piece, content)  # type: ignore[arg-type]
                continue
            # stored by the reader (``_store_chunk``): only the id and length come here
            if self.should_stop():
                raise _Stopped
            blob_id, n = piece
            content.append(blob_id)
            self.summary.bytes_read += n
            self.progress.bytes_done(n)
        if stream.failure is not None:
            raise stream.failure  # storing its chunks failed (e.g. the storage is full): the run cannot go on
        return content

    def _store_chunk(self, blob_id: bytes, chunk: bytes | memoryview) -> None:
        """A large file's chunk, stored from its reader thread (the packer is thread-safe)."""
        self.store.add_blob(BlobType.DATA, blob_id, chunk)

    def _start_stream(self, path: bytes, stream: Stream, at: bytes | None = None) -> None:
        stream_file(path, self.chunker, self.store.blob_id, stream, at)

    def _read_content(self, fd: int, st: os.stat_result) -> tuple[list[Any], int]:
        content: list[Any] = []
        nbytes = read_chunks(fd, st.st_size, self.chunker, self.store.blob_id, lambda p: self._add_piece(p, content))
        return content, nbytes
