"""A lock that may have looked stale to another machine must stop its holder from recording anything:
a lapse (the machine slept, the storage was unreachable) at any moment, or its object removed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tuckbox.archiver.backup import BackupRequest, run_backup
from tuckbox.backends.local import LocalBackend
from tuckbox.backends.memory import MemoryBackend
from tuckbox.errors import LockLost
from tuckbox.repository import locks
from tuckbox.repository.locks import Lock
from tuckbox.repository.repo import Repository
from tuckbox.types import ObjectType

KEY = bytes(32)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(locks, "_elapsed", c)
    return c


def test_a_fresh_lock_is_held_and_a_lapsed_one_is_not(clock: Clock) -> None:
    backend = MemoryBackend()
    lock = Lock(backend, KEY, exclusive=False, background=False).acquire()
    lock.ensure_held()
    clock.now += locks.SAFE_FOR - 1
    lock.ensure_held()
    clock.now += 2
    with pytest.raises(LockLost, match="unrefreshed for 25 minutes"):
        lock.ensure_held()
    lock.release()


def test_a_gap_in_the_past_is_not_forgiven_by_a_later_refresh(clock: Clock) -> None:
    backend = MemoryBackend()
    lock = Lock(backend, KEY, exclusive=False, background=False).acquire()
    clock.now += locks.SAFE_FOR + 60  # asleep: a prune elsewhere may have judged the lock stale meanwhile
    lock.tick()  # refreshes (it was due): the lock object is fresh again ...
    assert len(list(backend.list(ObjectType.LOCK))) == 1
    with pytest.raises(LockLost):  # ... but what was deduplicated before the gap may be gone
        lock.ensure_held()
    lock.release()
    assert list(backend.list(ObjectType.LOCK)) == []


def test_regular_refreshes_keep_the_lock_held(clock: Clock) -> None:
    backend = MemoryBackend()
    lock = Lock(backend, KEY, exclusive=False, background=False).acquire()
    for _ in range(20):  # 20 refresh intervals: far longer than the staleness limit in total
        clock.now += locks.REFRESH_EVERY
        lock.tick()
        lock.ensure_held()
    assert len(list(backend.list(ObjectType.LOCK))) == 1
    lock.release()


def test_a_removed_lock_is_not_held(clock: Clock) -> None:
    backend = MemoryBackend()
    lock = Lock(backend, KEY, exclusive=False, background=False).acquire()
    backend.remove(ObjectType.LOCK, lock.name)  # 'tuckbox unlock --all' elsewhere
    with pytest.raises(LockLost, match="removed"):
        lock.ensure_held()
    lock.release()


def test_a_backup_whose_lock_lapsed_saves_no_snapshot_and_the_next_run_reuses_its_packs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUCKBOX_CACHE_DIR", str(tmp_path / "cache"))
    # packs stored in this process: the sleep is simulated by a save here moving this process's clock
    monkeypatch.setenv("TUCKBOX_PACK_PROCESS", "0")
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(6 << 20))
    repo = Repository.init(LocalBackend(str(tmp_path / "repo")), b"pw", created="t", host="h", user="u")
    clock = Clock()
    monkeypatch.setattr(locks, "_elapsed", clock)
    real_save = repo.backend.save

    def sleepy_save(type: ObjectType, name: str, data: bytes | memoryview) -> None:
        real_save(type, name, data)
        if type is ObjectType.PACK:
            clock.now += locks.STALE_AFTER  # the machine slept right after storing a pack

    monkeypatch.setattr(repo.backend, "save", sleepy_save)
    with pytest.raises(LockLost):
        run_backup(repo, BackupRequest([str(src)], checkpoint_interval=0))
    assert list(repo.backend.list(ObjectType.SNAPSHOT)) == []
    assert list(repo.backend.list(ObjectType.INDEX)) == []  # nothing recorded after the lapse
    assert list(repo.backend.list(ObjectType.LOCK)) == []
    monkeypatch.setattr(repo.backend, "save", real_save)
    from tuckbox.repository import journal

    monkeypatch.setattr(journal, "_running", lambda path: False)  # (the lapsed run was this same process)
    repo = Repository.open(LocalBackend(str(tmp_path / "repo")), lambda: b"pw")  # a new run: a new process
    result = run_backup(repo, BackupRequest([str(src)], checkpoint_interval=0))
    assert result.adopted_packs >= 1  # the packs stored before the lapse were checked and reused
    assert len(list(repo.backend.list(ObjectType.SNAPSHOT))) == 1


def test_waiting_for_a_lock_takes_it_once_the_holder_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    monkeypatch.setattr(locks, "RETRY_EVERY", 0.05)
    backend = MemoryBackend()
    pruning = Lock(backend, KEY, exclusive=True, background=False).acquire()
    with pytest.raises(locks.RepositoryLocked, match="exclusive lock"):  # no wait: refused at once
        Lock(backend, KEY, exclusive=False, background=False).acquire()
    said: list[str] = []
    threading.Timer(0.3, pruning.release).start()
    backup = Lock(backend, KEY, exclusive=False, background=False).acquire(wait=10, on_wait=said.append)
    assert len(said) == 1 and "waiting up to 10 s" in said[0] and "exclusive lock" in said[0]
    assert [lk.name for lk in locks.read_locks(backend, KEY)] == [backup.name]  # its failed attempts left nothing
    with pytest.raises(locks.RepositoryLocked, match=r"waited 0 s"):
        Lock(backend, KEY, exclusive=True, background=False).acquire(wait=0.2)
    backup.release()


def test_waiting_for_a_lock_stops_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    from tuckbox.errors import Interrupted

    monkeypatch.setattr(locks, "RETRY_EVERY", 0.05)
    backend = MemoryBackend()
    pruning = Lock(backend, KEY, exclusive=True, background=False).acquire()
    asked = iter([False, False, True])
    with pytest.raises(Interrupted):
        Lock(backend, KEY, exclusive=False, background=False).acquire(wait=60, should_stop=lambda: next(asked))
    assert [lk.name for lk in locks.read_locks(backend, KEY)] == [pruning.name]
    pruning.release()


def test_taking_a_lock_reads_the_others_back_but_not_its_own() -> None:
    """One round trip less per command on remote storage: the lock just written is known, not loaded;
    every other lock is (an exclusive one still refuses a shared lock; a shared one does not)."""
    loaded: list[str] = []

    class Recording(MemoryBackend):
        def load(self, type: ObjectType, name: str, offset: int = 0, length: int | None = None) -> bytes:
            loaded.append(name)
            return super().load(type, name, offset, length)

    backend = Recording()
    first = Lock(backend, KEY, exclusive=False, background=False).acquire()
    assert loaded == []
    second = Lock(backend, KEY, exclusive=False, background=False).acquire()
    assert loaded == [first.name]
    loaded.clear()
    with pytest.raises(locks.RepositoryLocked, match="shared lock"):
        Lock(backend, KEY, exclusive=True, background=False).acquire()
    assert sorted(loaded) == sorted([first.name, second.name])
    second.release()
    first.release()
    assert list(backend.list(ObjectType.LOCK)) == []


def test_a_lock_taken_before_a_fork_is_refreshed_from_a_thread_started_after(monkeypatch: pytest.MonkeyPatch) -> None:
    """A backup takes its lock before forking its pack process (no thread may run at the fork), then
    starts refreshing it from a thread: the lock object is replaced, and the old one removed, on time."""
    import threading
    import time

    monkeypatch.setattr(locks, "REFRESH_EVERY", 0.05)
    backend = MemoryBackend()
    lock = Lock(backend, KEY, exclusive=False, background=False).acquire()
    assert not [t for t in threading.enumerate() if t.name == "tuckbox-lock"]
    first = lock.name
    lock.refresh_in_background()
    lock.refresh_in_background()  # (once is enough: no second thread)
    assert len([t for t in threading.enumerate() if t.name == "tuckbox-lock"]) == 1
    deadline = time.monotonic() + 10
    while lock.name == first and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lock.name != first
    lock.ensure_held()
    lock.release()
    assert list(backend.list(ObjectType.LOCK)) == []
    assert not [t for t in threading.enumerate() if t.name == "tuckbox-lock"]


def _foreign_lock(backend: MemoryBackend, host: str, pid: int, ahead: float) -> None:
    import json
    import time

    from tuckbox.crypto.aead import seal

    doc = {"host": host, "pid": pid, "user": "u", "time": time.time() + ahead, "exclusive": True}
    backend.save(ObjectType.LOCK, "ab" * 16, seal(KEY, json.dumps(doc).encode(), locks.LOCK_AD))


def test_a_refusal_says_what_removes_a_lock_that_plain_unlock_would_keep() -> None:
    """A conflicting lock is never stale (a stale one does not conflict), so 'tuckbox unlock' would keep
    it: the refusal names 'unlock --all' for another machine's lock, and a lock dated ahead of this
    machine's clock (which stays alive that much longer) says so."""
    backend = MemoryBackend()
    _foreign_lock(backend, "otherbox", 1234, ahead=0)
    with pytest.raises(locks.RepositoryLocked) as e:
        Lock(backend, KEY, exclusive=False, background=False).acquire()
    assert "'tuckbox unlock --all' removes its lock now" in e.value.message and "ahead" not in e.value.message
    assert "run 'tuckbox unlock' if that process is gone" not in e.value.message

    backend = MemoryBackend()
    _foreign_lock(backend, "otherbox", 1234, ahead=3 * 86400)
    with pytest.raises(locks.RepositoryLocked) as e:
        Lock(backend, KEY, exclusive=False, background=False).acquire()
    assert "3 days ahead of this machine's clock" in e.value.message and "unlock --all" in e.value.message

    backend = MemoryBackend()
    _foreign_lock(backend, __import__("socket").gethostname(), os.getpid(), ahead=0)
    with pytest.raises(locks.RepositoryLocked) as e:
        Lock(backend, KEY, exclusive=False, background=False).acquire()
    assert f"pid {os.getpid()} is still running on this machine" in e.value.message


