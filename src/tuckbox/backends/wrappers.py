"""Backends that wrap a Backend: retries, bandwidth limits, a connection limit,
and fault injection for tests.

``wrap_backend`` stacks them in the order that makes sense for a repository::

    RetryBackend( RateLimitBackend( ConnectionLimitBackend( backend ) ) )

so every retried upload is charged again to the bandwidth budget, and a thread
waiting for bandwidth does not hold one of the limited connections.

Cancellation: calls a thread makes inside ``with cancel_scope(event):`` give up
with ``Cancelled`` soon after ``event`` is set — while waiting for bandwidth
(the wait is sliced, and the bandwidth not yet paid for is handed back to the
bucket, so the calls that come after are not held up by an upload nobody
wants), for a free connection, or for the next retry. A transfer already under
way in the backend itself is not interrupted; since every ``save`` is atomic,
a cancelled save leaves no object (at most a hidden temporary one).
"""

from __future__ import annotations

import logging
import mmap
import random
import struct
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import blake3

from ..errors import Cancelled, ObjectExists, ObjectNotFound, TransientError
from ..types import Backend, ObjectInfo, ObjectType

T = TypeVar("T")
log = logging.getLogger("tuckbox.backends")
_NEVER = b"\xff" * 8  # (a NaN: no note printed yet)
_NOT_HASH_NAMED = (ObjectType.CONFIG, ObjectType.LOCK)  # every other object is named by the BLAKE3 of its bytes


# -- cancellation ---------------------------------------------------------------

_scope = threading.local()
_SLICE = 0.1  # seconds: how often a waiting call looks at its cancel event


@contextmanager
def cancel_scope(event: threading.Event) -> Iterator[None]:
    """Storage calls made by this thread inside the block raise ``Cancelled`` once ``event`` is set."""
    old = getattr(_scope, "event", None)
    _scope.event = event
    try:
        yield
    finally:
        _scope.event = old


def current_cancel() -> threading.Event | None:
    """The cancel event of this thread's innermost ``cancel_scope`` (None outside one)."""
    return getattr(_scope, "event", None)


def _check_cancel(what: str, location: str) -> None:
    event = current_cancel()
    if event is not None and event.is_set():
        raise Cancelled(f"{what} in {location} was cancelled: the run is stopping")


