"""Writing one window of files: plan its blobs by pack, fetch, decrypt and verify them, write, set metadata.

A window is a bounded run of data-bearing files in walk order (which is about
backup order, so a window needs a contiguous slice of a few packs), given as
raw tree entries (maps; see ``snapshot.tree``). Its blobs are fetched range by
range (``fetch``); every blob is decrypted, checked against its id and
written at each of its offsets. A file is created (truncated, when resuming)
by its first write through a descriptor that stays open until its last blob
is in; it then gets its metadata through that descriptor and is closed. The
common small file costs four system calls: open, write, utimensat, close.

Blobs of at least ``DIRECT_MIN`` bytes are written with ``O_DIRECT`` for their
block-aligned middle where the target's file system allows (copied into one
reused aligned buffer first; ``tuckbox.directio``), the unaligned ends through
the page cache: writing a large file's bytes into fresh page-cache pages cost
more system time than all the decryption and decompression of a restore.

This is the per-file hot path of a restore; it reads entry fields straight
from the maps and makes a ``Node`` only for files that need more than times.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import msgpack

from .. import directio
from ..errors import IntegrityError, TuckboxError
from ..longpath import fits, open_deep, through
from ..snapshot.tree import Node
from ..text import display_path as display
from .fetch import BlobCache, Fetch, Fetcher, ranges
from .meta import Meta, file_mode

_TARGET_WIDE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}  # write errors that are about the target, not a file
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
_REOPEN = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_BACK = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NOATIME", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
DIRECT_MIN = 512 << 10  # blobs this large are written with O_DIRECT (their aligned part) where possible
_MALFORMED = (TuckboxError, TypeError, ValueError, KeyError, AttributeError, OverflowError)




def target_wide(err: OSError, path: bytes) -> None:
    """Raise for an error every other entry would hit too (full disk, read-only file system): stop the restore."""
    if err.errno in _TARGET_WIDE:
        raise TuckboxError(
            f"cannot write to the restore target ({display(path)}): {err.strerror}; "
            "make room (or make it writable) and run the same restore again to resume"
        ) from None


@dataclass(slots=True, eq=False)
class Dir:
    """A directory of the snapshot on its way to the target; ``fd`` is open from creation until its metadata is set."""

    path: bytes  # in the snapshot; b"" for the root
    node: Node | None  # None for the root
    parent: "Dir | None"
    inside: bool = False  # inside a directory that --include matched
    fd: int = -1
    failed: bool = False  # could not be created: what is below it is skipped
    created: bool = False  # made by this run (not found from an interrupted one)
    late: bool = False  # its metadata waits for the end of the restore
    ident: tuple[int, int] = (0, 0)  # (st_dev, st_ino) of the directory opened as ``fd``

    def open_at(self, parent_fd: int, name: bytes) -> None:
        """Open the directory ``name`` in ``parent_fd`` as ``fd`` (never following a symlink); note what it is."""
        self.fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        st = os.fstat(self.fd)
        self.ident = (st.st_dev, st.st_ino)

    def child(self, name: bytes) -> bytes:
        return self.path + b"/" + name


@dataclass(slots=True, eq=False)
class Window:
    id: int
    files: list[tuple[Dir, dict[str, Any]]] = field(default_factory=list)  # raw tree entries of files with data
    nbytes: int = 0
    firsts: list[tuple[int, "LinkGroup"]] = field(default_factory=list)  # slots that start a hardlink group
    failed: set[int] = field(default_factory=set)
    future: Any = None
    # blobs an earlier window wrote into a file: blob id -> (that file's path in the snapshot, offset, length,
    # the earlier window's id); read back from the target instead of fetched again (``LocalCopies``)
    copies: dict[bytes, tuple[bytes, int, int, int]] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class LinkGroup:
    """A hardlink group: the entry that holds the data (``name`` in ``dir``) and what became of it."""

    path: bytes  # full target path of the entry that holds the data
    dir: Dir
    name: bytes
    state: int = 0  # PENDING, DONE or FAILED
    ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the restored entry, once DONE

    def note(self) -> None:
        """Record what the restored entry is (while its directory is open): a link made later by its path
        must lead to it (a directory on the way may have been replaced by a symlink meanwhile)."""
        try:
            st = os.stat(self.name, dir_fd=self.dir.fd, follow_symlinks=False)
            self.ident = (st.st_dev, st.st_ino)
        except OSError:
            self.ident = None


PENDING, DONE, FAILED = 0, 1, 2


def link_key(m: dict[str, Any]) -> tuple[int, int, int, bytes]:
    """The hardlink group of a file entry: the (device, inode) the backup saw, and the contents it read. Entries
    of one inode read with different contents (it was written to between them) are not linked to one another:
    each is restored with the bytes its entry holds."""
    content = hashlib.blake2b(msgpack.packb(m.get("c", [])), digest_size=16).digest()
    return (m.get("d", 0), m["i"], m.get("s", 0), content)


def copy_for_link(group: LinkGroup, dst_fd: int, name: bytes, err: OSError) -> bool:
    """Make ``name`` in ``dst_fd`` a copy of the restored holder of ``group`` (its bytes, mode, owner and
    times) where the target refused the hardlink with ``err``: vfat and exFAT have none (EPERM), a file at
    the file system's link limit gets no more (EMLINK). False for any other error (the caller reports it)."""
    if err.errno not in _NO_LINK:
        return False
    if group.dir.fd >= 0:
        src = os.open(group.name, _READ_BACK, dir_fd=group.dir.fd)
    else:
        src = open_deep(group.path, _READ_BACK)
    try:
        st = os.fstat(src)
        if group.ident is not None and group.ident != (st.st_dev, st.st_ino):
            raise OSError(errno.ESTALE, "the file it links to was replaced during the restore")
        dst = os.open(name, _CREATE, file_mode(st.st_mode), dir_fd=dst_fd)
        try:
            while chunk := os.read(src, 1 << 20):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(dst, view):]
            try:
                os.fchown(dst, st.st_uid, st.st_gid)
            except OSError:
                pass  # (the holder's owner could be set, so this one only fails where that did: said there)
            os.fchmod(dst, stat.S_IMODE(st.st_mode))
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(dst)
    finally:
        os.close(src)
    return True


