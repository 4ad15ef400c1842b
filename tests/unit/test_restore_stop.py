"""A restore that is stopping (Ctrl-C, SIGTERM, an error) does not wait for the work in flight.

* Worker processes busy with a window are killed, not waited for (``WorkerProcesses.kill``): what they
  leave half-written is what a crash leaves, and the marker makes a rerun resume.
* A download waiting for bandwidth gives up as soon as the fetcher is aborted (``Fetcher.abort``).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

from tuckbox.backends.memory import MemoryBackend
from tuckbox.backends.wrappers import RateLimitBackend
from tuckbox.errors import Cancelled, PermanentError, TransientError
from tuckbox.restorer.fetch import Fetcher
from tuckbox.restorer.workers import WorkerProcesses
from tuckbox.restorer.writer import Window
from tuckbox.types import ObjectType


class _Report:
    def __getattr__(self, name: str) -> Any:
        return lambda *a: None


class _Stuck:
    """A window writer that never finishes its window (a download at a few bytes per second)."""

    def __init__(self, report: Any) -> None:
        self.report = report

    def run(self, w: Window) -> None:
        time.sleep(3600)


def test_killed_workers_stop_mid_window(tmp_path):
    pool = WorkerProcesses(2, _Stuck, _Report(), os.fsencode(tmp_path))
    pids = [w.pid for w in pool.workers]
    futures = [pool.submit(None, Window(i)) for i in range(2)]
    time.sleep(0.3)  # (each worker is in its window)
    assert not any(f.done() for f in futures)
    pool.kill()
    done = threading.Thread(target=pool.shutdown)
    done.start()
    done.join(timeout=60)
    assert not done.is_alive(), "shutdown waited for the windows in flight"
    for f in futures:
        assert f.exception(timeout=10) is not None  # reported as not done: the restore is failing anyway
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaped


class _Pack:
    def __init__(self, name: str) -> None:
        self.name = name


class _Entry:
    def __init__(self, offset: int, length: int) -> None:
        self.offset, self.length = offset, length


class _Blob:
    def __init__(self, pack: _Pack, offset: int, length: int) -> None:
        self.pack, self.entry = pack, _Entry(offset, length)


def test_an_aborted_fetch_stops_waiting_for_bandwidth():
    inner = MemoryBackend()
    inner.save(ObjectType.PACK, "ab" * 32, b"x" * (4 << 20))
    slow = RateLimitBackend(inner, download=64 * 1024)  # 4 MiB at 64 KiB/s: about a minute
    fetcher = Fetcher(slow, 1, 1 << 20)
    group = [_Blob(_Pack("ab" * 32), 0, 4 << 20)]
    outcome: list[BaseException | bytes] = []

    def load() -> None:
        try:
            outcome.append(fetcher.load(group))
        except BaseException as e:  # noqa: BLE001
            outcome.append(e)

    t = threading.Thread(target=load)
    t.start()
    time.sleep(0.3)
    fetcher.abort()
    t.join(timeout=30)
    assert not t.is_alive(), "the load kept waiting for bandwidth after the abort"
    assert len(outcome) == 1 and isinstance(outcome[0], Cancelled), outcome


class _Failing(MemoryBackend):
    """Packs whose names are in ``bad`` fail every load, as after all of a load's retries."""

    def __init__(self, bad: set[str]) -> None:
        super().__init__()
        self.bad = bad

    def load(self, type: ObjectType, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if name in self.bad:
            raise TransientError(f"connection refused (pack {name[:4]})")
        return super().load(type, name, offset, length)


def test_a_storage_that_went_down_stops_the_fetches_but_one_bad_pack_does_not():
    """Failed range loads in a row, of more than one pack, with none succeeding between: the server is
    gone, and the restore stops with one line (a rerun resumes) instead of failing every file left one by
    one. One pack the server cannot serve costs only the files that need it, however many ranges."""
    names = [c * 64 for c in "abcd"]
    backend = _Failing({names[0]})
    for n in names:
        backend.save(ObjectType.PACK, n, b"x" * 4096)
    fetcher = Fetcher(backend, 1, 1 << 20)

    def group(name: str, at: int = 0) -> list[Any]:
        return [_Blob(_Pack(name), at, 100)]

    for at in range(0, 1000, 100):  # one bad pack, ten ranges in a row: each an error, no stop
        assert isinstance(fetcher.load(group(names[0], at)), TransientError)
    assert fetcher.load(group(names[1])) == b"x" * 100
    backend.bad = set(names)  # the server goes away
    assert isinstance(fetcher.load(group(names[0])), TransientError)
    assert isinstance(fetcher.load(group(names[1])), TransientError)
    with pytest.raises(PermanentError, match="the storage stopped answering .*run the same restore again"):
        fetcher.load(group(names[2]))
    backend.bad = {names[0]}  # back: a success starts the count again
    assert fetcher.load(group(names[3])) == b"x" * 100
    assert isinstance(fetcher.load(group(names[0])), TransientError)
