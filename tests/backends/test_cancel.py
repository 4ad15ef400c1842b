"""Cancelling storage calls (``cancel_scope``): a stopping backup must not wait for bandwidth, a free
connection or the next retry, and what it gave up must not hold up the calls that come after."""

from __future__ import annotations

import threading
import time

import pytest

from tuckbox.backends.memory import MemoryBackend
from tuckbox.backends.wrappers import (
    ConnectionLimitBackend,
    RateLimitBackend,
    RetryBackend,
    TokenBucket,
    cancel_scope,
)
from tuckbox.errors import Cancelled, TransientError
from tuckbox.types import ObjectType


def _name(i: object) -> str:
    import hashlib

    return hashlib.sha256(str(i).encode()).hexdigest()


def _in_thread(fn) -> tuple[threading.Thread, list[BaseException], list[float]]:
    errors: list[BaseException] = []
    ended: list[float] = []

    def run() -> None:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        ended.append(time.monotonic())

    t = threading.Thread(target=run)
    t.start()
    return t, errors, ended


def test_cancelled_upload_stops_waiting_for_bandwidth_and_stores_nothing():
    mem = MemoryBackend()
    b = RateLimitBackend(mem, upload=100_000)  # 1 MB takes ~10 s
    stop = threading.Event()

    def save() -> None:
        with cancel_scope(stop):
            b.save(ObjectType.PACK, _name(1), b"x" * 1_000_000)

    t, errors, ended = _in_thread(save)
    time.sleep(0.3)
    t0 = time.monotonic()
    stop.set()
    t.join(5)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], Cancelled), errors
    assert ended[0] - t0 < 0.5
    assert list(mem.list(ObjectType.PACK)) == []  # never reached the storage


def test_a_cancelled_request_hands_back_its_bandwidth():
    """Requests queued behind a cancelled one move up: they are not held up by bytes nobody sends."""
    bucket = TokenBucket(100_000, burst=10_000)
    stop = threading.Event()
    big, big_err, _ = _in_thread(lambda: bucket.consume(1_000_000, cancel=stop))  # ~10 s
    time.sleep(0.1)
    small, small_err, small_end = _in_thread(lambda: bucket.consume(20_000))  # behind it: ~10.2 s
    time.sleep(0.2)
    t0 = time.monotonic()
    stop.set()
    big.join(5)
    small.join(5)
    assert isinstance(big_err[0], Cancelled) and not small_err
    assert small_end[0] - t0 < 0.6, small_end[0] - t0  # its own 0.2 s, not the 10 s of the cancelled one
    t1 = time.monotonic()
    bucket.consume(20_000)  # and the balance is back to normal afterwards
    assert time.monotonic() - t1 < 0.5


def test_uncancelled_waits_keep_the_long_run_rate():
    bucket = TokenBucket(1_000_000, burst=10_000)
    stop = threading.Event()
    t0 = time.monotonic()
    for _ in range(100):
        bucket.consume(5_000, cancel=stop)
    assert 0.4 <= time.monotonic() - t0 <= 0.9


def test_cancel_during_retry_backoff():
    class Down(MemoryBackend):
        def save(self, type: ObjectType, name: str, data: bytes | memoryview) -> None:
            raise TransientError("connection dropped")

    b = RetryBackend(Down(), attempts=50, base_delay=2.0, max_delay=30.0, seed=1)
    stop = threading.Event()

    def save() -> None:
        with cancel_scope(stop):
            b.save(ObjectType.PACK, _name(2), b"y")

    t, errors, ended = _in_thread(save)
    time.sleep(0.3)  # first attempt failed; now waiting ~1-2 s before the next
    t0 = time.monotonic()
    stop.set()
    t.join(5)
    assert isinstance(errors[0], Cancelled) and ended[0] - t0 < 0.5
    assert b.retries == 1


def test_cancel_while_waiting_for_a_connection():
    release = threading.Event()

    class Slow(MemoryBackend):
        def save(self, type: ObjectType, name: str, data: bytes | memoryview) -> None:
            release.wait(10)
            super().save(type, name, data)

    mem = Slow()
    b = ConnectionLimitBackend(mem, 1)
    holder, _, _ = _in_thread(lambda: b.save(ObjectType.PACK, _name(3), b"a"))  # holds the only connection
    time.sleep(0.1)
    stop = threading.Event()

    def save() -> None:
        with cancel_scope(stop):
            b.save(ObjectType.PACK, _name(4), b"b")

    t, errors, ended = _in_thread(save)
    time.sleep(0.2)
    t0 = time.monotonic()
    stop.set()
    t.join(5)
    assert isinstance(errors[0], Cancelled) and ended[0] - t0 < 0.5
    release.set()
    holder.join(5)
    assert [i.name for i in mem.list(ObjectType.PACK)] == [_name(3)]


def test_no_scope_no_cancel():
    """Outside a cancel scope (everything but a backup's data-pack uploads) nothing is cancelled."""
    b = RateLimitBackend(MemoryBackend(), upload=1_000_000)
    stop = threading.Event()
    stop.set()
    with cancel_scope(stop):
        pass
    b.save(ObjectType.PACK, _name(5), b"z" * 1000)
    with pytest.raises(Cancelled):
        with cancel_scope(stop):
            b.save(ObjectType.PACK, _name(6), b"z" * 1000)
