"""Backend wrappers: retries, bandwidth and connection limits, fault injection."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest

from tuckbox.backends.memory import MemoryBackend
from tuckbox.backends.wrappers import (
    ConnectionLimitBackend,
    FaultyBackend,
    RateLimitBackend,
    RetryBackend,
    TokenBucket,
    wrap_backend,
)
from tuckbox.errors import ObjectExists, ObjectNotFound, PermanentError, TransientError
from tuckbox.testing.conformance import CONFORMANCE_CHECKS
from tuckbox.types import Backend, ObjectInfo, ObjectType


def _name(i: object) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def _fast_retry(inner: Backend, **kw) -> RetryBackend:
    kw.setdefault("attempts", 12)
    return RetryBackend(inner, base_delay=0.001, max_delay=0.01, seed=1, **kw)


@pytest.mark.parametrize("check", CONFORMANCE_CHECKS, ids=lambda c: c.__name__)
def test_full_stack_conformance(check, monkeypatch):
    monkeypatch.setenv("TUCKBOX_CONFORMANCE_BIG", "0")
    mem = MemoryBackend()
    mem.create()
    b = wrap_backend(mem, retries={"base_delay": 0.001, "max_delay": 0.01}, limit_upload=1e12, limit_download=1e12, connections=3)
    check(b)


@pytest.mark.parametrize("check", CONFORMANCE_CHECKS, ids=lambda c: c.__name__)
def test_retry_over_faulty_passes_conformance(check, monkeypatch):
    """5% dropped connections (some after the data was stored) are invisible through RetryBackend."""
    monkeypatch.setenv("TUCKBOX_CONFORMANCE_BIG", "0")
    mem = MemoryBackend()
    mem.create()
    faulty = FaultyBackend(mem, seed=42, error_rate=0.05, lost_ack_rate=0.02)
    check(_fast_retry(faulty))


def test_round_trips_at_five_percent_errors():
    mem = MemoryBackend()
    faulty = FaultyBackend(mem, seed=7, error_rate=0.05, lost_ack_rate=0.05, truncate_rate=0.0)
    b = _fast_retry(faulty)
    b.create()
    payloads = {_name(i): os.urandom(1000 + i) for i in range(500)}
    errors: list[BaseException] = []

    def worker(items):
        try:
            for n, d in items:
                b.save(ObjectType.PACK, n, d)
                assert b.load(ObjectType.PACK, n) == d
                assert b.load(ObjectType.PACK, n, 10, 20) == d[10:30]
                assert b.stat(ObjectType.PACK, n).size == len(d)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    items = list(payloads.items())
    threads = [threading.Thread(target=worker, args=(items[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert {i.name for i in b.list(ObjectType.PACK)} == set(payloads)
    for n in list(payloads)[:100]:
        b.remove(ObjectType.PACK, n)
    assert len(list(b.list(ObjectType.PACK))) == 400
    # 500 saves at 5 %: about 25 lost acknowledgements expected (threads share the RNG, so the count varies)
    assert faulty.injected["error"] > 20 and faulty.injected["lost_ack"] > 5
    assert b.retries >= faulty.injected["error"]


def test_lost_ack_save_is_success_only_for_same_size():
    mem = MemoryBackend()
    faulty = FaultyBackend(mem, seed=0, lost_ack_rate=1.0)
    b = _fast_retry(faulty, attempts=3)
    b.save(ObjectType.INDEX, _name(1), b"abc")  # stored, ack lost, retry sees ObjectExists of the same size
    assert mem.load(ObjectType.INDEX, _name(1)) == b"abc"
    # a different object of another size under the same name is a real conflict
    mem.save(ObjectType.INDEX, _name(2), b"someone else's")
    faulty.lost_ack_rate = 0.0
    with pytest.raises(ObjectExists):
        b.save(ObjectType.INDEX, _name(2), b"mine")


def test_object_exists_on_first_attempt_is_not_hidden():
    mem = MemoryBackend()
    mem.save(ObjectType.LOCK, _name(1), b"abc")
    b = _fast_retry(mem)
    with pytest.raises(ObjectExists):
        b.save(ObjectType.LOCK, _name(1), b"xyz")  # same size, but no earlier attempt: a real conflict


class _Counting:
    """A backend whose every call fails with a given error, counting the calls."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc
        self.calls = 0
        self.location = "counting:"

    def _fail(self, *a, **k):
        self.calls += 1
        raise self.exc

    save = load = stat = remove = exists = create = _fail

    def list(self, type):
        self.calls += 1
        raise self.exc
        yield  # pragma: no cover

    def close(self) -> None:
        pass