# a metadata warning that most likely repeats for every entry: the target's file system lacks what the snapshot
# holds (no xattrs or ACLs on vfat, ramfs, many FUSE and network file systems; owners on vfat or a root-squashed
# NFS export). Group: the phrase ("cannot restore extended attribute") and the system's reason.
_ALIKE = re.compile(
    r": (cannot (?:restore extended attribute|restore ACL|set owner|set mode|set times|hard-link, made a copy of))"
    r"(?: .*?)?: ([^:]+)$"
)
_NO_LINK = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}  # link() the target refuses


def warning_kind(msg: str) -> tuple[str, str] | None:
    """The kind of a per-entry metadata warning (its phrase and reason), or None for any other warning."""
    m = _ALIKE.search(msg)
    return (m.group(1), m.group(2)) if m else None


class Report:
    """Counters, warnings and errors shared by the threads of one restore.

    A metadata warning of a kind seen before (``warning_kind``: the same thing failing for the same reason,
    as every file's xattrs do on a file system without them) is counted, not shown again: ``finish`` says
    how many more times each kind came, so a restore of 100,000 files onto vfat says it in a few lines."""

    def __init__(self, result: Any, progress: Any) -> None:
        self.result = result
        self.progress = progress
        self.lock = threading.Lock()
        self.alike: dict[tuple[str, str], int] = {}  # kind -> warnings after the first, not shown

    def warn(self, msg: str) -> None:
        kind = warning_kind(msg)
        with self.lock:
            if kind is not None:
                if kind in self.alike:
                    self.alike[kind] += 1
                    return
                self.alike[kind] = 0
            self.result.warnings.append(msg)
        self.progress.warning(msg)

    def finish(self) -> None:
        """Say how many more times each kind of repeated metadata warning came."""
        with self.lock:
            counts = [(kind, n) for kind, n in self.alike.items() if n]
            self.alike = {kind: 0 for kind in self.alike}
        for (what, reason), n in counts:
            hint = (" (the target's file system does not support them)"
                    if reason in (os.strerror(errno.EOPNOTSUPP), os.strerror(errno.ENOTSUP)) else "")
            msg = f"{what.removesuffix(' of')}: {reason}, {n} more time{'s' if n > 1 else ''} (not listed one by one){hint}"
            with self.lock:
                self.result.warnings.append(msg)
            self.progress.warning(msg)

    def error(self, msg: str) -> None:
        with self.lock:
            self.result.errors.append(msg)
        self.progress.error(msg)

    def written(self, n: int) -> None:
        """Bytes written, as they go (progress; some may be in a file that then fails)."""
        self.progress.bytes_done(n)

    def kept(self, n: int) -> None:
        """Bytes written into files that were restored (the summary's)."""
        with self.lock:
            self.result.bytes_written += n

    def skipped(self) -> None:
        with self.lock:
            self.result.files_skipped += 1

    def read_back(self, n: int) -> None:
        with self.lock:
            self.result.bytes_read_back += n


