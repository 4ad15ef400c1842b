"""Restore: stream the snapshot's trees into the target, a bounded window of files at a time.

The trees are walked depth-first, one directory listing at a time, in the
order the backup wrote them (``backup_order``: files before subdirectories). Directories
are created (owner-only) when the walk reaches them; empty and all-hole files,
symlinks and special files at once; files with data are collected into windows
of at most ``WINDOW_FILES`` files / ``WINDOW_BYTES`` bytes (``REMOTE_WINDOW_SCALE`` times
that from remote storage), which are written
(``writer.WindowWriter``: each window's blobs fetched by pack, decrypted,
verified, written, then each file's metadata through its descriptor) while the
walk goes on: by forked worker processes on several CPUs for local, SFTP and
S3 repositories (``workers``), else by threads. Memory is bounded by the windows in
flight and the directory stack, not by the size of the tree.

Windows complete in order. A hardlink is made once the window holding its
group's data is done; a directory gets its metadata (owner, xattrs, mode, times)
once every window holding something below it is done, so children always come
first and directory mtimes survive.

A restore into a directory holding ``.tuckbox-restore`` for the same snapshot
is a resumed restore: files whose size and every chunk hash already match are
not written again. The marker is removed when a restore completes that covers
what the restores before it into that target were asked for (``marker``: an
interrupted restore resumed with only some of its paths keeps it).
"""

from __future__ import annotations

import gc
import os
import stat
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from ..backends.fork import after_fork, cpus, prepare_fork
from ..backends.local import local_root
from ..errors import TuckboxError, UsageError
from ..fsmeta import create_special
from ..longpath import link_deep, more_descriptors, reason
from ..patterns import Patterns
from ..snapshot.model import Snapshot
from ..snapshot.tree import DIR, FILE, SYMLINK, Node, check_maps, tree_maps
from ..types import BlobType
from . import marker as markers
from .fetch import COPY_MIN, GAP, GAP_REMOTE, BlobCache, DoneMark, Fetcher, Sources
from .meta import Meta, file_mode
from .workers import WorkerProcesses
from .workers import usable as workers_usable
from .writer import DONE, FAILED, PENDING, Dir, LinkGroup, Report, Window, WindowWriter, display, link_key, make_room, reach
from .writer import copy_for_link, target_wide

MARKER = markers.NAME
WINDOW_FILES = 512  # files with data per window
WINDOW_BYTES = 16 << 20  # bytes of file content per window
# from remote storage a window's every pack costs at least one request, and a request costs the server more
# than its bytes: windows four times as large halved the requests of a restore of the mixed benchmark set
# from S3 (after the backup-order walk: 240 -> 165) and took ~20 % of the server's CPU time off it
REMOTE_WINDOW_SCALE = 4
BLOB_CACHE = 16 << 20  # decrypted blobs kept for content that recurs across windows
READ_AHEAD = 32 << 20  # bytes of ranges fetched ahead of the windows that need them
PROCESSES = 0  # worker processes where the storage allows (0: one more than the CPUs, at most 4; 1 CPU: threads)
READ_BACK_LOCAL = False  # read recurring blobs back from the target for a local repository too (tests)
PENDING_DIRS = 256  # directories waiting for their metadata (each holds a descriptor) before the walk waits
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class RestoreProgress:
    def files_done(self, n: int) -> None:
        """``n`` files (and hardlinks) restored or under way so far."""

    def bytes_done(self, n: int) -> None:  # noqa: D102
        pass

    def warning(self, message: str) -> None:  # noqa: D102
        pass

    def error(self, message: str) -> None:
        """Something that was not restored (the restore will exit 1); a warning unless overridden."""
        self.warning(message)


