"""The cache's copy of the loaded master index: used when valid, refused when damaged or stale."""

from __future__ import annotations

import os
import time

from tuckbox.repository.index import MasterIndex, decode_index_raw
from tuckbox.repository.repo import INDEX_SNAPSHOT
from tuckbox.testing.crash import local_storage, open_repo
from tuckbox.types import ObjectType

PASSPHRASE = b"correct horse battery staple"


def _reference(repo) -> MasterIndex:
    """The master index built from the repository's index objects alone."""
    ref = MasterIndex()
    for info in sorted(repo.backend.list(ObjectType.INDEX), key=lambda i: i.name):
        for raw in decode_index_raw(repo.backend.load(ObjectType.INDEX, info.name), repo.keys.index_key, info.name):
            ref.add_raw(raw)
    return ref


def _open(tmp_path):
    """The repository opened afresh, its index loaded, and how many index objects were read to load it."""
    repo = open_repo(local_storage(tmp_path / "repo"), PASSPHRASE, tmp_path / "cache")
    reads = []
    get = repo.cache.get
    load = repo.backend.load

    def counting_get(kind, name):
        if kind == "index":
            reads.append(name)
        return get(kind, name)

    def counting_load(type, name, *args, **kw):
        if type is ObjectType.INDEX:
            reads.append(name)
        return load(type, name, *args, **kw)

    repo.cache.get = counting_get
    repo.backend.load = counting_load
    repo.load_index()
    repo.backend.load = load
    return repo, reads


def _same(index: MasterIndex, ref: MasterIndex) -> None:
    assert len(index) == len(ref) > 0
    for _, entry in ref.entries():
        assert index.lookup(entry.id) == ref.lookup(entry.id)
    assert index.packs == ref.packs


def test_the_cached_master_index_is_used_checked_and_dropped_when_stale(tb, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"a{i}").write_bytes(os.urandom(3000 + i))
    tb("init")
    tb("backup", str(src))
    for i in range(40):
        (src / f"b{i}").write_bytes(os.urandom(5000 + i))
    tb("backup", str(src))
    tb("ls", "latest")  # opens the repository: every index object loaded, the snapshot written
    snapshot = next((tmp_path / "cache").glob(f"*/state/{INDEX_SNAPSHOT}"))

    repo, reads = _open(tmp_path)
    assert reads == []  # no index object was read: the snapshot held them all
    _same(repo.index, _reference(repo))
    names = {i.name for i in repo.backend.list(ObjectType.INDEX)}
    assert len(names) >= 2 and repo.index.index_names == names

    # a damaged snapshot is not used: the index objects are read, and the snapshot is written again
    good = snapshot.read_bytes()
    damaged = bytearray(good)
    damaged[len(damaged) // 2] ^= 1
    snapshot.write_bytes(bytes(damaged))
    repo, reads = _open(tmp_path)
    assert sorted(reads) == sorted(names)
    _same(repo.index, _reference(repo))
    assert snapshot.read_bytes() != bytes(damaged)
    assert _open(tmp_path)[1] == []

    # an index object removed from the repository (as a prune would): the snapshot, which covers it,
    # must not be trusted, or a backup would deduplicate against packs that may be gone
    removed = sorted(names)[0]
    raws = decode_index_raw(repo.backend.load(ObjectType.INDEX, removed), repo.keys.index_key, removed)
    only_there = {blob[0] for raw in raws for blob in raw.blobs}
    repo.backend.remove(ObjectType.INDEX, removed)
    repo, reads = _open(tmp_path)
    assert removed not in reads and removed not in repo.index.index_names
    ref = _reference(repo)
    _same(repo.index, ref)
    gone = [b for b in only_there if not ref.has(b)]
    assert gone and not any(repo.index.has(b) for b in gone)


def test_a_backup_after_the_snapshot_finds_unchanged_files_and_adds_nothing(tb, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        (src / f"f{i}").write_bytes(os.urandom(20_000))
    time.sleep(1.2)  # files modified within 1 s of being read are not trusted to the files cache
    tb("init")
    tb("backup", str(src))
    # the backup saved the snapshot once everything it stored was indexed: the next opening reads no index object
    assert list((tmp_path / "cache").glob(f"*/state/{INDEX_SNAPSHOT}"))
    repo, reads = _open(tmp_path)
    assert reads == []
    _same(repo.index, _reference(repo))
    tb("backup", str(src))
    third = [ln for ln in tb("backup", str(src), "--json").out.splitlines() if '"summary"' in ln][-1]
    assert '"files_unmodified": 30' in third and '"bytes_read": 0' in third
    tb("restore", "latest", "--target", str(tmp_path / "r"))
    for i in range(30):
        assert (tmp_path / "r" / str(src).lstrip("/") / f"f{i}").read_bytes() == (src / f"f{i}").read_bytes()
    tb("check", "--read-data")


def test_snapshots_are_decrypted_once_then_read_from_the_cache(tb, tmp_path, monkeypatch):
    """The cache keeps the decrypted snapshots (state/snapshots, MAC'd): a listing decrypts only snapshots it
    has not seen, drops those removed from the repository, and ignores a damaged cache file."""
    from tuckbox.crypto import aead
    from tuckbox.repository import snapcache

    src = tmp_path / "src"
    src.mkdir()
    tb("init")
    for i in range(3):
        (src / f"f{i}").write_bytes(b"x" * i)
        tb("backup", str(src))
    opened = []
    real = aead.open_sealed_to

    def counting(*args, **kw):
        opened.append(kw.get("what", ""))
        return real(*args, **kw)

    monkeypatch.setattr(aead, "open_sealed_to", counting)

    def listing():
        opened.clear()
        repo = open_repo(local_storage(tmp_path / "repo"), PASSPHRASE, tmp_path / "cache")
        try:
            return [s.id for s in repo.snapshots()], [w for w in opened if w.startswith("snapshot")]
        finally:
            repo.close()

    tb("snapshots")  # (each backup listed the snapshots before its own; this listing decrypts the last one)
    first, decrypted = listing()
    assert len(first) == 3 and decrypted == []
    state = next((tmp_path / "cache").glob(f"*/state/{snapcache.STATE}"))
    state.unlink()
    again, decrypted = listing()
    assert again == first and len(decrypted) == 3  # rebuilt
    assert listing() == (first, [])
    raw = bytearray(state.read_bytes())
    raw[-5] ^= 1
    state.write_bytes(bytes(raw))
    damaged, decrypted = listing()
    assert damaged == first and len(decrypted) == 3  # the MAC refused it; rebuilt
    (tmp_path / "repo" / "snapshots" / first[0]).unlink()
    gone, _ = listing()
    assert gone == first[1:]
    import msgpack

    assert set(msgpack.unpackb(state.read_bytes()[32:])["snaps"]) == set(first[1:])
