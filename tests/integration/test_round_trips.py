"""How many storage operations a command waits for, one after the other.

On remote storage each is at least one network round trip (tens of milliseconds to a cloud bucket), so a
command's latency is mostly their number. These tests pin the operations the command's own process makes
for an unchanged backup and a restore, counted beneath the retry wrapper (as the storage sees them), so
that adding one is a decision, not an accident. (The pack process and restore workers use their own
connections, in parallel with the walk; they are not counted here.)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tuckbox.backends.wrappers import _Wrapper
from tuckbox.cli import common
from tuckbox.cli.main import main
from tuckbox.types import ObjectType


class _Counting(_Wrapper):
    def __init__(self, inner, calls: list[tuple[str, str]]) -> None:
        super().__init__(inner)
        self.calls = calls

    def save(self, type: ObjectType, name: str, data) -> None:
        self.calls.append(("save", type.value))
        self.inner.save(type, name, data)

    def load(self, type: ObjectType, name: str, offset: int = 0, length: int | None = None) -> bytes:
        self.calls.append(("load", type.value))
        return self.inner.load(type, name, offset, length)

    def stat(self, type: ObjectType, name: str):
        self.calls.append(("stat", type.value))
        return self.inner.stat(type, name)

    def list(self, type: ObjectType):
        self.calls.append(("list", type.value))
        return self.inner.list(type)

    def remove(self, type: ObjectType, name: str) -> None:
        self.calls.append(("remove", type.value))
        self.inner.remove(type, name)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []
    real = common.open_backend
    monkeypatch.setattr(common, "open_backend", lambda url, options: _Counting(real(url, options), calls))
    monkeypatch.setenv("TUCKBOX_PASSWORD", "round trips")
    monkeypatch.setenv("TUCKBOX_CACHE_DIR", str(tmp_path / "cache"))
    return calls


OPEN = [("load", "config"), ("list", "keys"), ("load", "keys"), ("list", "index")]


def test_storage_operations_of_an_unchanged_backup_and_a_restore(counted, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for i in range(20):
        (src / "d" / f"f{i}").write_bytes(os.urandom(2000 + i))
    repo = str(tmp_path / "repo")
    assert main(["-r", repo, "-q", "init"]) == 0
    for _ in range(2):  # (the first run reads the directories, moving their atimes: the second stores that)
        assert main(["-r", repo, "-q", "backup", str(src)]) == 0
    counted.clear()
    assert main(["-r", repo, "-q", "backup", str(src)]) == 0
    assert counted == OPEN[:3] + [
        ("save", "locks"), ("list", "locks"),  # the lock, and whether another conflicts (its own is not read back)
        ("list", "index"),  # the index, under the lock (a prune may have run until the lock was taken)
        ("list", "snapshots"), ("list", "index"),  # the parent; the index of every snapshot listed
        ("stat", "locks"),  # still held, just before the snapshot is written
        ("save", "snapshots"),
        ("remove", "locks"),
    ]
    # and its restore: the trees are read here (ranges of their packs), the files' data by workers
    counted.clear()
    assert main(["-r", repo, "-q", "restore", "latest", "--target", str(tmp_path / "r")]) == 0
    assert [c for c in counted if c != ("load", "data")] == OPEN[:3] + [
        ("save", "locks"), ("list", "locks"),  # the lock first: what it reads, a prune cannot remove meanwhile
        ("list", "index"),
        ("list", "snapshots"), ("list", "index"),  # which snapshot is "latest"; the index of every one listed
        ("remove", "locks"),
    ]
    assert (tmp_path / "r" / str(src).lstrip("/") / "d" / "f7").read_bytes() == (src / "d" / "f7").read_bytes()


def test_the_keys_of_a_repository_are_read_at_once(counted, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A repository holds a key for each host (write-only keys) and person (passphrases): opening it reads
    them all at once, not one round trip after another. Each read here waits until all three have started."""
    import threading

    repo = str(tmp_path / "repo")
    assert main(["-r", repo, "-q", "init"]) == 0
    new = tmp_path / "new-passphrase"
    new.write_text("another person's passphrase\n")
    assert main(["-r", repo, "-q", "key", "add", "--new-password-file", str(new)]) == 0
    assert main(["-r", repo, "-q", "key", "add", "--write-only", "--output", str(tmp_path / "host.key")]) == 0
    barrier = threading.Barrier(3, timeout=10)
    real_load = _Counting.load

    def load(self, type: ObjectType, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if type is ObjectType.KEY:
            barrier.wait()  # (BrokenBarrierError, after 10 s, if the keys were read one after another)
        return real_load(self, type, name, offset, length)

    monkeypatch.setattr(_Counting, "load", load)
    counted.clear()
    assert main(["-r", repo, "--json", "snapshots"]) == 0
    assert counted.count(("load", "keys")) == 3
    monkeypatch.setenv("TUCKBOX_PASSWORD", "another person's passphrase")
    assert main(["-r", repo, "--json", "snapshots"]) == 0  # either passphrase opens it
