"""Storage-side corruption: a truncated, deleted or bit-flipped pack, index or snapshot object is found
by ``check --read-data``, which exits 1 and names every affected object and every affected file; a
restore reports exactly the damaged files and restores everything else byte for byte.

The expectation is computed independently, in this process, from the undamaged repository (opened
with the full key): which blobs each pack and index holds, which chunks each file and which tree each
directory of each snapshot uses. Victims and offsets are chosen by a seeded RNG (TUCKBOX_CORRUPTION_SEED).

Also: garbage in the local cache (copies of indexes, tree packs and snapshots, and the files cache) is
detected and replaced transparently from the repository.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tuckbox.repository.index import decode_index
from tuckbox.snapshot.tree import DIR, FILE, decode_tree
from tuckbox.testing.crash import KiB, MiB, Cli, file_hashes, local_storage, make_tree, open_repo, restored
from tuckbox.types import BlobType, ObjectType

SEED = int(os.environ.get("TUCKBOX_CORRUPTION_SEED", "4242"))
INIT = ("init", "--pack-size", "1MiB", "--chunk-min", "16KiB", "--chunk-avg", "32KiB", "--chunk-max", "256KiB")


@dataclass
class SnapInfo:
    id: str
    short: str
    root: bytes
    dirs: dict[str, bytes] = field(default_factory=dict)  # path -> tree id
    files: dict[str, list[bytes]] = field(default_factory=dict)  # path -> chunk ids
    version: Path | None = None  # a copy of the source as it was backed up


@dataclass
class Model:
    base: Path  # the undamaged repository
    src: Path
    snaps: list[SnapInfo]
    packs: dict[str, object]  # pack name -> PackRecord
    indexes: dict[str, list[str]]  # index name -> pack names


def _walk(repo, snap: SnapInfo, tree_id: bytes, prefix: str) -> None:
    for node in decode_tree(repo.load_blob(BlobType.TREE, tree_id)):
        path = os.path.join(prefix, os.fsdecode(node.name))
        if node.type == DIR and node.subtree:
            snap.dirs[path] = node.subtree
            _walk(repo, snap, node.subtree, path)
        elif node.type == FILE:
            snap.files[path] = [c for c in node.content if isinstance(c, bytes)]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Model:
    tmp = tmp_path_factory.mktemp("corruption")
    src = tmp / "src"
    make_tree(src, 31, big=2, big_size=(1 * MiB, 2 * MiB), dirs=4, files_per_dir=12, small_size=(1, 60 * KiB))
    cli = Cli(tmp, local_storage(tmp / "repo"))
    cli(*INIT)
    versions = []
    for v in range(2):
        if v:  # the second snapshot: a changed, a new and a deleted file; the rest deduplicates
            (src / "dir-01" / "file-003.dat").write_bytes(random.Random(v).randbytes(150 * KiB))
            (src / "dir-02" / "added.bin").write_bytes(random.Random(v + 1).randbytes(700 * KiB))
            (src / "dir-03" / "deep" / "file-000.dat").unlink()
        copy = tmp / f"version-{v}"
        shutil.copytree(src, copy, symlinks=True)
        cli("backup", str(src))
        versions.append(copy)
    repo = open_repo(cli.storage, cli.passphrase, tmp / "inspect-cache")
    repo.load_index()
    snaps = []
    for s, version in zip(repo.snapshots(), versions, strict=True):
        info = SnapInfo(s.id, s.short_id, s.tree, version=version)
        _walk(repo, info, s.tree, "/")
        snaps.append(info)
    indexes: dict[str, list[str]] = {}
    packs: dict[str, object] = {}
    for i in repo.backend.list(ObjectType.INDEX):
        records = decode_index(repo.backend.load(ObjectType.INDEX, i.name), repo.keys.index_key, i.name)
        indexes[i.name] = [p.name for p in records]
        packs.update((p.name, p) for p in records)
    repo.close()
    assert len(indexes) >= 2 and sum(p.kind is BlobType.DATA for p in packs.values()) >= 3
    return Model(tmp / "repo", src, snaps, packs, indexes)


def pack_path(repo: Path, name: str) -> Path:
    return repo / "data" / name[:2] / name


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


@dataclass
class Damage:
    objects: list[str]  # names check must mention
    check_bad: set[bytes]  # blobs check must treat as damaged
    restore_bad: set[bytes]  # blobs whose data a restore cannot get
    bad_snapshots: set[str] = field(default_factory=set)


def damage(case: str, model: Model, repo: Path, rng: random.Random) -> Damage:
    kind, how = case.split(":")
    if kind in ("data-pack", "tree-pack"):
        want = BlobType.DATA if kind == "data-pack" else BlobType.TREE
        pack = model.packs[rng.choice(sorted(n for n, p in model.packs.items() if p.kind is want))]
        path = pack_path(repo, pack.name)
        everything = {e.id for e in pack.blobs}
        if how == "delete":
            path.unlink()
            return Damage([pack.name], everything, everything)
        if how == "truncate":
            cut = rng.randrange(pack.blobs[0].offset + 1, pack.size - 1)
            os.truncate(path, cut)
            past = {e.id for e in pack.blobs if e.offset + e.length > cut}
            return Damage([pack.name], everything, past)  # check distrusts the whole pack
        if how == "flip-blob":
            entry = rng.choice(pack.blobs)
            flip(path, entry.offset + rng.randrange(entry.length))
            return Damage([pack.name], {entry.id}, {entry.id})
        if how == "flip-header":
            end = max(e.offset + e.length for e in pack.blobs)
            flip(path, rng.randrange(end, pack.size))  # header, padding or trailer: no blob is affected
            return Damage([pack.name], set(), set())
    if kind == "index":
        name = rng.choice(sorted(model.indexes))
        path = repo / "index" / name
        elsewhere = {p for n, ps in model.indexes.items() if n != name for p in ps}
        lost = {e.id for p in model.indexes[name] if p not in elsewhere for e in model.packs[p].blobs}
        if how == "delete":
            path.unlink()
            return Damage([], lost, lost)  # a deleted object leaves no name behind; its chunks are missing
        if how == "truncate":
            os.truncate(path, rng.randrange(1, path.stat().st_size))
        else:
            flip(path, rng.randrange(path.stat().st_size))
        return Damage([name], lost, lost)
    if kind == "snapshot":
        snap = rng.choice(model.snaps)
        path = repo / "snapshots" / snap.id
        if how == "truncate":
            os.truncate(path, rng.randrange(1, path.stat().st_size))
        else:
            flip(path, rng.randrange(path.stat().st_size))
        return Damage([snap.id], set(), set(), {snap.id})
    raise AssertionError(case)


def affected(snap: SnapInfo, bad: set[bytes]) -> tuple[set[str], set[str]]:
    """(damaged directory listings, damaged files) of one snapshot, as check should name them."""
    if snap.root in bad:
        return {"/"}, set()
    bad_dirs = {d for d, t in snap.dirs.items() if t in bad}
    bad_dirs = {d for d in bad_dirs if not any(d.startswith(o + "/") for o in bad_dirs)}  # topmost only

    def hidden(path: str) -> bool:
        return any(path.startswith(d + "/") for d in bad_dirs)

    files = {p for p, chunks in snap.files.items() if not hidden(p) and any(c in bad for c in chunks)}
    return bad_dirs, files


CASES = [
    "data-pack:delete",
    "data-pack:truncate",
    "data-pack:flip-blob",
    "data-pack:flip-header",
    "tree-pack:flip-blob",
    "tree-pack:truncate",
    "index:flip",
    "index:truncate",
    "index:delete",
    "snapshot:flip",
    "snapshot:truncate",
]


@pytest.mark.parametrize("case", CASES)
def test_storage_corruption_is_found_named_and_contained(case, model, tmp_path):
    rng = random.Random(f"{SEED}-{case}")
    repo = tmp_path / "repo"
    shutil.copytree(model.base, repo)
    cli = Cli(tmp_path, local_storage(repo))  # a fresh cache: the storage is what is tested
    cli.passfile.write_bytes((model.base.parent / "passphrase").read_bytes())
    dmg = damage(case, model, repo, rng)

    check = cli("check", "--read-data", "--json", expect=None)
    report = check.json()
    damaged_objects = bool(dmg.objects or dmg.check_bad or dmg.bad_snapshots)
    assert check.code == (1 if damaged_objects else 0), check.err
    assert report["ok"] is not damaged_objects
    for name in dmg.objects:
        assert any(name in e for e in report["errors"]), f"{name[:8]} is not named:\n" + "\n".join(report["errors"])
    named = {(f.split(" (snapshot ")[0], f.split(" (snapshot ")[1][:8]) for f in report["damaged_files"]}
    expected: set[tuple[str, str]] = set()
    for snap in model.snaps:
        if snap.id in dmg.bad_snapshots:
            continue
        dirs, files = affected(snap, dmg.check_bad)
        if "/" in dirs and not any(snap.id in e for e in report["errors"]):
            expected.add(("/", snap.short))
        expected |= {(p, snap.short) for p in (dirs - {"/"}) | files}
    assert named >= expected, f"not named: {sorted(expected - named)[:10]}"
    assert named <= expected | {("/", s.short) for s in model.snaps}, f"named but intact: {sorted(named - expected)[:10]}"
    if dmg.check_bad:  # else this case would test nothing
        assert expected or any(s.root in dmg.check_bad for s in model.snaps), "the damage affects no file"

    # every snapshot that still exists restores: damaged files are reported and absent, the rest exact
    for i, snap in enumerate(model.snaps):
        if snap.id in dmg.bad_snapshots:
            res = cli("restore", snap.short, "--target", str(tmp_path / f"r{i}"), expect=None)
            assert res.code != 0 and len(res.err.strip().splitlines()) <= 2, res.err
            continue
        dirs, files = affected(snap, dmg.restore_bad)
        if "/" in dirs:
            continue  # nothing of this snapshot can be found: named by check above
        target = tmp_path / f"r{i}"
        res = cli("--json", "restore", snap.short, "--target", str(target), expect=None)
        assert res.code == (1 if dirs or files else 0), res.err
        errors = res.summary()["errors"]
        for f in files:
            assert any(e.startswith(f + ":") for e in errors), f"{f} not reported by restore: {errors[:5]}"
        for d in dirs:
            assert any(e.startswith(d) for e in errors), f"{d} not reported by restore: {errors[:5]}"
        assert len(errors) == len(files) + len(dirs), errors
        want = file_hashes(snap.version)
        got = file_hashes(restored(target, model.src))
        lost = {p for p in want if os.path.join(str(model.src), p) in files
                or any(os.path.join(str(model.src), p).startswith(d + "/") for d in dirs)}
        assert {p: h for p, h in got.items()} == {p: h for p, h in want.items() if p not in lost}
        shutil.rmtree(target)


def test_garbage_in_local_cache_is_replaced(tmp_path):
    src = tmp_path / "src"
    make_tree(src, 32, big=1, big_size=(1 * MiB, 1 * MiB), dirs=2, files_per_dir=10)
    cli = Cli(tmp_path, local_storage(tmp_path / "repo"))
    cli(*INIT)
    time.sleep(1.1)  # files changed within the last second are never put in the files cache
    cli("backup", str(src))
    cli("restore", "latest", "--target", str(tmp_path / "r0"))  # fills the cache with tree packs too
    (cache,) = [p for p in cli.cache.iterdir() if p.is_dir()]
    victims = [p for kind in ("index", "trees", "snapshots") for p in (cache / kind).iterdir()]
    assert {p.parent.name for p in victims} == {"index", "trees", "snapshots"}
    rng = random.Random(SEED)
    for p in victims:
        p.write_bytes(rng.randbytes(p.stat().st_size))  # same name, same size, garbage
    state = cache / "state"
    state_files = [q for q in state.rglob("*") if q.is_file()]
    assert any("files-cache" in str(q) for q in state_files), state_files
    for p in state_files:
        p.write_bytes(rng.randbytes(777))
    (state / "journal").mkdir(exist_ok=True)
    (state / "journal" / "0123456789abcdef-1").write_bytes(rng.randbytes(333))  # a garbage pack journal

    res = cli("--json", "restore", "latest", "--target", str(tmp_path / "r"))
    assert res.err.strip() == "", res.err  # not even a warning: the cache is only a cache
    assert file_hashes(restored(tmp_path / "r", src)) == file_hashes(src)
    (src / "more.txt").write_text("after the cache was damaged")
    backup = cli("--json", "backup", str(src))
    assert backup.err.strip() == "", backup.err
    assert backup.summary()["bytes_new_raw"] < 64 * KiB  # the garbage did not cost re-uploading
    check = cli("check", "--read-data", "--json").json()
    assert check["ok"] and check["counts"]["snapshots"] == 2
    import blake3

    for p in victims:  # every damaged copy was replaced by a verified one (or dropped)
        assert not p.exists() or blake3.blake3(p.read_bytes()).hexdigest() == p.name
    cli("restore", "latest", "--target", str(tmp_path / "r2"))
    assert file_hashes(restored(tmp_path / "r2", src)) == file_hashes(src)


def test_check_reads_trees_from_storage_not_from_a_warm_cache(tmp_path):
    """``check`` (without --read-data) reads every snapshot's trees; on the machine that made the backups it
    took them from the local cache's copies of the tree packs, so a tree damaged in the repository passed
    there, and was found only by another machine, or by the restore that needed it."""
    src = tmp_path / "src"
    make_tree(src, 33, big=1, big_size=(1 * MiB, 1 * MiB), dirs=3, files_per_dir=8)
    repo_dir = tmp_path / "repo"
    cli = Cli(tmp_path, local_storage(repo_dir))
    cli(*INIT)
    cli("backup", str(src))
    cli("restore", "latest", "--target", str(tmp_path / "r0"))  # the cache now holds the tree packs
    (cache,) = [p for p in cli.cache.iterdir() if p.is_dir()]
    assert list((cache / "trees").iterdir())
    repo = open_repo(local_storage(repo_dir), cli.passphrase, tmp_path / "inspect-cache")
    repo.load_index()
    tree_packs = sorted(n for n, p in repo.index.packs.items() if p.kind is BlobType.TREE)
    assert tree_packs
    name = tree_packs[0]
    entry = repo.index.pack_blobs(name)[0]
    flip(pack_path(repo_dir, name), entry.offset + entry.length // 2)
    check = cli("check", "--json", expect=1)
    report = check.json()
    assert report["ok"] is False and any(name in e or entry.id.hex()[:16] in e for e in report["errors"]), report
    assert (cache / "trees").exists()  # the cache is still there: the check did not just go without it
