"""The backup's pack process (repository/packproc.py): blobs handed over through the shared ring arrive
intact whatever their sizes and order (wrapping around, waiting for room, too large for the ring), a stop
keeps exactly what was stored, and storage errors or a pack process that dies reach the backup as clear
errors, never as a hang."""

from __future__ import annotations

import os
import random
import signal
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuckbox.backends.local import LocalBackend
from tuckbox.backends.wrappers import _Wrapper
from tuckbox.errors import PermanentError, TuckboxError
from tuckbox.repository.config import Config
from tuckbox.repository.journal import PackJournal, read_journal
from tuckbox.repository.packer import Packer
from tuckbox.repository.packproc import ENV, PackProcess, _Ring, open_packer
from tuckbox.repository.repo import Repository
from tuckbox.types import BlobType, ObjectType

KiB = 1 << 10
MiB = 1 << 20


def _repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Repository:
    monkeypatch.setenv("TUCKBOX_CACHE_DIR", str(tmp_path / "cache"))
    return Repository.init(
        LocalBackend(str(tmp_path / "repo")), b"pw", created="t", host="h", user="u",
        config=Config.new("t", pack_size=MiB),
    )


def _process(repo: Repository, journal: PackJournal, ring_size: int = 256 * KiB) -> PackProcess:
    return PackProcess(
        repo.backend, repo.index, repo.recipient, repo.config.pack_size, repo.write_index, journal,
        ring_size=ring_size,
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 100), st.integers(0, 4)), min_size=1, max_size=200), st.randoms())
def test_the_ring_never_hands_out_space_in_use(ops: list[tuple[int, int]], rnd: random.Random) -> None:
    size = 256
    ring = _Ring(size)
    live: dict[int, list[tuple[int, int]]] = {}  # batch -> its (offset, length)s
    gathering: list[tuple[int, int]] = []
    seq = 0
    for n, action in ops:
        with ring.cond:
            at = ring.place(n)
        if at >= 0:
            assert 0 <= at and at + n <= size
            for start, length in gathering + [x for b in live.values() for x in b]:
                assert at + n <= start or start + length <= at, "overlapping space"
            gathering.append((at, n))
        if action == 0 or at < 0:  # send what was gathered (the packer does before it waits)
            if gathering:
                seq += 1
                with ring.cond:
                    ring.sent(seq)
                live[seq], gathering = gathering, []
        if (action == 1 or at < 0) and live:
            done = rnd.choice(sorted(live))  # the child finishes batches in any order
            del live[done]
            ring.free(done)
    for b in sorted(live):
        ring.free(b)
    with ring.cond:
        ring.gathering = 0
        assert ring.place(size) == 0  # all free again: the whole ring


