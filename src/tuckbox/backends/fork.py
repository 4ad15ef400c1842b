"""Forking helper processes that use the storage on their own (restore writers, the backup's pack process).

A forked process inherits the opened repository (keys, index, storage
object) for free, but only storage that survives ``fork`` may be used that
way: a local directory, or a remote store whose backend can ``suspend``
(close its connections and stop its threads before the fork; every process
then connects on its own, so no socket or lock is shared). And a fork is safe
only while the forking process has no other thread (``alone``). Children die
with their parent (``die_with_parent``) and leave with ``os._exit``, so they
never run the parent's exit handlers or touch its repository lock.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import sys
import time
from typing import Any

from ..errors import TuckboxError

_PR_SET_PDEATHSIG = 1
F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20  # the default maximum for unprivileged processes (/proc/sys/fs/pipe-max-size)
FORK_WAIT = 2.0  # seconds to wait for threads still exiting before a fork; then the caller does without one


def base(backend: Any, *, any_wrapper: bool = False) -> Any:
    """The storage under the wrappers that are safe to copy into each process: retries and connection
    limits; with ``any_wrapper``, every wrapper (a bandwidth limit too, for a process that alone
    uploads nearly everything; the test suite's fault injection)."""
    from .wrappers import ConnectionLimitBackend, RetryBackend, _Wrapper

    passthrough: tuple[type, ...] = (RetryBackend, ConnectionLimitBackend)
    while type(backend) in passthrough or (any_wrapper and isinstance(backend, _Wrapper)):
        backend = backend.inner
    return backend


def forkable(backend: Any, *, any_wrapper: bool = False) -> bool:
    """Whether a forked process may use ``backend`` (through its own connections) on this platform."""
    from .local import LocalBackend

    b = base(backend, any_wrapper=any_wrapper)
    ok = type(b) is LocalBackend or callable(getattr(b, "suspend", None))
    return ok and hasattr(os, "fork") and sys.platform.startswith("linux")


def prepare_fork(backend: Any, *, any_wrapper: bool = False) -> bool:
    """Drop the storage's connections and threads (if it has any); each process then opens its own.

    True once no other thread is left in this process (``alone``): only then is
    a fork safe. False (some thread outlived the wait: a library's, or one a
    caller started) means the work must be done without forking.
    """
    suspend = getattr(base(backend, any_wrapper=any_wrapper), "suspend", None)
    if callable(suspend):
        suspend()
    return alone()


def after_fork(backend: Any, *, any_wrapper: bool = False) -> None:
    """In the parent, once the children are forked: let the storage connect again in the background
    (``resume``, where it has one), so that its next operation does not wait for a whole handshake."""
    resume = getattr(base(backend, any_wrapper=any_wrapper), "resume", None)
    if callable(resume):
        resume()


def alone(wait: float | None = None) -> bool:
    """Whether the calling thread is the only one in this process (waiting up to ``wait`` s for others to end).

    Forking while another thread runs can hand the child a lock that nobody
    will ever release there. ``Thread.join`` is not enough: it returns before
    the thread has finished its last C-level clean-up, and OpenSSL's per-thread
    destructors take OpenSSL's own locks at that point (seen: a worker forked
    just after the SFTP backend's event-loop thread was joined hung forever in
    ``CRYPTO_THREAD_write_lock`` on its first connection). The kernel's list of
    the process's threads is the only reliable answer; where it cannot be read
    (not Linux), the answer is no.
    """
    deadline = time.monotonic() + (FORK_WAIT if wait is None else wait)
    while True:
        try:
            if len(os.listdir("/proc/self/task")) == 1:
                return True
        except OSError:
            return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.002)


def cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def die_with_parent(parent: int) -> None:
    """In a forked child: be killed when ``parent`` exits (and exit now if it already has)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent is already gone
        os._exit(1)


def pickle_error(e: BaseException) -> bytes:
    try:
        return pickle.dumps(e)
    except Exception:  # noqa: BLE001 - an exception that does not pickle still has a message
        return pickle.dumps(TuckboxError(f"{type(e).__name__}: {e}"))


def unpickle_error(raw: bytes, what: str) -> BaseException:
    try:
        e = pickle.loads(raw)
    except Exception as err:  # noqa: BLE001
        return TuckboxError(f"{what} failed: {err}")
    return e if isinstance(e, BaseException) else TuckboxError(str(e))
