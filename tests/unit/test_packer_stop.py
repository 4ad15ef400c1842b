"""Stopping a backup at once: the packer gives up unfinished data packs without waiting for them, keeps
and indexes every pack that was stored, and the checkpoint names only stored data."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from tuckbox.archiver.backup import BackupRequest, run_backup
from tuckbox.archiver.report import Progress
from tuckbox.backends.memory import MemoryBackend
from tuckbox.backends.wrappers import RateLimitBackend
from tuckbox.repository.config import Config
from tuckbox.repository.index import decode_index
from tuckbox.repository.repo import Repository
from tuckbox.snapshot.tree import DIR, FILE, decode_tree
from tuckbox.types import BlobType, ObjectType

MiB = 1 << 20


def _repo(backend, tmp_path: Path, monkeypatch) -> Repository:
    monkeypatch.setenv("TUCKBOX_CACHE_DIR", str(tmp_path / "cache"))
    return Repository.init(backend, b"pw", created="t", host="h", user="u", config=Config.new("t", pack_size=MiB))


def _stop_when(cond, action) -> threading.Thread:
    def loop() -> None:
        while not cond():
            time.sleep(0.01)
        action()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def _indexed_packs(mem: MemoryBackend, repo: Repository) -> set[str]:
    names: set[str] = set()
    for info in mem.list(ObjectType.INDEX):
        names.update(r.name for r in decode_index(mem.load(ObjectType.INDEX, info.name), repo.keys.index_key, info.name))
    return names


def test_stop_gives_up_unstored_packs_at_once_and_indexes_the_stored(tmp_path, monkeypatch):
    mem = MemoryBackend()
    repo = _repo(mem, tmp_path, monkeypatch)
    repo.backend = RateLimitBackend(mem, upload=400_000)  # a 1 MiB pack: ~2.6 s
    packer = repo.new_packer()
    stopped_at: list[float] = []

    def stop() -> None:
        stopped_at.append(time.monotonic())
        packer.stop()

    _stop_when(lambda: packer.stats.packs_new >= 1, stop)
    ids: list[bytes] = []
    while not stopped_at and len(ids) < 400:  # the adds block on the uploads, so this runs until the stop
        data = os.urandom(128 * 1024)
        ids.append(repo.blob_id(data))
        packer.add(BlobType.DATA, ids[-1], data)
    assert stopped_at, "no pack was stored"
    given_up = packer.abandon()
    assert time.monotonic() - stopped_at[0] < 1.5
    assert given_up > 0
    stored = {i.name for i in mem.list(ObjectType.PACK)}
    assert stored and stored <= set(repo.index.packs)
    for blob_id in ids:  # given up means unknown: not pending, not indexed
        assert packer.known(blob_id) == repo.index.has(blob_id)
    assert 0 < sum(repo.index.has(b) for b in ids) <= len(ids) - given_up  # (a blob added after the stop is
    # dropped at once: neither stored nor counted)
    tree = b"a tree blob"
    packer.add(BlobType.TREE, repo.blob_id(tree), tree)  # trees are still taken and stored
    t0 = time.monotonic()
    packer.flush()
    packer.close()
    assert time.monotonic() - t0 < 1.0
    assert repo.index.has(repo.blob_id(tree))
    stored = {i.name for i in mem.list(ObjectType.PACK)}
    assert stored == _indexed_packs(mem, repo)


def test_a_transfer_under_way_gets_a_grace_then_is_left_unindexed(tmp_path, monkeypatch):
    release = threading.Event()
    calls: list[str] = []

    class Stuck(MemoryBackend):
        """The first pack's transfer cannot be cancelled and takes as long as the test wants."""

        def save(self, type: ObjectType, name: str, data: bytes | memoryview) -> None:
            if type is ObjectType.PACK:
                calls.append(name)
                if len(calls) == 1:
                    release.wait(30)
            super().save(type, name, data)

    mem = Stuck()
    repo = _repo(mem, tmp_path, monkeypatch)
    packer = repo.new_packer()
    for _ in range(10):  # more than a pack: one upload starts and sticks
        data = os.urandom(128 * 1024)
        packer.add(BlobType.DATA, repo.blob_id(data), data)
    while not calls:
        time.sleep(0.01)
    t0 = time.monotonic()
    given_up = packer.abandon(grace=0.5)
    assert 0.4 < time.monotonic() - t0 < 1.5
    assert given_up == 10
    tree = b"another tree blob"
    packer.add(BlobType.TREE, repo.blob_id(tree), tree)
    packer.flush()  # not held up by the stuck transfer
    packer.close()
    release.set()  # the stuck transfer now completes: stored, but never indexed by this run
    deadline = time.monotonic() + 5
    while len(list(mem.list(ObjectType.PACK))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls[0] not in repo.index.packs
    assert calls[0] not in _indexed_packs(mem, repo)
    assert packer.stats.packs_new == 1  # the tree pack


def _files(repo: Repository, tree_id: bytes, prefix: str = "") -> dict[str, list]:
    out: dict[str, list] = {}
    for node in decode_tree(repo.load_blob(BlobType.TREE, tree_id)):
        path = prefix + node.name.decode()
        if node.type == DIR:
            out.update(_files(repo, node.subtree, path + "/"))
        elif node.type == FILE:
            out[path] = node.content
    return out


def test_checkpoint_of_a_stopped_run_names_only_stored_data(tmp_path, monkeypatch):
    src = tmp_path / "src"
    sizes = {}
    for d in range(4):
        for sub in ("", "/inner"):
            (src / f"d{d}{sub}").mkdir(parents=True, exist_ok=True)
            for f in range(6):
                p = src / f"d{d}{sub}" / f"f{f}"
                p.write_bytes(os.urandom(100 * 1024 + f))
                sizes[str(p.relative_to(src))] = p.stat().st_size
    time.sleep(1.1)  # files changed within a second of being read are not put in the files cache
    mem = MemoryBackend()
    repo = _repo(mem, tmp_path, monkeypatch)
    repo.backend = RateLimitBackend(mem, upload=600_000)
    repo.connections = 2
    stop = threading.Event()
    _stop_when(lambda: len(list(mem.list(ObjectType.PACK))) >= 2, stop.set)
    t0 = time.monotonic()
    result = run_backup(repo, BackupRequest([str(src)], checkpoint_interval=0), should_stop=stop.is_set)
    assert result.interrupted and result.left_out > 0
    assert result.snapshot.partial
    assert result.snapshot.summary["files_left_out"] == result.left_out
    assert time.monotonic() - t0 < 15
    # every chunk the checkpoint names is indexed, and every stored pack is indexed
    assert {i.name for i in mem.list(ObjectType.PACK)} == _indexed_packs(mem, repo)
    root = _files(repo, result.snapshot.tree)
    files = {k.split(str(src).lstrip("/") + "/", 1)[1]: v for k, v in root.items()}
    assert files, "nothing was saved"
    assert len(files) + result.left_out <= len(sizes)
    for path, content in files.items():
        assert all(repo.index.has(c) for c in content if isinstance(c, bytes)), path
        data = b"".join(repo.load_blob(BlobType.DATA, c) for c in content)
        assert data == (src / path).read_bytes(), path
    # a second run completes, reading only what the checkpoint did not save
    repo.backend = mem
    again = run_backup(repo, BackupRequest([str(src)]))
    assert not again.interrupted
    assert again.snapshot.summary["files_unmodified"] == len(files)
    assert len(_files(repo, again.snapshot.tree)) == len(sizes)


STOP_AFTER = 30


def _stop_after(calls: int):
    """A ``should_stop`` that says stop after the walking thread asked ``calls`` times (about once an entry)."""
    asked = {"n": 0}
    main = threading.main_thread()

    def should_stop() -> bool:
        if threading.current_thread() is main:
            asked["n"] += 1
        return asked["n"] > calls

    return should_stop


def _small_tree(src: Path, n: int, size: int) -> None:
    (src / "sub").mkdir(parents=True)
    for i in range(n):
        (src / ("sub" if i % 2 else "") / f"f{i:03}").write_bytes(os.urandom(size + i))
    time.sleep(1.1)  # files changed within a second of being read are not put in the files cache


def test_a_run_stopped_before_any_file_was_stored_saves_no_checkpoint(tmp_path, monkeypatch):
    """Stopped in its first moments (every file read so far still in the open pack): a checkpoint would hold
    no file at all and become ``latest``, so a restore of it restored nothing and succeeded. None is saved;
    the next run stores everything and counts every file as new, as a first backup does."""
    src = tmp_path / "src"
    _small_tree(src, 40, 10_000)
    mem = MemoryBackend()
    repo = _repo(mem, tmp_path, monkeypatch)
    result = run_backup(repo, BackupRequest([str(src)], checkpoint_interval=0), should_stop=_stop_after(20))
    assert result.interrupted and result.left_out > 0
    assert result.snapshot is None and result.checkpoints == []
    assert list(mem.list(ObjectType.SNAPSHOT)) == []
    assert result.summary["files_left_out"] == result.left_out
    assert {i.name for i in mem.list(ObjectType.PACK)} == _indexed_packs(mem, repo)
    again = run_backup(repo, BackupRequest([str(src)]))
    assert not again.interrupted and again.snapshot is not None
    s = again.summary
    assert (s["files_new"], s["files_changed"], s["files_unmodified"]) == (40, 0, 0), s
    assert len(_files(repo, again.snapshot.tree)) == 40


def test_a_run_stopped_before_it_began_saves_no_checkpoint(tmp_path, monkeypatch):
    src = tmp_path / "src"
    _small_tree(src, 4, 100)
    mem = MemoryBackend()
    repo = _repo(mem, tmp_path, monkeypatch)
    result = run_backup(repo, BackupRequest([str(src)]), should_stop=lambda: True)
    assert result.interrupted and result.snapshot is None and result.left_out == 0
    assert list(mem.list(ObjectType.SNAPSHOT)) == []


def test_a_resumed_run_counts_new_and_changed_files_as_an_uninterrupted_run_would(tmp_path, monkeypatch):
    """The files an interrupted run read but did not store were counted as "changed" by the run that resumed
    it (its files cache named them); a file is changed only if the last complete backup had it."""
    src = tmp_path / "src"
    _small_tree(src, 40, 10_000)
    mem = MemoryBackend()
    repo = _repo(mem, tmp_path, monkeypatch)
    assert run_backup(repo, BackupRequest([str(src)])).summary["files_new"] == 40
    changed = [p for p in sorted(src.rglob("f*")) if int(p.name[1:]) % 3 == 0]
    for p in changed:
        p.write_bytes(os.urandom(9_000))
    for i in range(40, 60):
        (src / ("sub" if i % 2 else "") / f"f{i:03}").write_bytes(os.urandom(10_000))
    time.sleep(1.1)
    added = [p for p in sorted(src.rglob("f*")) if int(p.name[1:]) >= 40]
    stopped = run_backup(repo, BackupRequest([str(src)], checkpoint_interval=0), should_stop=_stop_after(STOP_AFTER))
    assert stopped.interrupted and stopped.snapshot is not None
    saved = {src / k.split(str(src).lstrip("/") + "/", 1)[1] for k in _files(repo, stopped.snapshot.tree)}
    assert set(changed) - saved and set(added) - saved, "the stop came too late: no file left out"
    again = run_backup(repo, BackupRequest([str(src)]))
    s = again.summary
    want = (len(set(added) - saved), len(set(changed) - saved), 60 - len(set(added) - saved) - len(set(changed) - saved))
    assert (s["files_new"], s["files_changed"], s["files_unmodified"]) == want, s


def test_no_timed_checkpoint_is_saved_before_a_file_is_finished(tmp_path, monkeypatch):
    """A checkpoint interval that is already over when the walk has finished nothing yet (the first entries are
    directories) saves no checkpoint either: it would hold no file."""
    src = tmp_path / "src"
    (src / "d" / "e").mkdir(parents=True)
    (src / "d" / "e" / "f").write_bytes(b"x" * 100)
    mem = MemoryBackend()
    repo = _repo(mem, tmp_path, monkeypatch)
    stop = threading.Event()

    class StopAtTheFile(Progress):
        def file_started(self, path: bytes, size: int) -> None:
            stop.set()  # (its data goes no further than the open pack)

    result = run_backup(repo, BackupRequest([str(src)], checkpoint_interval=1e-9), StopAtTheFile(), stop.is_set)
    assert result.interrupted and result.snapshot is None and result.checkpoints == []
    assert list(mem.list(ObjectType.SNAPSHOT)) == []
    done = run_backup(repo, BackupRequest([str(src)], checkpoint_interval=1e-9))
    assert not done.interrupted and [i.name for i in mem.list(ObjectType.SNAPSHOT)] == [done.snapshot.id]
