"""A flipped byte anywhere is detected, named, and never restored as wrong bytes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tuckbox.backends.local import LocalBackend
from tuckbox.repository.repo import Repository
from tuckbox.snapshot.walk import find
from tuckbox.types import BlobType


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def setup_repo(tb, tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    src = tmp_path / "src"
    src.mkdir()
    files = {name: os.urandom(200_000) for name in ("victim.bin", "bystander1.bin", "bystander2.bin")}
    for name, data in files.items():
        (src / name).write_bytes(data)
    tb("init")
    tb("backup", str(src))
    return src, files


def open_repo(tb, tmp_path: Path) -> Repository:
    os.environ["TUCKBOX_CACHE_DIR"] = str(tmp_path / "test-cache")
    return Repository.open(LocalBackend(tb.repo), lambda: tb.passfile.read_bytes().rstrip(b"\n"))


def blob_location(repo: Repository, path: Path):
    snap = repo.find_snapshot("latest")
    node = find(lambda t: repo.load_blob(BlobType.TREE, t), snap.tree, os.fsencode(path))
    assert node is not None and len(node.content) == 1
    return repo.index.lookup(node.content[0])


def pack_file(tb, name: str) -> Path:
    return Path(tb.repo) / "data" / name[:2] / name


def test_flipped_byte_in_data_blob(tb, tmp_path):
    src, files = setup_repo(tb, tmp_path)
    repo = open_repo(tb, tmp_path)
    loc = blob_location(repo, src / "victim.bin")
    flip(pack_file(tb, loc.pack.name), loc.entry.offset + loc.entry.length // 2)

    check = tb("check", "--read-data", "--json", expect=1).json()
    assert not check["ok"]
    assert any(loc.pack.name in e and loc.entry.id.hex()[:8] in e for e in check["errors"]), check["errors"]
    assert any(str(src / "victim.bin") in f for f in check["damaged_files"]), check["damaged_files"]
    assert not any("bystander" in f for f in check["damaged_files"])

    res = tb("restore", "latest", "--target", str(tmp_path / "r"), expect=1)
    assert "victim.bin" in res.err and "not restored" in res.err
    # said as an error when it happens (not as a warning), and again under the count at the end
    said = [ln for ln in res.err.splitlines() if "victim.bin" in ln]
    assert len(said) == 2 and all(ln.startswith("error: ") for ln in said), res.err
    assert "1 entry not restored:" in res.err
    out = Path(str(tmp_path / "r") + str(src))
    assert not (out / "victim.bin").exists()  # never wrong bytes
    for name in ("bystander1.bin", "bystander2.bin"):
        assert (out / name).read_bytes() == files[name]
    dump = tb("dump", "latest", str(src / "victim.bin"), expect=1)
    assert "failed authentication" in dump.err


def test_flipped_byte_in_pack_padding_or_header(tb, tmp_path):
    src, files = setup_repo(tb, tmp_path)
    repo = open_repo(tb, tmp_path)
    loc = blob_location(repo, src / "victim.bin")
    path = pack_file(tb, loc.pack.name)
    flip(path, path.stat().st_size - 3)  # trailer
    check = tb("check", "--read-data", "--json", expect=1).json()
    assert any(loc.pack.name in e for e in check["errors"]), check["errors"]
    # structure-only check cannot see it, but the data is intact: restore still succeeds
    tb("restore", "latest", "--target", str(tmp_path / "r"))
    assert (Path(str(tmp_path / "r") + str(src)) / "victim.bin").read_bytes() == files["victim.bin"]


def test_flipped_byte_in_tree_pack(tb, tmp_path):
    src, _ = setup_repo(tb, tmp_path)
    repo = open_repo(tb, tmp_path)
    tree_packs = [p for p in repo.index.packs.values() if p.kind is BlobType.TREE]
    assert tree_packs
    for p in tree_packs:
        flip(pack_file(tb, p.name), 50)
    import shutil

    shutil.rmtree(tmp_path / "cache", ignore_errors=True)  # the local cache would still have good copies
    check = tb("check", "--read-data", "--json", expect=1).json()
    assert any(tree_packs[0].name in e for e in check["errors"]), check["errors"]
    assert check["damaged_files"]
    res = tb("restore", "latest", "--target", str(tmp_path / "r"), expect=1)
    assert "modified or damaged" in res.err


def test_flipped_byte_in_index(tb, tmp_path):
    src, files = setup_repo(tb, tmp_path)
    index = next((Path(tb.repo) / "index").iterdir())
    flip(index, 40)
    import shutil

    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
    check = tb("check", "--read-data", "--json", expect=1).json()
    assert any(index.name in e for e in check["errors"]), check["errors"]
    # commands warn about the skipped index and refuse what depends on it, one line each
    res = tb("restore", "latest", "--target", str(tmp_path / "r"), expect=1)
    assert f"index {index.name[:8]} skipped" in res.err


def test_flipped_byte_in_snapshot(tb, tmp_path):
    src, _ = setup_repo(tb, tmp_path)
    (src / "more.txt").write_text("second snapshot")
    tb("backup", str(src))
    snaps = sorted((Path(tb.repo) / "snapshots").iterdir())
    victim = snaps[0]
    tb("snapshots")  # the cache now holds both snapshots
    flip(victim, 60)
    import shutil

    # check reads the repository's own objects, not the cache's good copies
    check = tb("check", "--json", expect=1).json()
    assert any(victim.name in e for e in check["errors"]), check["errors"]
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
    listing = tb("snapshots", "--json")
    assert len(listing.json()) == 1
    assert f"snapshot {victim.name[:8]} skipped" in listing.err


@pytest.mark.parametrize("offset_from_end", [30, 200])
def test_flipped_byte_in_key(tb, tmp_path, offset_from_end):
    setup_repo(tb, tmp_path)
    key = next((Path(tb.repo) / "keys").iterdir())
    flip(key, key.stat().st_size - offset_from_end)
    res = tb("snapshots", expect=1)
    lines = [ln for ln in res.err.splitlines() if ln.strip()]
    assert len(lines) == 1
    assert "wrong passphrase" in lines[0] or "key file" in lines[0] or "has no readable passphrase key" in lines[0]