@dataclass
class RestoreResult:
    files: int = 0  # restored (hardlinks included; files that failed are not)
    dirs: int = 0
    others: int = 0
    bytes_written: int = 0  # into files that were restored (not what went into a file that then failed)
    files_skipped: int = 0  # already correct (resumed restore)
    bytes_read_back: int = 0  # blobs read back from files this restore wrote earlier, not fetched again
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Restorer:
    def __init__(
        self, repo: Any, progress: RestoreProgress | None = None, connections: int = 4,
        keepalive: Callable[[], None] | None = None,
    ) -> None:
        self.repo = repo
        self.keepalive = keepalive or (lambda: None)  # called often from the restoring thread (the lock's tick)
        self.progress = progress or RestoreProgress()
        self.connections = connections
        self.result = RestoreResult()

    def restore(
        self,
        snap: Snapshot,
        target: bytes,
        includes: list[str] | None = None,
        excludes: list[str] | None = None,
        numeric_owner: bool = False,
    ) -> RestoreResult:
        more_descriptors()  # each directory being restored holds a descriptor until its metadata is set
        gc_was_on = gc.isenabled()
        gc.disable()  # hundreds of thousands of short-lived entries and no cycles: collections would only cost
        try:
            return self._restore(snap, os.path.abspath(target), includes, excludes, numeric_owner)
        finally:
            if gc_was_on:
                gc.enable()

    def _restore(
        self, snap: Snapshot, target: bytes, includes: list[str] | None, excludes: list[str] | None, numeric_owner: bool
    ) -> RestoreResult:
        made_target = not os.path.lexists(target)
        asked = markers.Selection.of(includes, excludes)
        owed, fresh = markers.prepare_target(target, snap.id, asked)
        resume = owed is not None
        maps = tree_maps(self.repo.load_blob(BlobType.TREE, snap.tree))  # the root's listing: no restore without it
        meta = Meta(numeric_owner, fresh and not resume)
        run = _Run(self, target, resume, meta, Patterns(includes), Patterns(excludes))
        run.walk(maps)
        run.report.finish()
        marker = os.path.join(target, MARKER)
        if (includes or excludes) and not run.chosen:
            if owed is not None:  # nothing was written: the marker owes what it did before
                markers.put_back(marker, snap.id, owed)
            else:
                _remove_quietly(marker)
                if made_target:
                    _remove_quietly(target, os.rmdir)
            raise UsageError("no entries in the snapshot match the --include/--exclude patterns")
        if not self.result.errors:
            if owed is None or asked.covers(owed):
                _remove_quietly(marker)
            else:  # this selection is complete; what the interrupted restore was asked for still is not
                markers.put_back(marker, snap.id, owed)
        return self.result


