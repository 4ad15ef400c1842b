"""Worker processes that write restore windows (local, SFTP, S3, WebDAV and Tahoe-LAFS repositories).

Writing many small files is CPU work done holding the GIL (decoding entries,
decrypting and hashing small blobs, a handful of system calls per file), so
threads do not add up; processes do. The workers are forked once, when the
restore starts (they inherit the opened repository, its index and keys), and
each runs ``WindowWriter.run`` on the windows it is sent. A window travels as
msgpack: its directories' paths in the snapshot and the raw tree entries of
its files. What a worker reports (warnings, errors, progress, the files it
could not restore) comes back as messages, read in the restoring process by
one thread per worker, so a worker never waits for the walk.

Only storage that survives ``fork`` may be used this way (``usable``): a local
directory, or a remote store whose backend can ``suspend`` (close its
connections and stop its threads before the fork; every process then connects
on its own, so no socket or lock is shared). Workers die with the restoring process
(``PR_SET_PDEATHSIG``) and never run its exit handlers (``os._exit``), so they
never touch its repository lock.
"""

from __future__ import annotations

import fcntl
import os
import signal
import threading
from collections import deque
from concurrent.futures import Future
from multiprocessing.connection import Connection, Pipe
from typing import Any, Callable

import msgpack

from .. import allocator
from ..longpath import open_deep

from ..backends.fork import F_SETPIPE_SZ, PIPE_SIZE, die_with_parent, forkable
from ..backends.fork import pickle_error as _pickle
from ..backends.fork import unpickle_error
from ..errors import TuckboxError
from .writer import Dir, Window, WindowWriter, display

WRITER_KEEP_FREED = 64 << 20  # freed heap a writer process keeps (allocator.py)
WRITER_HEAP_PAD = 16 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def usable(backend: Any) -> bool:
    """Whether windows may be written by forked processes that read ``backend`` on their own.

    Storage a forked process may use (``backends.fork.forkable``: a local
    directory, or SFTP, S3, WebDAV, Tahoe-LAFS, possibly behind retries or a
    connection limit), not behind a bandwidth limit, which every process would
    then spend in full.
    """
    return forkable(backend)