def test_blobs_of_every_size_arrive_intact_and_are_journaled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = _repo(tmp_path, monkeypatch)
    journal = PackJournal(tmp_path / "journal")
    packer = _process(repo, journal)  # a small ring: it wraps, fills and waits many times
    rng = random.Random(7)
    sizes = [rng.choice([rng.randint(1, 100), rng.randint(1, 64 * KiB), rng.randint(120 * KiB, 136 * KiB),
                         rng.randint(200 * KiB, 400 * KiB)]) for _ in range(400)]
    blobs = {repo.blob_id(d): d for d in (os.urandom(n // 2) + bytes(n - n // 2) for n in sizes)}
    items = list(blobs.items())
    errors: list[BaseException] = []

    def add(part: list[tuple[bytes, bytes]]) -> None:  # the walk and a reader thread add at once
        try:
            for blob_id, data in part:
                assert packer.add(BlobType.DATA, blob_id, memoryview(data)) is True
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    reader = threading.Thread(target=add, args=(items[1::2],))
    reader.start()
    add(items[::2])
    reader.join()
    assert not errors
    tree = b"a tree blob"
    assert packer.add(BlobType.TREE, repo.blob_id(tree), tree) is True
    assert packer.add(BlobType.DATA, items[0][0], items[0][1]) is False  # already pending or stored
    packer.flush()
    assert not packer.data_pending()
    assert packer.stats.blobs_new == len(blobs) + 1 and packer.stats.bytes_new_raw == sum(map(len, blobs.values())) + len(tree)
    packer.close()
    for blob_id, data in blobs.items():
        assert repo.load_blob(BlobType.DATA, blob_id) == data
    assert repo.load_blob(BlobType.TREE, repo.blob_id(tree)) == tree
    journaled = {r.name for p in journal.dir.iterdir() for r in read_journal(p)}  # type: ignore[union-attr]
    stored = {i.name for i in repo.backend.list(ObjectType.PACK)}
    assert journaled == stored == set(repo.index.packs)
    fresh = Repository.open(LocalBackend(str(tmp_path / "repo")), lambda: b"pw")  # the index objects name them all
    assert set(fresh.index.packs) == stored


def test_a_stop_keeps_what_was_stored_and_forgets_the_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = _repo(tmp_path, monkeypatch)
    packer = _process(repo, PackJournal(tmp_path / "journal"))
    blobs = {}
    for _ in range(60):
        data = os.urandom(100 * KiB)
        blobs[repo.blob_id(data)] = data
        packer.add(BlobType.DATA, repo.blob_id(data), data)
    packer.stop()
    late = os.urandom(1000)
    assert packer.add(BlobType.DATA, repo.blob_id(late), late) is True  # accepted and dropped: never stored
    dropped = packer.abandon()
    tree = b"tree after the stop"
    packer.add(BlobType.TREE, repo.blob_id(tree), tree)  # trees are still stored
    packer.flush()
    packer.close()
    stored = [b for b in blobs if repo.index.has(b)]
    assert dropped == len(blobs) - len(stored)
    assert not packer.data_pending() and not packer.known(repo.blob_id(late))
    for blob_id in stored:
        assert repo.load_blob(BlobType.DATA, blob_id) == blobs[blob_id]
    for blob_id in set(blobs) - set(stored):
        assert not packer.known(blob_id)
    assert repo.load_blob(BlobType.TREE, repo.blob_id(tree)) == tree


class _Full(_Wrapper):
    def save(self, type: ObjectType, name: str, data: bytes | memoryview) -> None:
        if type is ObjectType.PACK:
            raise PermanentError(f"storage quota of {self.location} exceeded; free some space or raise the quota")
        super().save(type, name, data)


def test_a_storage_error_in_the_pack_process_reaches_the_backup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = _repo(tmp_path, monkeypatch)
    repo.backend = _Full(repo.backend)
    packer = _process(repo, PackJournal(None))
    with pytest.raises(PermanentError, match="quota .* exceeded"):
        for _ in range(200):
            data = os.urandom(64 * KiB)
            packer.add(BlobType.DATA, repo.blob_id(data), data)
        packer.flush()
    packer.stop(0)
    packer.close()


def test_a_pack_process_that_dies_is_an_error_not_a_hang(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = _repo(tmp_path, monkeypatch)
    packer = _process(repo, PackJournal(None))
    data = os.urandom(1000)
    packer.add(BlobType.DATA, repo.blob_id(data), data)
    os.kill(packer.pid, signal.SIGKILL)
    with pytest.raises(TuckboxError, match="pack process stopped unexpectedly; run the same backup again"):
        for _ in range(100):  # the ring fills up, or the message of the death arrives: either way, no hang
            data = os.urandom(64 * KiB)
            packer.add(BlobType.DATA, repo.blob_id(data), data)
        packer.flush()
    packer.close()


def test_a_backup_packs_in_a_process_of_its_own_unless_told_not_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = _repo(tmp_path, monkeypatch)
    packer = repo.new_backup_packer(PackJournal(None))
    assert isinstance(packer, PackProcess)
    assert os.waitpid(packer.pid, os.WNOHANG) == (0, 0)  # running
    packer.close()
    monkeypatch.setenv(ENV, "0")
    packer = open_packer(repo.backend, repo.index, repo.recipient, MiB, repo.write_index, PackJournal(None))
    assert type(packer) is Packer
    packer.close()


def test_where_no_process_can_be_forked_the_backup_packs_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = _repo(tmp_path, monkeypatch)

    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")  # EAGAIN: a process limit reached

    monkeypatch.setattr(os, "fork", no_fork)
    packer = repo.new_backup_packer(PackJournal(None))
    assert type(packer) is Packer
    data = os.urandom(1000)
    packer.add(BlobType.DATA, repo.blob_id(data), data)
    packer.flush()
    packer.close()
    assert repo.load_blob(BlobType.DATA, repo.blob_id(data)) == data