def test_two_waiters_whose_attempts_meet_do_not_keep_refusing_each_other(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two prunes (or a prune and a backup) started together with --lock-wait: each writes its lock, sees
    the other's and steps back. With the same pause before every retry they met again each time until
    both gave up, the repository free all along; each must get the lock in turn."""
    import threading
    import time

    monkeypatch.setattr(locks, "RETRY_EVERY", 0.2)

    class Slow(MemoryBackend):  # remote storage: every request takes a while, so the attempts overlap
        def save(self, *a, **k):
            time.sleep(0.03)
            return super().save(*a, **k)

        def list(self, *a, **k):
            time.sleep(0.03)
            return list(super().list(*a, **k))

        def load(self, *a, **k):
            time.sleep(0.03)
            return super().load(*a, **k)

        def remove(self, *a, **k):
            time.sleep(0.03)
            return super().remove(*a, **k)

    for _ in range(3):
        backend, start, got = Slow(), threading.Barrier(2), []

        def take(backend=backend, start=start, got=got) -> None:
            start.wait()
            try:
                lock = Lock(backend, KEY, exclusive=True, background=False).acquire(wait=4)
            except locks.RepositoryLocked:
                got.append(False)
                return
            time.sleep(0.05)
            lock.release()
            got.append(True)

        threads = [threading.Thread(target=take) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert got == [True, True]


def test_a_live_tuckbox_of_this_host_holds_its_lock_whatever_the_clock_says() -> None:
    """This machine's clock jumped ahead (a bad RTC set right by NTP after the boot-time backup began) since a
    running backup last refreshed its lock: a prune here took the lock for stale by its time and ran beside
    the backup, which then saved a snapshot naming blobs the prune had removed. A process of this host that
    runs tuckbox holds its lock; a dead one's lock is stale at once; a pid another program took over after
    the holder died (a reboot) goes by the lock's time, as before."""
    import socket
    import subprocess
    import sys
    import time

    host, old = socket.gethostname(), time.time() - 2 * locks.STALE_AFTER
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "tuckbox", "backup"])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert not locks.LockInfo("a", host, holder.pid, "root", old, False, "backup").is_stale()
        assert locks.LockInfo("b", host, other.pid, "root", old, False, "backup").is_stale()
        assert not locks.LockInfo("c", host, other.pid, "root", time.time(), False, "backup").is_stale()
        # another machine's lock goes by its time alone
        assert locks.LockInfo("d", host + "-elsewhere", holder.pid, "root", old, False).is_stale()
    finally:
        for p in (holder, other):
            p.kill()
            p.wait()
    assert locks.LockInfo("a", host, holder.pid, "root", time.time(), False, "backup").is_stale()