class _ChildReport:
    """A worker's ``Report``: everything goes to the restoring process as a message."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def _send(self, *msg: Any) -> None:
        self.conn.send_bytes(msgpack.packb(msg))

    def warn(self, msg: str) -> None:
        self._send("w", msg)

    def error(self, msg: str) -> None:
        self._send("e", msg)

    def written(self, n: int) -> None:
        self._send("b", n)

    def kept(self, n: int) -> None:
        self._send("k", n)

    def skipped(self) -> None:
        self._send("s")

    def read_back(self, n: int) -> None:
        self._send("c", n)


class _Worker:
    __slots__ = ("pid", "send", "recv", "queue", "reader")

    def __init__(self, pid: int, send: Connection, recv: Connection) -> None:
        self.pid = pid
        self.send = send
        self.recv = recv
        self.queue: deque[tuple[Window, Future[None]]] = deque()  # sent, not yet reported done
        self.reader: threading.Thread | None = None


class WorkerProcesses:
    """Runs windows in ``n`` forked processes; ``submit`` returns a Future like an executor's."""

    def __init__(self, n: int, make_writer: Callable[[Any], WindowWriter], report: Any, target: bytes) -> None:
        self.report = report
        self.target = target
        self.workers: list[_Worker] = []
        self.dead: set[int] = set()  # workers whose reader saw them go
        self._lock = threading.Lock()
        try:
            for _ in range(n):
                self._fork(make_writer)
        except BaseException:
            self.shutdown()
            raise
        for w in self.workers:
            w.reader = threading.Thread(target=self._read, args=(w,), name="restore-worker-reader", daemon=True)
            w.reader.start()

    def _fork(self, make_writer: Callable[[Any], WindowWriter]) -> None:
        down_recv, down_send = Pipe(duplex=False)
        up_recv, up_send = Pipe(duplex=False)
        for conn in (down_send, up_send):  # room for the next window while the worker writes one: no waiting
            try:
                fcntl.fcntl(conn.fileno(), F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:
                pass  # a smaller pipe only means the walk waits a little
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            code = 1
            try:
                for w in self.workers:  # the other workers' pipe ends: they must see EOF when the parent goes
                    w.send.close()
                    w.recv.close()
                down_send.close()
                up_recv.close()
                die_with_parent(parent)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                # a writer maps each window's pack ranges and frees them: kept for the next window instead of
                # cleared and faulted in again (its peak stays below the restoring process's key derivation)
                allocator.keep_freed(WRITER_KEEP_FREED, WRITER_HEAP_PAD)
                _serve(down_recv, up_send, make_writer(_ChildReport(up_send)), self.target)
                code = 0
            finally:
                os._exit(code)
        down_recv.close()
        up_send.close()
        self.workers.append(_Worker(pid, down_send, up_recv))

    def submit(self, _fn: Any, w: Window) -> Future[None]:
        """Send window ``w`` to the worker with the fewest windows queued."""
        future: Future[None] = Future()
        with self._lock:
            if self.dead:
                future.set_exception(_stopped())
                return future
        dirs: dict[int, int] = {}
        paths: list[bytes] = []
        files = []
        for d, m in w.files:
            k = dirs.get(id(d))
            if k is None:
                k = dirs[id(d)] = len(paths)
                paths.append((d.path, *d.ident))
            files.append((k, m))
        copies = [[blob_id, *source] for blob_id, source in w.copies.items()]
        msg = msgpack.packb((w.id, paths, files, copies))
        with self._lock:
            worker = min(self.workers, key=lambda x: len(x.queue))
            worker.queue.append((w, future))
        try:
            worker.send.send_bytes(msg)
        except OSError:  # the worker is gone: its reader fails what it was sent
            pass
        return future

    def _read(self, worker: _Worker) -> None:
        report = self.report
        try:
            while True:
                msg = msgpack.unpackb(worker.recv.recv_bytes())
                kind = msg[0]
                if kind == "b":
                    report.written(msg[1])
                elif kind == "k":
                    report.kept(msg[1])
                elif kind == "w":
                    report.warn(msg[1])
                elif kind == "e":
                    report.error(msg[1])
                elif kind == "s":
                    report.skipped()
                elif kind == "c":
                    report.read_back(msg[1])
                else:
                    with self._lock:
                        w, future = worker.queue.popleft()
                    if kind == "done":
                        w.failed.update(msg[1])
                        future.set_result(None)
                    else:
                        future.set_exception(_unpickle(msg[1]))
        except Exception:  # noqa: BLE001 - EOF (the worker exited or died) or a garbled message: it is lost
            pass
        with self._lock:  # the worker is gone: nothing it was sent, or will be sent, gets done
            self.dead.add(worker.pid)
            lost, worker.queue = list(worker.queue), deque()
        for _, future in lost:
            future.set_exception(_stopped())

    def kill(self) -> None:
        """Stop every worker now, mid-window (``shutdown`` then only reaps them)."""
        for w in self.workers:
            try:
                os.kill(w.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        for w in self.workers:
            w.send.close()  # EOF: the worker exits once its current window is done
        for w in self.workers:
            try:
                os.waitpid(w.pid, 0)
            except ChildProcessError:
                pass
            if w.reader is not None:
                w.reader.join()
            w.recv.close()
        self.workers = []


def _serve(recv: Connection, send: Connection, writer: WindowWriter, target: bytes) -> None:
    while True:
        try:
            raw = recv.recv_bytes()
        except EOFError:
            return
        wid, paths, files, copies = msgpack.unpackb(raw)
        w = Window(wid)
        w.copies = {c[0]: (c[1], c[2], c[3], c[4]) for c in copies}
        dirs: list[Dir] = []
        try:
            unusable: dict[int, str] = {}
            for k, (path, dev, ino) in enumerate(paths):
                d = Dir(path, None, None)
                try:
                    d.fd = open_deep(target + path, _DIR_FLAGS)
                    st = os.fstat(d.fd)
                    if (st.st_dev, st.st_ino) != (dev, ino):  # not the one the restore made: a symlink on the way?
                        os.close(d.fd)
                        d.fd = -1
                        unusable[k] = "its directory was replaced during the restore"
                except OSError as e:
                    unusable[k] = f"cannot open its directory: {e.strerror or e}"
                dirs.append(d)
            w.files = [(dirs[k], m) for k, m in files]
            for slot, (k, m) in enumerate(files):
                if k in unusable:  # (the restoring process made it: something removed it meanwhile)
                    w.failed.add(slot)
                    shown = display(dirs[k].child(m["n"]))
                    writer.report.error(f"{shown}: not restored: {unusable[k]}")
            writer.run(w)
            reply = msgpack.packb(("done", sorted(w.failed)))
        except Exception as e:  # noqa: BLE001 - the restoring process re-raises it
            reply = msgpack.packb(("raise", _pickle(e)))
        finally:
            for d in dirs:
                if d.fd >= 0:
                    os.close(d.fd)
        send.send_bytes(reply)


def _stopped() -> TuckboxError:
    return TuckboxError("a restore worker process stopped unexpectedly; run the same restore again to resume")


def _unpickle(raw: bytes) -> BaseException:
    return unpickle_error(raw, "a restore worker")