class _Job:
    """The state of one window while it is written (one thread)."""

    __slots__ = ("w", "files", "left", "wrote", "kept", "fds", "opened", "done", "wants", "cached", "fetch")

    def __init__(self, w: Window) -> None:
        self.w = w
        self.files = w.files
        self.left = [0] * len(w.files)  # blob writes still due per file
        self.wrote = [0] * len(w.files)  # bytes written per file
        self.kept = 0  # bytes of the files restored
        self.fds: dict[int, int] = {}
        self.opened: set[int] = set()
        self.done = 0  # bytes written since the last progress report
        self.wants: dict[bytes, list[Any]] = {}  # blob id -> [location, slot, offset, slot, offset, ...]
        self.cached: list[tuple[bytes, list[Any]]] = []  # (data, targets) of blobs found in the cache
        self.fetch: Fetch | None = None


class WindowWriter:
    def __init__(
        self, repo: Any, meta: Meta, cache: BlobCache, fetcher: Fetcher, report: Any, target: bytes, resume: bool,
        done_upto: Callable[[], int] = lambda: -1,
    ) -> None:
        self.repo = repo
        self.meta = meta
        self.cache = cache
        self.fetcher = fetcher
        self.report = report
        self.target = target
        self.resume = resume
        self.direct = directio.worth_it(target)
        self._stage = directio.Staging()
        self.done_upto = done_upto  # windows up to this id are complete: their files may be read back

    def run(self, w: Window) -> None:
        self.write(self.prepare(w))

    def prepare(self, w: Window, eager: bool = False) -> _Job:
        """Plan a window: where each blob goes, which are cached, which ranges to fetch (``eager``: ask now)."""
        job = _Job(w)
        lookup = self.repo.index.lookup
        wants = job.wants
        left = job.left
        failed = w.failed
        for slot, (d, m) in enumerate(job.files):
            if slot in failed or self.resume and self._keep_existing(job, slot):
                continue
            pos = n = 0
            try:
                for item in m["c"]:
                    if type(item) is int:
                        pos += item
                        continue
                    targets = wants.get(item)
                    if targets is None:
                        loc = lookup(item)
                        if loc is None:
                            self._fail(job, slot, f"data blob {item.hex()[:8]} is missing from the repository")
                            n = 0
                            break
                        targets = wants[item] = [loc]
                    targets += (slot, pos)
                    pos += targets[0].entry.raw_length
                    n += 1
            except _MALFORMED:
                self._fail(job, slot, "its tree entry is malformed")
                n = 0
            left[slot] = n
        by_pack: dict[str, list[Any]] = {}  # pack name -> locations
        cache = self.cache
        copies = w.copies
        done = self.done_upto() if copies else -1
        for blob_id, targets in wants.items():
            data = cache.get(blob_id)
            if data is None and copies:
                source = copies.get(blob_id)
                if source is not None and source[3] <= done:
                    data = self._read_back(blob_id, source)
            if data is None:
                loc = targets[0]
                locs = by_pack.get(loc.pack.name)
                if locs is None:
                    by_pack[loc.pack.name] = [loc]
                else:
                    locs.append(loc)
            else:
                job.cached.append((data, targets))
        job.fetch = self.fetcher.start([g for locs in by_pack.values() for g in ranges(locs, self.fetcher.gap)], eager)
        return job

    def _read_back(self, blob_id: bytes, source: tuple[bytes, int, int, int]) -> bytes | None:
        """A blob an earlier window wrote into a file of this restore, read back from that file and checked
        against its id (the file may have failed, been removed or changed since): None means fetch it."""
        path, offset, length = source[0], source[1], source[2]
        try:
            # the file's restored atime must stay: only where reading cannot move it (the file is ours)
            fd = open_deep(self.target + path, _READ_BACK)
        except OSError:
            return None
        try:
            before = os.fstat(fd)
            data = os.pread(fd, length, offset)
            while 0 < len(data) < length:
                more = os.pread(fd, length - len(data), offset + len(data))
                if not more:
                    break
                data += more
            if os.fstat(fd).st_atime_ns != before.st_atime_ns:  # a file system that ignores O_NOATIME
                os.utime(fd, ns=(before.st_atime_ns, before.st_mtime_ns))
        except OSError:
            return None
        finally:
            os.close(fd)
        if len(data) != length or self.repo.blob_id(data) != blob_id:
            return None
        self.report.read_back(length)
        return data

    def write(self, job: _Job) -> None:
        """Write a prepared window."""
        try:
            self._write(job)
        finally:
            if job.fetch is not None:
                job.fetch.cancel()
            for slot in list(job.fds):  # only left open when the restore stops part-way
                self._fail(job, slot, "", quiet=True)
            if job.kept:
                self.report.kept(job.kept)

    def _write(self, job: _Job) -> None:
        cached, job.cached = job.cached, []
        for data, targets in cached:
            self._deliver(job, data, targets)
        wants, cache, open_blob = job.wants, self.cache, self.repo.open_blob
        assert job.fetch is not None
        for group, data in job.fetch:
            pack = group[0].pack
            if isinstance(data, TuckboxError):
                for loc in group:
                    self._fail_blob(job, wants[loc.entry.id], f"cannot read pack {pack.name[:8]}: {data}")
                continue
            start = group[0].entry.offset
            view = memoryview(data)
            for loc in group:
                e = loc.entry
                targets = wants[e.id]
                begin = e.offset - start
                try:
                    if begin + e.length > len(data):
                        raise IntegrityError(f"pack {pack.name[:8]} is truncated")
                    plain = open_blob(pack, e, view[begin : begin + e.length])
                except TuckboxError as err:
                    self._fail_blob(job, targets, str(err))
                    continue
                cache.put(e.id, plain)
                self._deliver(job, plain, targets)
            if job.done >= 1 << 20:
                self.report.written(job.done)
                job.done = 0
        if job.done:
            self.report.written(job.done)

    def _deliver(self, job: _Job, data: bytes, targets: list[Any]) -> None:
        """Write ``data`` at each (slot, offset) of ``targets[1:]``; finish files that are complete."""
        failed, left, fds = job.w.failed, job.left, job.fds
        for k in range(1, len(targets), 2):
            slot = targets[k]
            if slot in failed:
                continue
            try:
                fd = fds.get(slot)
                if fd is None:
                    d, m = job.files[slot]
                    if slot in job.opened:
                        fd = os.open(m["n"], _REOPEN, dir_fd=d.fd)
                    else:
                        fd = os.open(m["n"], _CREATE, file_mode(m.get("m", 0)), dir_fd=d.fd)
                        job.opened.add(slot)
                    fds[slot] = fd
                off = targets[k + 1]
                if self.direct and len(data) >= DIRECT_MIN:
                    self._write_large(fd, data, off)
                else:
                    n = os.pwrite(fd, data, off)
                    if n != len(data):
                        _write_rest(fd, data, off, n)
                job.done += len(data)
                job.wrote[slot] += len(data)
                left[slot] -= 1
                if not left[slot]:
                    self._finish(job, slot)
            except OSError as err:
                d, m = job.files[slot]
                target_wide(err, self.target + d.child(m["n"]))
                self._fail(job, slot, f"cannot write: {err.strerror}")

    def _write_large(self, fd: int, data: bytes, off: int) -> None:
        """``data`` at ``off``: the block-aligned middle with O_DIRECT, the ends (partial blocks) buffered.

        A partial block is only ever written through the page cache (by this
        blob and by its neighbour), and the direct writes cover whole blocks
        no buffered write touches, so the two never overlap.
        """
        end = off + len(data)
        a = -(-off // directio.ALIGN) * directio.ALIGN
        b = end // directio.ALIGN * directio.ALIGN
        view = memoryview(data)
        if b - a < directio.ALIGN:  # not one whole block: nothing to gain
            directio.pwrite_all(fd, view, off)
            return
        with self._stage.view(view, a - off, b - a) as staged:
            direct = directio.write_direct(fd, staged, a)
        if not direct:
            self.direct = False  # refused here: the rest of the restore writes buffered
            directio.pwrite_all(fd, view, off)
            return
        if a > off:
            directio.pwrite_all(fd, view[: a - off], off)
        if end > b:
            directio.pwrite_all(fd, view[b - off :], b)

    def _finish(self, job: _Job, slot: int) -> None:
        """The file's data is all in: its size (a trailing hole), then its metadata; close it."""
        fd = job.fds.pop(slot)
        d, m = job.files[slot]
        warnings: list[str] = []
        malformed = False
        try:
            if type(m["c"][-1]) is int:
                os.ftruncate(fd, m.get("s", 0))
            if self.meta.plain(m):
                try:
                    os.utime(fd, ns=(m.get("at", 0), m.get("mt", 0)))
                except OSError as e:
                    warnings.append(f"{display(self.target + d.child(m['n']))}: cannot set times: {e.strerror}")
            else:
                node = Node.from_map(m)
                created = self.meta.created(file_mode(node.mode))
                warnings = self.meta.apply(fd, node, self.target + d.child(m["n"]), created)
        except _MALFORMED:
            malformed = True
        finally:
            os.close(fd)
        if malformed:
            self._fail(job, slot, "its tree entry is malformed")
        else:
            job.kept += job.wrote[slot]
        for w in warnings:
            self.report.warn(w)

    def _fail_blob(self, job: _Job, targets: list[Any], why: str) -> None:
        for k in range(1, len(targets), 2):
            self._fail(job, targets[k], why)

    def _fail(self, job: _Job, slot: int, why: str, quiet: bool = False) -> None:
        """The file in ``slot`` is not restored: nothing of it is left behind."""
        if slot in job.w.failed:
            return
        job.w.failed.add(slot)
        d, m = job.files[slot]
        fd = job.fds.pop(slot, None)
        if fd is not None:
            os.close(fd)
        try:
            os.unlink(m["n"], dir_fd=d.fd)
        except OSError:
            pass
        if not quiet:
            self.report.error(f"{display(d.child(m['n']))}: not restored: {why}")

    def _keep_existing(self, job: _Job, slot: int) -> bool:
        """Resuming: whether the file is already restored (then only its metadata is set again)."""
        d, m = job.files[slot]
        path = self.target + d.child(m["n"])
        where = reach(self.target, d, m["n"])
        try:
            st = os.lstat(where)
        except OSError:
            return False
        if stat.S_ISDIR(st.st_mode):
            self._fail(job, slot, "cannot create: a directory is in the way")
            return True
        if not stat.S_ISREG(st.st_mode):  # e.g. a symlink, which the create (O_NOFOLLOW) would refuse
            try:
                os.unlink(where)
            except OSError:
                pass
            return False
        try:
            node = Node.from_map(m)
        except _MALFORMED:
            return False  # failed as malformed when planned
        if st.st_size != node.size or not already_restored(self.repo, where, node):
            return False
        self.report.skipped()
        for w in self.meta.apply(where, node, path, None):
            self.report.warn(w)
        return True


def _write_rest(fd: int, data: bytes, off: int, n: int) -> None:
    view = memoryview(data)
    while n < len(view):
        if n <= 0:
            raise OSError(errno.EIO, "short write")
        view, off = view[n:], off + n
        n = os.pwrite(fd, view, off)


def already_restored(repo: Any, path: bytes, node: Node) -> bool:
    """Whether the regular file at ``path`` holds exactly ``node``'s content (every chunk hash checked)."""
    try:
        with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as f:
            pos = 0
            for item in node.content:
                if type(item) is int:
                    f.seek(pos)
                    data = f.read(item)
                    if len(data) != item or data.count(0) != item:
                        return False
                    pos += item
                    continue
                length = repo.index.raw_length(item) or 0
                f.seek(pos)
                data = f.read(length)
                if len(data) != length or repo.blob_id(data) != item:
                    return False
                pos += length
            return True
    except OSError:
        return False


_PROC_FD = os.path.isdir(b"/proc/self/fd")


def reach(target: bytes, d: Dir, name: bytes) -> bytes:
    """The path to ``name`` in ``d`` for a system call that takes no directory descriptor: through ``d``'s
    descriptor (``/proc/self/fd/N/name``: a directory on the way that was replaced by a symlink since ``d``
    was opened is not followed), or, without /proc, its own path."""
    path = target + d.child(name)
    return through(d.fd, name) if _PROC_FD or not fits(path) else path


def make_room(path: bytes) -> None:
    """Resuming: remove a non-directory entry in the way of ``path``; raise for a directory."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise OSError(errno.EISDIR, "a directory is in the way")
    os.unlink(path)
