"""A flipped byte anywhere is detected, named, and never restored as wrong bytes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tuckbox.backends.local import LocalBackend
from tuckbox.errors import TuckboxError
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
    assert "wrong passphrase" in lines[0] or f"(keys/{key.name[:8]}) cannot be read: damaged" in lines[0]


def _fresh_repository(tmp_path: Path, monkeypatch) -> tuple[LocalBackend, Repository]:
    monkeypatch.setenv("TUCKBOX_TEST_CHEAP_KDF", "1")
    monkeypatch.setenv("TUCKBOX_CACHE_DIR", str(tmp_path / "cache"))
    backend = LocalBackend(str(tmp_path / "repo"))
    return backend, Repository.init(backend, b"pw", created="2026-01-01T00:00:00+00:00", host="h", user="u")


def test_a_flipped_bit_anywhere_in_the_config_is_called_damage(tmp_path, monkeypatch):
    """Never "upgrade tuckbox" (a damaged chunker name or version), "not a tuckbox repository" (broken JSON) or
    "no readable passphrase key" (a damaged repository id): each sent the owner of a damaged repository the
    wrong way."""
    backend, repo = _fresh_repository(tmp_path, monkeypatch)
    repo.close()
    path = tmp_path / "repo" / "config"
    original = path.read_bytes()
    for offset in range(len(original)):
        for bit in (0x01, 0x40):
            damaged = bytearray(original)
            damaged[offset] ^= bit
            path.write_bytes(bytes(damaged))
            with pytest.raises(TuckboxError) as e:
                Repository.open(backend, lambda: b"pw", load_index=False).close()
            message = e.value.message
            assert "config" in message and ("damaged" in message or "modified" in message), (offset, bit, message)
    path.write_bytes(original)
    Repository.open(backend, lambda: b"pw", load_index=False).close()


def test_a_config_of_a_newer_tuckbox_is_still_refused_with_upgrade(tmp_path, monkeypatch):
    import dataclasses

    from tuckbox.errors import UnsupportedFormat

    backend, repo = _fresh_repository(tmp_path, monkeypatch)
    config, config_key = repo.config, repo.keys.config_key
    repo.close()
    path = tmp_path / "repo" / "config"
    original = path.read_bytes()
    newer = (dataclasses.replace(config, features=["shiny-new-thing"]),
             dataclasses.replace(config, chunker=dataclasses.replace(config.chunker, algorithm="fastcdc2030")))
    for cfg, words in zip(newer, ("shiny-new-thing", "chunker 'fastcdc2030'")):
        path.write_bytes(cfg.encode(config_key))  # (as a newer tuckbox writes it: its MAC holds)
        with pytest.raises(UnsupportedFormat, match=f"{words}.*upgrade tuckbox"):
            Repository.open(backend, lambda: b"pw", load_index=False)
    path.write_bytes(original)


@pytest.mark.parametrize("damaged_key", [0, 1])
def test_a_damaged_key_does_not_keep_another_passphrase_from_opening(tmp_path, monkeypatch, damaged_key):
    import json

    from tuckbox.crypto.keyfile import open_keyfile

    backend, repo = _fresh_repository(tmp_path, monkeypatch)
    repo.add_key(repo.keys, b"second", created="2026-01-02T00:00:00+00:00", host="h", user="u")
    repo.close()
    keys = sorted((tmp_path / "repo" / "keys").iterdir())
    assert len(keys) == 2
    passphrases = {}
    for k in keys:
        raw = k.read_bytes()
        try:
            open_keyfile(raw, b"pw")
            passphrases[k.name] = b"pw"
        except TuckboxError:
            passphrases[k.name] = b"second"
    victim, survivor = keys[damaged_key], keys[1 - damaged_key]
    doc = json.loads(victim.read_bytes())
    del doc["payload"]
    victim.write_bytes(json.dumps(doc).encode())
    Repository.open(backend, lambda: passphrases[survivor.name], load_index=False).close()
    with pytest.raises(TuckboxError, match=f"or the one of keys/{victim.name[:8]} that it opens is damaged"):
        Repository.open(backend, lambda: b"neither", load_index=False)
    survivor.unlink()
    with pytest.raises(TuckboxError, match=f"passphrase key of repository .* \\(keys/{victim.name[:8]}\\) cannot be "
                                           "read: damaged"):
        Repository.open(backend, lambda: passphrases[victim.name], load_index=False)