@pytest.mark.parametrize("exc", [PermanentError("denied"), ObjectNotFound("gone"), ValueError("bug")])
def test_non_transient_errors_not_retried(exc):
    inner = _Counting(exc)
    b = _fast_retry(inner)
    with pytest.raises(type(exc)):
        b.load(ObjectType.PACK, _name(1))
    with pytest.raises(type(exc)):
        list(b.list(ObjectType.PACK))
    with pytest.raises(type(exc)):
        b.stat(ObjectType.PACK, _name(1))
    assert inner.calls == 3
    assert b.retries == 0


def test_transient_errors_bounded_by_attempts():
    inner = _Counting(TransientError("reset"))
    slept: list[float] = []
    b = RetryBackend(inner, attempts=5, base_delay=1.0, max_delay=4.0, seed=3, sleep=slept.append)
    with pytest.raises(TransientError):
        b.save(ObjectType.PACK, _name(1), b"x")
    assert inner.calls == 5
    assert len(slept) == 4
    # exponential with equal jitter: each wait in [cap/2, cap], caps 1, 2, 4, 4
    for wait, cap in zip(slept, [1, 2, 4, 4], strict=True):
        assert cap / 2 <= wait <= cap


class _Flaky(_Counting):
    """Fails with TransientError while ``down``; otherwise succeeds."""

    def __init__(self) -> None:
        super().__init__(TransientError("connection refused"))
        self.down = True

    def _fail(self, *a, **k):
        self.calls += 1
        if self.down:
            raise self.exc
        return ObjectInfo(ObjectType.PACK, _name(0), 1)

    save = load = stat = remove = exists = create = _fail


def test_once_a_call_gave_up_the_others_stop_retrying():
    """A server gone for good: every call under way (a backup's four uploads, then its lock's removal) had its
    own minute of retries, one after the other, so the command stopped minutes after the documented minute.
    Once one call gives up, the others' next failure is final; a success (the server is back) ends that."""
    inner = _Flaky()
    b = RetryBackend(inner, attempts=4, seed=3, sleep=lambda _s: None)
    with pytest.raises(TransientError):
        b.save(ObjectType.PACK, _name(1), b"x")
    assert inner.calls == 4
    with pytest.raises(TransientError):
        b.remove(ObjectType.LOCK, _name(2))
    with pytest.raises(TransientError):
        list(b.list(ObjectType.PACK))
    assert inner.calls == 6  # one attempt each
    inner.down = False
    b.stat(ObjectType.PACK, _name(3))  # the storage is back ...
    inner.down, inner.calls = True, 0
    with pytest.raises(TransientError):
        b.stat(ObjectType.PACK, _name(3))
    assert inner.calls == 4  # ... so a new outage is retried in full again


def test_a_call_pausing_between_attempts_stops_when_another_gives_up():
    inner = _Counting(TransientError("connection refused"))
    b = RetryBackend(inner, attempts=5, base_delay=60.0, max_delay=60.0, seed=3)  # pauses of 30-60 s
    failed: list[BaseException] = []

    def waiting() -> None:
        try:
            b.stat(ObjectType.PACK, _name(1))
        except BaseException as e:  # noqa: BLE001
            failed.append(e)

    t = threading.Thread(target=waiting)
    t.start()
    while inner.calls < 1:
        time.sleep(0.01)
    b.attempts = 1  # the next call gives up at its first failure
    with pytest.raises(TransientError):
        b.load(ObjectType.PACK, _name(2))
    t.join(timeout=20)  # (it would otherwise pause at least 30 s more)
    assert not t.is_alive()
    assert len(failed) == 1 and isinstance(failed[0], TransientError)
    assert inner.calls == 3  # its first attempt, the other call's, and one more of its own


def test_retries_are_told_once_per_interval_never_for_permanent_errors():
    """A user waiting on retries hears about it (the CLI prints a note), but not once per attempt."""
    notes: list[str] = []
    inner = _Counting(TransientError("connection reset by the server"))
    b = RetryBackend(inner, attempts=4, seed=3, sleep=lambda _s: None, notify=notes.append, notify_every=3600)
    with pytest.raises(TransientError):
        b.save(ObjectType.PACK, _name(1), b"x")
    with pytest.raises(TransientError):
        b.stat(ObjectType.PACK, _name(2))
    assert inner.calls == 5 and b.retries == 3  # the stat after the save gave up: one attempt (next test)
    assert len(notes) == 1  # three retries, one note within the interval
    assert "connection reset by the server" in notes[0] and "counting:" in notes[0] and "retrying" in notes[0]
    b2 = RetryBackend(inner, attempts=3, seed=3, sleep=lambda _s: None, notify=notes.append, notify_every=0)
    with pytest.raises(TransientError):
        b2.load(ObjectType.PACK, _name(3))
    assert len(notes) == 3  # no interval: one note per retry
    quiet = RetryBackend(_Counting(PermanentError("denied")), notify=notes.append, notify_every=0)
    with pytest.raises(PermanentError):
        quiet.load(ObjectType.PACK, _name(4))
    assert len(notes) == 3  # a permanent error is not retried, so nothing to tell