class _Wrapper:
    """Passes every Backend method through to ``inner``."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.location = inner.location

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    def __getattr__(self, name: str) -> object:
        # optional capabilities of the wrapped backend (e.g. Tahoe's renew_leases) stay reachable
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def save(self, type: ObjectType, name: str, data: bytes | memoryview) -> None:
        self.inner.save(type, name, data)

    def load(self, type: ObjectType, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self.inner.load(type, name, offset, length)

    def stat(self, type: ObjectType, name: str) -> ObjectInfo:
        return self.inner.stat(type, name)

    def list(self, type: ObjectType) -> Iterator[ObjectInfo]:
        return self.inner.list(type)

    def remove(self, type: ObjectType, name: str) -> None:
        self.inner.remove(type, name)

    def exists(self) -> bool:
        return self.inner.exists()

    def create(self) -> None:
        self.inner.create()

    def close(self) -> None:
        self.inner.close()


# -- retries --------------------------------------------------------------------


class RetryBackend(_Wrapper):
    """Retries TransientError with exponential backoff and jitter.

    PermanentError, ObjectNotFound, ObjectExists and everything else fail at
    once. Attempts and the total time spent (including waits) are bounded; the
    last TransientError is raised when either runs out.

    A failed attempt may still have taken effect (the connection dropped after
    the server stored the object, or deleted it). So on a retry: ObjectExists
    from ``save`` counts as success when the stored object's size equals the
    data's length (names are content hashes, so the bytes are the ones we
    sent), and ObjectNotFound from ``remove`` counts as success. A load that
    asked for ``length`` bytes and got fewer is checked against ``stat`` and
    retried if the object is long enough to have given them (a silently
    truncated transfer); so is a whole object that does not match its hash
    name, or has none (config, locks) on storage that does not itself check
    that a whole load got every byte (``checks_whole_loads``: local, SFTP, S3),
    which saves a round trip for each.

    Once one call has given up (the storage failed for as long as the retries last, about a minute), the
    others stop retrying too: each one's next failure is final, and a call pausing between attempts tries
    once more at once. The calls under way when a server goes away each began their own minute of retries,
    and an upload that started after one of them gave up would have begun another, so a command whose
    storage is gone would stop only minutes later. A success clears this (the storage is back). Kept in
    memory shared with forked processes (a backup's pack process, a restore's workers), like the notes.
    """

    def __init__(
        self,
        inner: Backend,
        *,
        attempts: int = 8,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        max_elapsed: float = 300.0,
        seed: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
        notify: Callable[[str], None] | None = None,
        notify_every: float = 60.0,
    ) -> None:
        super().__init__(inner)
        self._whole_checked = bool(getattr(inner, "checks_whole_loads", False))
        self.attempts = max(1, attempts)
        # told about a retry (the CLI prints it as a note), at most once per ``notify_every`` seconds: the
        # pauses add up to about a minute, which without a word looks like a hang
        self._notify = notify
        self._notify_every = notify_every
        # when the last note was printed (time.monotonic, system-wide on Linux), in memory that processes
        # forked from this one (a restore's workers, a backup's pack process) share: one note a minute in all,
        # not one from each of them at once
        self._noted_at = mmap.mmap(-1, 8)
        self._noted_at[:] = _NEVER
        self._gave_up = mmap.mmap(-1, 1)  # 1: a call gave up after all its retries, and nothing succeeded since
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_elapsed = max_elapsed
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._sleep = sleep
        self.retries = 0  # total retries made (for statistics and tests)

    def _delay(self, attempt: int) -> float:
        cap = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        with self._rng_lock:
            return cap / 2 + self._rng.uniform(0, cap / 2)  # "equal jitter"

    def _retry(self, what: str, fn: Callable[[int], T]) -> T:
        """Call ``fn(attempt)`` (attempt counts from 1) until it stops raising TransientError."""
        start = time.monotonic()
        attempt = 1
        cancel = current_cancel()
        while True:
            _check_cancel(what, self.location)
            try:
                result = fn(attempt)
            except TransientError as e:
                delay = self._delay(attempt)
                if self._gave_up[0]:
                    log.warning("giving up on %s in %s: the storage already failed all the retries of another "
                                "operation: %s", what, self.location, e)
                    raise
                if attempt >= self.attempts or time.monotonic() - start + delay > self.max_elapsed:
                    log.warning("giving up on %s in %s after %d attempts: %s", what, self.location, attempt, e)
                    self._gave_up[0] = 1
                    raise
                log.info("retrying %s in %s in %.1fs (attempt %d): %s", what, self.location, delay, attempt + 1, e)
                self._note(what, e)
                with self._rng_lock:
                    self.retries += 1
                self._pause(delay, cancel)
                _check_cancel(what, self.location)
                attempt += 1
            else:
                if self._gave_up[0]:
                    self._gave_up[0] = 0
                return result

    def _pause(self, delay: float, cancel: threading.Event | None) -> None:
        """Wait ``delay`` seconds before the next attempt; less once another call gives up or the run stops."""
        if self._sleep is not time.sleep:  # (a test's clock: one call, as asked)
            self._sleep(delay)
            return
        end = time.monotonic() + delay
        while not self._gave_up[0]:
            left = end - time.monotonic()
            if left <= 0:
                return
            if cancel is None:
                time.sleep(min(left, _SLICE * 5))
            elif cancel.wait(min(left, _SLICE * 5)):
                return

    def _note(self, what: str, err: TransientError) -> None:
        if self._notify is None:
            return
        now = time.monotonic()
        with self._rng_lock:
            if self._noted_at[:] != _NEVER and now - struct.unpack("d", self._noted_at[:])[0] < self._notify_every:
                return
            self._noted_at[:] = struct.pack("d", now)
        text = str(err)
        if self.location not in text:
            text = f"{what} in {self.location}: {text}"
        self._notify(f"{text} (retrying: up to {self.attempts} attempts, pauses growing to {self.max_delay:.0f} s; Ctrl-C stops)")

    def save(self, type: ObjectType, name: str, data: bytes | memoryview) -> None:
        def go(attempt: int) -> None:
            try:
                self.inner.save(type, name, data)
            except ObjectExists:
                if attempt > 1 and self.inner.stat(type, name).size == len(data):
                    return  # an earlier attempt stored it before failing
                raise

        self._retry(f"saving {type.value}/{name}", go)

    def load(self, type: ObjectType, name: str, offset: int = 0, length: int | None = None) -> bytes:
        def go(attempt: int) -> bytes:
            data = self.inner.load(type, name, offset, length)
            if length is not None and len(data) < length:
                size = self.inner.stat(type, name).size
                if len(data) < min(length, max(0, size - offset)):
                    raise TransientError(
                        f"short read of {type.value}/{name} from {self.location} ({len(data)} of {length} bytes)"
                    )
            elif length is None and offset == 0 and (
                not self._whole_checked if type in _NOT_HASH_NAMED
                else blake3.blake3(data, max_threads=1).hexdigest() != name
            ):
                # a whole object that does not match its hash name (or has none to check): retry a cut-short
                # transfer; an object really stored that way is returned as it is, for the caller to report
                size = self.inner.stat(type, name).size
                if len(data) < size:
                    raise TransientError(f"short read of {type.value}/{name} from {self.location} ({len(data)} of {size} bytes)")
            return data

        return self._retry(f"loading {type.value}/{name}", go)

    def stat(self, type: ObjectType, name: str) -> ObjectInfo:
        return self._retry(f"stat of {type.value}/{name}", lambda _: self.inner.stat(type, name))

    def list(self, type: ObjectType) -> Iterator[ObjectInfo]:
        """Restarts a listing that fails part-way, without repeating names already yielded."""
        seen: set[str] = set()
        start = time.monotonic()
        attempt = 1
        progress = False
        while True:
            try:
                for info in self.inner.list(type):
                    if info.name not in seen:
                        seen.add(info.name)
                        progress = True
                        yield info
                if self._gave_up[0]:
                    self._gave_up[0] = 0
                return
            except TransientError as e:
                if progress:
                    attempt, start, progress = 1, time.monotonic(), False  # a listing that moves is not stuck
                delay = self._delay(attempt)
                if self._gave_up[0]:
                    raise
                if attempt >= self.attempts or time.monotonic() - start + delay > self.max_elapsed:
                    self._gave_up[0] = 1
                    raise
                log.info("retrying the %s listing in %s in %.1fs: %s", type.value, self.location, delay, e)
                with self._rng_lock:
                    self.retries += 1
                self._pause(delay, None)
                attempt += 1

    def remove(self, type: ObjectType, name: str) -> None:
        def go(attempt: int) -> None:
            try:
                self.inner.remove(type, name)
            except ObjectNotFound:
                if attempt > 1:
                    return  # an earlier attempt removed it before failing
                raise

        self._retry(f"removing {type.value}/{name}", go)

    def exists(self) -> bool:
        return self._retry("checking the repository", lambda _: self.inner.exists())

    def create(self) -> None:
        self._retry("creating the repository", lambda _: self.inner.create())


# -- bandwidth ------------------------------------------------------------------


class TokenBucket:
    """Bytes per second, shared by every thread.

    A request larger than the bucket is allowed to run the balance negative;
    the caller (and every later one) then waits until it is paid back, so the
    long-run rate holds whatever the object sizes. Kept as the time at which
    the balance is back to zero: each request queues behind the ones before it.
    A request cancelled while it waits hands back what it has not paid yet,
    and every request queued behind it moves up by as much.
    """

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(rate / 4, 64 * 1024))
        self._paid_until = time.monotonic() - self.burst / self.rate  # earlier than now: tokens to spare
        self._waiting: list[list[float]] = []  # [end time] of every waiting request, in queue order
        self._lock = threading.Lock()

    def consume(
        self, n: int, sleep: Callable[[float], None] = time.sleep, cancel: threading.Event | None = None
    ) -> None:
        """Take ``n`` bytes, waiting until they are paid for; raise Cancelled if ``cancel`` is set first."""
        with self._lock:
            now = time.monotonic()
            end = max(self._paid_until, now - self.burst / self.rate) + n / self.rate
            self._paid_until = end
            if end <= now:
                return
            ticket = [end]
            self._waiting.append(ticket)
        try:
            while True:
                with self._lock:
                    left = ticket[0] - time.monotonic()
                if left <= 0:
                    return
                if cancel is None:
                    sleep(min(left, _SLICE))  # in slices: a cancelled request ahead moves this one up
                elif cancel.wait(min(left, _SLICE)):
                    self._refund(ticket, n)
                    raise Cancelled("an upload waiting for bandwidth was cancelled: the run is stopping")
        finally:
            with self._lock:
                if any(t is ticket for t in self._waiting):
                    self._waiting = [t for t in self._waiting if t is not ticket]

    def _refund(self, ticket: list[float], n: int) -> None:
        with self._lock:
            unpaid = max(0.0, min(ticket[0] - time.monotonic(), n / self.rate))
            behind = False
            for t in self._waiting:
                if behind:
                    t[0] -= unpaid
                behind = behind or t is ticket
            self._waiting = [t for t in self._waiting if t is not ticket]
            self._paid_until -= unpaid


class RateLimitBackend(_Wrapper):
    """Limits upload and download bytes per second (None: no limit)."""

    def __init__(self, inner: Backend, *, upload: float | None = None, download: float | None = None) -> None:
        super().__init__(inner)
        self.upload = TokenBucket(upload) if upload else None
        self.download = TokenBucket(download) if download else None

    def save(self, type: ObjectType, name: str, data: bytes | memoryview) -> None:
        if self.upload:
            self.upload.consume(len(data), cancel=current_cancel())
            _check_cancel(f"saving {type.value}/{name}", self.location)
        self.inner.save(type, name, data)

    def load(self, type: ObjectType, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if self.download and length is not None:
            self.download.consume(length, cancel=current_cancel())  # pay before, so concurrent readers queue up
            return self.inner.load(type, name, offset, length)
        data = self.inner.load(type, name, offset, length)
        if self.download:
            self.download.consume(len(data), cancel=current_cancel())
        return data


# -- connections ----------------------------------------------------------------


class ConnectionLimitBackend(_Wrapper):
    """At most ``connections`` operations in flight at once."""

    def __init__(self, inner: Backend, connections: int) -> None:
        super().__init__(inner)
        if connections < 1:
            raise ValueError("connections must be at least 1")
        self._sem = threading.BoundedSemaphore(connections)

    def _with(self, fn: Callable[[], T]) -> T:
        cancel = current_cancel()
        if cancel is None:
            with self._sem:
                return fn()
        while not self._sem.acquire(timeout=_SLICE):
            _check_cancel("an operation waiting for a connection", self.location)
        try:
            return fn()
        finally:
            self._sem.release()

    def save(self, type: ObjectType, name: str, data: bytes | memoryview) -> None:
        self._with(lambda: self.inner.save(type, name, data))

    def load(self, type: ObjectType, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self._with(lambda: self.inner.load(type, name, offset, length))

    def stat(self, type: ObjectType, name: str) -> ObjectInfo:
        return self._with(lambda: self.inner.stat(type, name))

    def list(self, type: ObjectType) -> Iterator[ObjectInfo]:
        # one slot per step, never held while the caller works on an item
        it = iter(self.inner.list(type))
        while True:
            with self._sem:
                try:
                    info = next(it)
                except StopIteration:
                    return
            yield info

    def remove(self, type: ObjectType, name: str) -> None:
        self._with(lambda: self.inner.remove(type, name))

    def exists(self) -> bool:
        return self._with(self.inner.exists)

    def create(self) -> None:
        self._with(self.inner.create)


# -- fault injection (tests) ----------------------------------------------------


class FaultyBackend(_Wrapper):
    """Injects failures, seeded so a failing test can be replayed.

    error_rate       each call raises a "dropped connection" TransientError with this probability
                     (before doing anything; list may fail part-way through)
    lost_ack_rate    save stores the data, then raises TransientError anyway (the reply was lost)
    truncate_rate    load silently returns a prefix of the bytes
    max_delay        each call first sleeps a random time up to this many seconds
    """

    checks_whole_loads = False  # (whatever the backend under it does: it cuts loads short on purpose)

    def __init__(
        self,
        inner: Backend,
        *,
        seed: int = 0,
        error_rate: float = 0.0,
        lost_ack_rate: float = 0.0,
        truncate_rate: float = 0.0,
        max_delay: float = 0.0,
    ) -> None:
        super().__init__(inner)
        self.error_rate = error_rate
        self.lost_ack_rate = lost_ack_rate
        self.truncate_rate = truncate_rate
        self.max_delay = max_delay
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.injected: dict[str, int] = {"error": 0, "lost_ack": 0, "truncate": 0}

    def _roll(self, p: float, kind: str) -> bool:
        if p <= 0:
            return False
        with self._lock:
            hit = self._rng.random() < p
            if hit:
                self.injected[kind] += 1
        return hit

    def _before(self, what: str) -> None:
        if self.max_delay > 0:
            with self._lock:
                d = self._rng.uniform(0, self.max_delay)
            time.sleep(d)
        if self._roll(self.error_rate, "error"):
            raise TransientError(f"injected fault: connection to {self.location} dropped during {what}")

    def save(self, type: ObjectType, name: str, data: bytes | memoryview) -> None:
        self._before(f"save of {type.value}/{name}")
        self.inner.save(type, name, data)
        if self._roll(self.lost_ack_rate, "lost_ack"):
            raise TransientError(f"injected fault: connection to {self.location} dropped after saving {type.value}/{name}")

    def load(self, type: ObjectType, name: str, offset: int = 0, length: int | None = None) -> bytes:
        self._before(f"load of {type.value}/{name}")
        data = self.inner.load(type, name, offset, length)
        if data and self._roll(self.truncate_rate, "truncate"):
            with self._lock:
                cut = self._rng.randrange(len(data))
            return data[:cut]
        return data

    def stat(self, type: ObjectType, name: str) -> ObjectInfo:
        self._before(f"stat of {type.value}/{name}")
        return self.inner.stat(type, name)

    def list(self, type: ObjectType) -> Iterator[ObjectInfo]:
        # a listing fails at most once, before it starts or after a random number of items
        fail_at = -1
        if self._roll(self.error_rate, "error"):
            with self._lock:
                fail_at = self._rng.randrange(0, 1000) if self._rng.random() < 0.5 else 0
        for i, info in enumerate(self.inner.list(type)):
            if i == fail_at:
                break
            yield info
        else:
            if fail_at < 0:
                return
        raise TransientError(f"injected fault: connection to {self.location} dropped during the {type.value} listing")

    def remove(self, type: ObjectType, name: str) -> None:
        self._before(f"removal of {type.value}/{name}")
        self.inner.remove(type, name)

    def exists(self) -> bool:
        self._before("exists")
        return self.inner.exists()

    def create(self) -> None:
        self._before("create")
        self.inner.create()


def wrap_backend(
    backend: Backend,
    *,
    retries: bool | dict[str, float] = True,
    limit_upload: float | None = None,
    limit_download: float | None = None,
    connections: int | None = None,
    notify: Callable[[str], None] | None = None,
) -> Backend:
    """Stack the wrappers a repository wants around ``backend``.

    ``limit_upload``/``limit_download`` are bytes per second; ``connections``
    bounds concurrent operations; ``retries`` is True (defaults), False, or a
    dict of RetryBackend keyword arguments; ``notify`` is told about retries.
    """
    b: Backend = backend
    if connections:
        b = ConnectionLimitBackend(b, connections)
    if limit_upload or limit_download:
        b = RateLimitBackend(b, upload=limit_upload, download=limit_download)
    if isinstance(retries, dict):
        b = RetryBackend(b, notify=notify, **retries)  # type: ignore[arg-type]
    elif retries:
        b = RetryBackend(b, notify=notify)
    return b