def backup_order(maps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A directory's entries in the order a backup stored them: everything but directories first, by name.

    (Trees list entries by name.) Walking in this order reads each pack's
    blobs about in the order the backup wrote them: a window's files need one
    run of a pack rather than pieces interleaved with a subdirectory's.
    """
    maps.sort(key=_is_dir)
    return maps


def _is_dir(m: dict[str, Any]) -> bool:
    return m.get("t") == DIR


def _remove_quietly(path: bytes, remove: Callable[[bytes], None] = os.unlink) -> None:
    try:
        remove(path)
    except OSError:
        pass


class _Run:
    """One restore's walk and its windows (the walk and all bookkeeping run in the calling thread)."""

    def __init__(
        self, owner: Restorer, target: bytes, resume: bool, meta: Meta, inc: Patterns, exc: Patterns
    ) -> None:
        self.repo = owner.repo
        self.keepalive = owner.keepalive
        self.result = owner.result
        self.report = Report(owner.result, owner.progress)
        self.target = target
        self.resume = resume
        self.meta = meta
        self.inc = inc
        self.exc = exc
        self.chosen = False  # anything selected at all
        self.lost_found = markers.fresh_lost_found(target, markers.LOST_FOUND)  # in the target before it began
        self.under_way = 0  # files restored or given to a window so far (for progress)
        self.connections = max(1, owner.connections)
        self.inflight_max = self.connections
        self.open_dirs: set[Dir] = set()  # created, metadata not yet set: each holds a descriptor
        self.window = Window(0)
        self.inflight: deque[Window] = deque()
        self.done_upto = -1  # every window with an id up to this one is complete
        self.links: dict[tuple[int, int, int, bytes], LinkGroup] = {}
        self.inodes: dict[tuple[int, int], bytes] = {}  # (device, inode) -> the first entry restored of it
        self.pending_links: list[tuple[LinkGroup, Dir, bytes]] = []
        self.pending_dirs: deque[tuple[int, Dir]] = deque()  # (last window below it, dir), in post-order
        self.late: list[Dir] = []
        self.writer: WindowWriter | None = None
        # a local repository is read from the same kind of disk, and its reads run ahead on the fetch
        # threads: reading a restored file back (at once, in the writer) would not be cheaper there
        remote = local_root(self.repo.backend) is None
        scale = REMOTE_WINDOW_SCALE if remote else 1
        self.window_files = WINDOW_FILES * scale
        self.window_bytes = WINDOW_BYTES * scale
        self.sources = Sources(self.repo.index.raw_length) if remote or READ_BACK_LOCAL else None
        self.done_mark = DoneMark()  # done_upto, shared with the worker processes (made before they fork)

    # ---------------------------------------------------------------- walk

    def walk(self, maps: Any) -> None:
        """Restore the snapshot whose root listing holds the raw entries ``maps`` (``tree.tree_maps``)."""
        root = Dir(b"", None, None)
        try:
            root.fd = os.open(self.target, _DIR_FLAGS)
            st = os.fstat(root.fd)
            root.ident = (st.st_dev, st.st_ino)
        except OSError as e:
            raise TuckboxError(f"cannot open restore target {display(self.target)}: {e.strerror}") from None
        self.fetcher: Fetcher | None = None
        self.pool: Any = None
        try:
            self._start()
            self._walk(root, self._valid(root, maps, True))
            self._submit()
            while self.inflight:
                self._complete_oldest()
            for d in self.late:
                self._finalize(d, at_end=True)
        except BaseException:  # Ctrl-C, SIGTERM or an error: stop now, not after the windows in flight
            if self.fetcher is not None:
                self.fetcher.abort()  # (a download waiting for bandwidth would take its time)
            if isinstance(self.pool, WorkerProcesses):
                self.pool.kill()  # as a crash would: the marker stays, a rerun resumes
            raise
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)
            if self.fetcher is not None:
                self.fetcher.close()
            for d in self.open_dirs:  # left when the restore stops part-way
                os.close(d.fd)
            os.close(root.fd)

    def _writer(self, report: Any, share: int = 1) -> WindowWriter:
        """The window writer of this process (of each worker: ``share`` of them split the memory budgets)."""
        gap = GAP if local_root(self.repo.backend) is not None else GAP_REMOTE
        self.fetcher = Fetcher(self.repo.backend, self.connections, READ_AHEAD // share, gap)
        cache = BlobCache(BLOB_CACHE // share)
        return WindowWriter(
            self.repo, self.meta, cache, self.fetcher, report, self.target, self.resume, self.done_mark.get
        )

    def _start(self) -> None:
        """Worker processes on several CPUs where the storage allows and no other thread runs, else threads.

        Called before any thread of this restore exists; a thread left by
        someone else (after ``prepare_fork``'s short wait) means threads: a fork
        beside a running thread can leave the child waiting for a lock forever.
        """
        # a worker also waits (for its fetches, and for the disk on direct writes): one more than the CPUs
        n = PROCESSES or (min(cpus() + 1, 4) if cpus() > 1 else 1)
        if n > 1 and workers_usable(self.repo.backend) and prepare_fork(self.repo.backend):
            try:
                self.pool = WorkerProcesses(n, lambda report: self._writer(report, n), self.report, self.target)
                self.inflight_max = 2 * n  # one being written and one waiting, per worker
                after_fork(self.repo.backend)  # (the lock is refreshed and released from here)
                return
            except OSError:
                pass  # no processes to be had (limits, memory): threads will do
        # one thread writes (the work holds the GIL: more would only contend); the fetches of the windows
        # waiting for it run meanwhile, on the fetcher's connections
        self.writer = self._writer(self.report)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="restore")
        self.inflight_max = self.connections + 1

    def _walk(self, root: Dir, nodes: list[dict[str, Any]]) -> None:
        """Depth-first over raw tree entries (a Node is made only for what is not a file with data)."""
        inc, exc = self.inc, self.exc
        stack = [(root, iter(backup_order(nodes)))]
        while stack:
            d, it = stack[-1]
            for m in it:
                if inc or exc:
                    path = d.child(m["n"])
                    if exc and exc.match(path):
                        continue
                    chosen = not inc or d.inside or inc.match(path)
                else:
                    chosen = True
                if m["t"] == DIR:
                    node = self._node(d, m)
                    if node is None:
                        continue
                    sub = Dir(d.child(node.name), node, d, inside=chosen and bool(inc))
                    if chosen:
                        self._make_dir(sub)
                    stack.append((sub, iter(self._listing(sub, chosen))))
                    break
                if chosen:
                    self._entry(d, m)
            else:
                stack.pop()
                if d is not root and d.fd >= 0:
                    last = self.window.id if self.window.files else self.window.id - 1
                    self.pending_dirs.append((last, d))
                    self._drain_dirs()
                    if len(self.pending_dirs) > PENDING_DIRS:  # e.g. many directories without data: catch up
                        self._submit()
                        while self.inflight and len(self.pending_dirs) > PENDING_DIRS:
                            self._complete_oldest()

    def _listing(self, d: Dir, chosen: bool) -> list[dict[str, Any]]:
        assert d.node is not None
        if not d.node.subtree:
            return []
        try:
            maps = tree_maps(self.repo.load_blob(BlobType.TREE, d.node.subtree))
        except TuckboxError as e:  # a damaged listing costs what is below it, not the whole restore
            if chosen:
                self.report.error(f"{display(d.path)}: contents not restored: directory listing damaged: {e}")
            return []
        return backup_order(self._valid(d, maps, chosen))

    def _valid(self, d: Dir, maps: Any, chosen: bool) -> list[dict[str, Any]]:
        """The entries of a listing that can be restored; each other one (a malformed entry, a second entry
        of one name) costs only itself, and is reported if it would have been restored."""
        try:
            good, bad = check_maps(maps)
        except TuckboxError as e:
            if chosen or d.parent is None:
                self.report.error(f"{display(d.path or b'/')}: contents not restored: directory listing damaged: {e}")
            return []
        if d.parent is None and any(m["n"] == MARKER for m in good):
            # (the restore's own marker is there: restored, it would be overwritten, or removed at the end)
            good = [m for m in good if m["n"] != MARKER]
            bad = [*bad, (MARKER, "")]
        inc, exc = self.inc, self.exc
        for name, problem in bad:
            path = d.child(name)
            if (not inc or d.inside or inc.match(path)) and not (exc and exc.match(path)):
                if problem:
                    self.report.error(f"{display(path)}: not restored: its tree entry is malformed: {problem}")
                else:  # (most likely the marker of a restore into a directory that was then backed up)
                    self.report.warn(f"{display(path)}: not restored: the restore keeps its own marker under that "
                                     "name in the target ('tuckbox ls' shows it, 'tuckbox dump' writes out a file)")
        return good

    def _make_dir(self, d: Dir) -> None:
        """Create ``d`` and any parent not yet created (those were waiting for a selected entry below them)."""
        todo = []
        while d.fd < 0 and not d.failed:
            todo.append(d)
            assert d.parent is not None
            d = d.parent
        for d in reversed(todo):
            self.chosen = True
            parent = d.parent
            assert parent is not None and d.node is not None
            if parent.failed:
                d.failed = True
                continue
            name = d.node.name
            try:
                try:
                    os.mkdir(name, 0o700, dir_fd=parent.fd)
                    d.created = True
                except FileExistsError:
                    # (a fresh file system's empty lost+found was all the target held: the snapshot's goes there)
                    if not self.resume and not (parent.parent is None and name == markers.LOST_FOUND
                                                and self.lost_found):
                        raise
                    # resuming: a non-directory in its place (a file, a symlink, maybe pointing out of the
                    # target) is replaced, as for files (make_room); the directory is never followed
                    if not stat.S_ISDIR(os.lstat(name, dir_fd=parent.fd).st_mode):
                        os.unlink(name, dir_fd=parent.fd)
                        os.mkdir(name, 0o700, dir_fd=parent.fd)
                        d.created = True
                d.open_at(parent.fd, name)
            except OSError as e:
                target_wide(e, self.target + d.path)
                d.failed = True
                self.report.error(f"{display(d.path)}: not restored (nor anything below it): cannot create it: {reason(e)}")
                continue
            self.open_dirs.add(d)
            self.result.dirs += 1

    def _entry(self, d: Dir, m: dict[str, Any]) -> None:
        if d.fd < 0:
            self._make_dir(d)
            if d.failed:
                return
        self.chosen = True
        try:
            if m["t"] == FILE:
                data = any(type(c) is bytes for c in m.get("c", ()))
                if m.get("l", 0) > 1 and m.get("i") and self._hardlink(d, m, data):
                    return
                if data:
                    self._add(d, m)  # counted once its window is done (and if it did not fail)
                    self.under_way += 1
                elif node := self._node(d, m):
                    self._create_empty(d, node)
                    self.result.files += 1
                    self.under_way += 1
                    group = self.links.get(link_key(m)) if m.get("i") else None
                    if group is not None and group.dir is d and group.name == node.name:
                        group.note()
            elif node := self._node(d, m):
                self._create_other(d, node)
                self.result.others += 1
        except OSError as e:
            target_wide(e, self.target + d.child(m["n"]))
            self.report.error(f"{display(d.child(m['n']))}: not restored: cannot create it: {e.strerror}")

    def _node(self, d: Dir, m: dict[str, Any]) -> Node | None:
        try:
            return Node.from_map(m)
        except (TuckboxError, TypeError, ValueError):  # written by a broken tuckbox: that entry only
            self.report.error(f"{display(d.child(m['n']))}: not restored: its tree entry is malformed")
            return None

    def _create_empty(self, d: Dir, node: Node) -> None:
        """A file without data (empty, or holes only): created now, at its size."""
        if self.resume:
            make_room(reach(self.target, d, node.name))
        mode = file_mode(node.mode)
        fd = os.open(node.name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=d.fd)
        try:
            if node.size:
                os.ftruncate(fd, node.size)
            warnings = self.meta.apply(fd, node, self.target + d.child(node.name), self.meta.created(mode))
        finally:
            os.close(fd)
        for w in warnings:
            self.report.warn(w)

    def _create_other(self, d: Dir, node: Node) -> None:
        path = self.target + d.child(node.name)
        where = reach(self.target, d, node.name)
        if self.resume:
            make_room(where)
        if node.type == SYMLINK:
            os.symlink(node.link_target, node.name, dir_fd=d.fd)
            created = self.meta.created(0o777)
        else:
            for w in create_special(where, node, path):
                self.report.warn(w)
            if not os.path.lexists(where):
                return
            created = None
        for w in self.meta.apply(where, node, path, created):
            self.report.warn(w)

    def _hardlink(self, d: Dir, m: dict[str, Any], data: bool) -> bool:
        """Record the first entry of a hardlink group (False: it holds the data), or link to it (True)."""
        key = link_key(m)
        group = self.links.get(key)
        if group is None:
            first = self.inodes.setdefault(key[:2], d.child(m["n"]))
            if first != d.child(m["n"]):
                self.report.warn(f"{display(d.child(m['n']))}: restored as a file of its own, not as a hardlink to "
                                 f"{display(first)}: the backup read them with different contents (written to meanwhile)")
            self.links[key] = group = LinkGroup(self.target + d.child(m["n"]), d, m["n"])
            if data:
                self.window.firsts.append((len(self.window.files), group))
            else:
                group.state = DONE  # created at once, by the caller
            return False
        if group.state == PENDING:
            self.pending_links.append((group, d, m["n"]))
        else:
            self._link(group, d, m["n"])
        return True

    def _link(self, group: LinkGroup, d: Dir, name: bytes) -> None:
        if group.state == FAILED:  # the data holder was not restored (and is reported): neither is this
            holder = group.path[len(self.target):]
            self.report.error(f"{display(d.child(name))}: not restored: a hardlink to {display(holder)}, "
                              "which was not restored")
            return
        try:
            if self.resume:
                make_room(reach(self.target, d, name))
            try:
                if group.dir.fd >= 0:
                    os.link(group.name, name, src_dir_fd=group.dir.fd, dst_dir_fd=d.fd, follow_symlinks=False)
                else:  # its directory is complete (and closed): by its path, which must still lead to it
                    link_deep(group.path, name, d.fd)
            except OSError as e:
                if not copy_for_link(group, d.fd, name, e):  # (no hardlinks on the target: a copy)
                    raise
                holder = group.path[len(self.target):]
                self.report.warn(f"{display(d.child(name))}: cannot hard-link, made a copy of {display(holder)}: "
                                 f"{e.strerror}")
                self.result.files += 1
                self.under_way += 1
                return
            if group.dir.fd < 0:
                st = os.stat(name, dir_fd=d.fd, follow_symlinks=False)
                if group.ident != (st.st_dev, st.st_ino):
                    os.unlink(name, dir_fd=d.fd)
                    holder = group.path[len(self.target):]
                    self.report.error(f"{display(d.child(name))}: not restored: a hardlink to {display(holder)}, "
                                      "whose directory was replaced during the restore")
                    return
            self.result.files += 1
            self.under_way += 1
        except OSError as e:
            target_wide(e, self.target + d.child(name))
            self.report.error(f"{display(d.child(name))}: not restored: cannot create the hardlink: {e.strerror}")

    # ---------------------------------------------------------------- windows

    def _add(self, d: Dir, m: dict[str, Any]) -> None:
        w = self.window
        w.files.append((d, m))
        if self.sources is not None and m.get("s", 0) >= COPY_MIN:
            self.sources.note(w, d.child(m["n"]), m["c"])
        w.nbytes += m.get("s", 0)
        if len(w.files) >= self.window_files or w.nbytes >= self.window_bytes:
            self._submit()

    def _submit(self) -> None:
        w = self.window
        if not w.files:
            return
        self.window = Window(w.id + 1)
        self.keepalive()
        self.report.progress.files_done(self.under_way)
        while self.inflight and (len(self.inflight) >= self.inflight_max or self.inflight[0].future.done()):
            self._complete_oldest()
        if self.writer is None:
            w.future = self.pool.submit(None, w)  # to a worker process
        else:
            w.future = self.pool.submit(self.writer.write, self.writer.prepare(w, eager=True))
        w.future.add_done_callback(lambda f, wid=w.id: self.done_mark.complete(wid, f))
        self.inflight.append(w)

    def _complete_oldest(self) -> None:
        w = self.inflight.popleft()
        w.future.result()  # a restore-wide failure (full disk, storage gone) stops here
        self.done_upto = w.id
        self.result.files += len(w.files) - len(w.failed)
        for slot, group in w.firsts:
            group.state = FAILED if slot in w.failed else DONE
            if group.state == DONE:
                group.note()  # (its directory is still open: its metadata waits for this window)
        if self.pending_links:  # hardlinks whose data is in (before the metadata of the directories they are in)
            ready = [p for p in self.pending_links if p[0].state != PENDING]
            if ready:
                self.pending_links = [p for p in self.pending_links if p[0].state == PENDING]
                for group, d, name in ready:
                    self._link(group, d, name)
        self._drain_dirs()

    def _drain_dirs(self) -> None:
        """Set the metadata of directories whose contents are complete (in post-order: children first)."""
        while self.pending_dirs and self.pending_dirs[0][0] <= self.done_upto:
            _, d = self.pending_dirs.popleft()
            self._finalize(d)

    def _finalize(self, d: Dir, at_end: bool = False) -> None:
        node = d.node
        assert node is not None
        if not at_end and (d.late or (not self.meta.root and not node.mode & stat.S_IXUSR)):
            # without root, a directory we could not search would block hardlinks into what is below it:
            # it (and so every directory above it) waits for the end
            self.late.append(d)
            parent = d.parent
            while parent is not None and not parent.late:
                parent.late = True
                parent = parent.parent
            return
        path = self.target + d.path
        created = self.meta.created(0o700) if d.created else None
        try:
            warnings = self.meta.apply(d.fd, node, path, created)
        finally:
            self.open_dirs.discard(d)
            os.close(d.fd)
            d.fd = -1
        for w in warnings:
            self.report.warn(w)