def test_forked_processes_share_the_note_interval(tmp_path):
    """A restore's forked workers (and a backup's pack process) retry through copies of one wrapper: each
    printed its own note, three at once when the server went away, where one a minute is promised."""
    import os

    notes = tmp_path / "notes"

    def note(text: str) -> None:
        with open(notes, "a") as f:
            f.write(text.replace("\n", " ") + "\n")

    b = RetryBackend(_Counting(TransientError("reset")), attempts=2, seed=3, sleep=lambda _s: None, notify=note,
                     notify_every=3600)
    for _ in range(3):
        pid = os.fork()
        if pid == 0:  # the child: retry once (one note at most), then leave without running pytest's exit
            code = 0
            try:
                b.stat(ObjectType.PACK, _name(1))
            except TransientError:
                pass
            except BaseException:  # noqa: BLE001
                code = 1
            os._exit(code)
        os.waitpid(pid, 0)  # our own child
    with pytest.raises(TransientError):
        b.stat(ObjectType.PACK, _name(2))
    assert len(notes.read_text().splitlines()) == 1


def test_transient_errors_bounded_by_time():
    inner = _Counting(TransientError("reset"))
    b = RetryBackend(inner, attempts=1000, base_delay=0.02, max_delay=0.05, max_elapsed=0.3, seed=3)
    t0 = time.monotonic()
    with pytest.raises(TransientError):
        b.stat(ObjectType.PACK, _name(1))
    assert time.monotonic() - t0 < 1.0
    assert 3 < inner.calls < 1000


def test_remove_retried_after_lost_ack():
    mem = MemoryBackend()
    mem.save(ObjectType.LOCK, _name(1), b"l")

    class LostAckRemove(FaultyBackend):
        first = True

        def remove(self, type, name):
            self.inner.remove(type, name)
            if self.first:
                self.first = False
                raise TransientError("dropped after remove")

    b = _fast_retry(LostAckRemove(mem))
    b.remove(ObjectType.LOCK, _name(1))
    with pytest.raises(ObjectNotFound):
        b.remove(ObjectType.LOCK, _name(1))


def test_truncated_ranged_reads_are_retried():
    mem = MemoryBackend()
    data = os.urandom(10_000)
    mem.save(ObjectType.PACK, _name(1), data)
    faulty = FaultyBackend(mem, seed=5, truncate_rate=0.3)
    b = _fast_retry(faulty, attempts=20)
    for i in range(200):
        off = (i * 37) % 9000
        assert b.load(ObjectType.PACK, _name(1), off, 1000) == data[off : off + 1000]
    assert b.load(ObjectType.PACK, _name(1), 9990, 100) == data[9990:]  # a short read at the end is not truncation
    assert faulty.injected["truncate"] > 30


class _StatCounting(MemoryBackend):
    """A memory backend that counts its stats (and may say its whole loads are checked)."""

    def __init__(self, checks_whole_loads: bool) -> None:
        super().__init__()
        self.checks_whole_loads = checks_whole_loads
        self.stats = 0

    def stat(self, type: ObjectType, name: str) -> ObjectInfo:
        self.stats += 1
        return super().stat(type, name)


@pytest.mark.parametrize("checked", [False, True])
def test_whole_loads_of_unnamed_objects_stat_only_where_the_backend_does_not_check(checked):
    """Config and locks have no hash name to check a whole load against: the retry wrapper asks for the
    size (one more round trip) unless the backend itself never returns a short whole load."""
    inner = _StatCounting(checked)
    inner.save(ObjectType.CONFIG, "config", b"c" * 100)
    inner.save(ObjectType.LOCK, _name(1), b"l" * 100)
    b = _fast_retry(inner)
    assert b.load(ObjectType.CONFIG, "config") == b"c" * 100
    assert b.load(ObjectType.LOCK, _name(1)) == b"l" * 100
    assert inner.stats == (0 if checked else 2)


def test_truncated_whole_loads_of_unnamed_objects_are_retried_under_fault_injection():
    """FaultyBackend cuts loads short whatever the backend under it checks: the wrapper above it must
    not trust the inner backend's ``checks_whole_loads`` through it."""
    inner = _StatCounting(True)
    data = os.urandom(5000)
    inner.save(ObjectType.CONFIG, "config", data)
    faulty = FaultyBackend(inner, seed=3, truncate_rate=0.3)
    b = _fast_retry(faulty, attempts=20)
    for _ in range(100):
        assert b.load(ObjectType.CONFIG, "config") == data
    assert faulty.injected["truncate"] > 15


def test_faulty_is_deterministic():
    def run() -> list[str]:
        mem = MemoryBackend()
        f = FaultyBackend(mem, seed=99, error_rate=0.3)
        out = []
        for i in range(50):
            try:
                f.save(ObjectType.INDEX, _name(i), b"x")
                out.append("ok")
            except TransientError:
                out.append("err")
        return out

    assert run() == run()


def test_faulty_delays():
    f = FaultyBackend(MemoryBackend(), seed=1, max_delay=0.02)
    t0 = time.monotonic()
    for i in range(20):
        f.save(ObjectType.INDEX, _name(i), b"x")
    assert 0.05 < time.monotonic() - t0 < 2


def test_listing_restarts_without_duplicates():
    mem = MemoryBackend()
    names = {_name(i) for i in range(3000)}
    for n in names:
        mem.save(ObjectType.SNAPSHOT, n, b"s")
    faulty = FaultyBackend(mem, seed=11, error_rate=0.7)  # most listings fail, at the start or part-way
    b = _fast_retry(faulty, attempts=30)
    listed = [i.name for i in b.list(ObjectType.SNAPSHOT)]
    assert len(listed) == len(set(listed)) == 3000
    assert b.retries > 0


def test_upload_rate_limit():
    rate = 200_000  # bytes per second
    b = RateLimitBackend(MemoryBackend(), upload=rate)
    assert b.upload is not None
    burst = b.upload.burst
    total = 0
    t0 = time.monotonic()

    def worker(k: int) -> None:
        for i in range(6):
            b.save(ObjectType.PACK, _name(f"{k}-{i}"), b"u" * 25_000)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    total = 3 * 6 * 25_000  # 450 kB
    expected = (total - burst) / rate
    assert expected * 0.8 <= elapsed <= expected * 1.6 + 0.3, (elapsed, expected)


def test_download_rate_limit():
    rate = 300_000
    mem = MemoryBackend()
    mem.save(ObjectType.PACK, _name(1), os.urandom(100_000))
    b = RateLimitBackend(mem, download=rate)
    burst = b.download.burst  # type: ignore[union-attr]
    t0 = time.monotonic()
    for _ in range(5):
        assert len(b.load(ObjectType.PACK, _name(1))) == 100_000
    for _ in range(5):
        assert len(b.load(ObjectType.PACK, _name(1), 0, 20_000)) == 20_000
    elapsed = time.monotonic() - t0
    expected = (600_000 - burst) / rate
    assert expected * 0.8 <= elapsed <= expected * 1.6 + 0.3, (elapsed, expected)


def test_uploads_do_not_limit_downloads():
    mem = MemoryBackend()
    mem.save(ObjectType.PACK, _name(1), os.urandom(500_000))
    b = RateLimitBackend(mem, upload=1000)
    t0 = time.monotonic()
    b.load(ObjectType.PACK, _name(1))
    assert time.monotonic() - t0 < 0.5


def test_token_bucket_long_run_rate():
    bucket = TokenBucket(1_000_000, burst=10_000)
    t0 = time.monotonic()
    for _ in range(100):
        bucket.consume(5_000)
    elapsed = time.monotonic() - t0
    assert 0.4 <= elapsed <= 0.9


def test_connection_limit():
    class Slow(MemoryBackend):
        def __init__(self) -> None:
            super().__init__()
            self.active = 0
            self.peak = 0
            self.guard = threading.Lock()

        def save(self, type, name, data):
            with self.guard:
                self.active += 1
                self.peak = max(self.peak, self.active)
            time.sleep(0.01)
            try:
                super().save(type, name, data)
            finally:
                with self.guard:
                    self.active -= 1

    slow = Slow()
    b = ConnectionLimitBackend(slow, 2)
    threads = [
        threading.Thread(target=lambda k=k: [b.save(ObjectType.PACK, _name(f"{k}{i}"), b"x") for i in range(10)])
        for k in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert slow.peak == 2
    assert len(list(b.list(ObjectType.PACK))) == 60
    # a listing in progress does not hold a slot: other calls work while iterating with 1 connection
    one = ConnectionLimitBackend(slow, 1)
    for info in one.list(ObjectType.PACK):
        assert one.stat(ObjectType.PACK, info.name).size == 1


def test_wrap_backend_layers_and_location():
    mem = MemoryBackend("memory:x")
    b = wrap_backend(mem, limit_upload=1e6, connections=4)
    assert isinstance(b, RetryBackend)
    assert isinstance(b.inner, RateLimitBackend)
    assert isinstance(b.inner.inner, ConnectionLimitBackend)
    assert b.inner.inner.inner is mem
    assert b.location == "memory:x"
    assert wrap_backend(mem, retries=False) is mem
    assert isinstance(b, Backend)
    b.save(ObjectType.CONFIG, "config", b"c")
    assert list(b.list(ObjectType.CONFIG)) == [ObjectInfo(ObjectType.CONFIG, "config", 1)]
