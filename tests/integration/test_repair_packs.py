"""repair packs: a pack whose bytes are damaged (stored with its indexed size, so 'repair index' sees nothing
to do) is replaced by its intact blobs; its damaged blobs leave the index, so the next backup stores those
files again instead of deduplicating against the damage forever, and the old snapshots become whole too."""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import Tuckbox
from .test_repair import _flip, _restore_equal, _setup


def _pack_of(tb: Tuckbox, path: Path) -> tuple[str, int, int]:
    """The pack holding ``path``'s first chunk, where that chunk starts in it, and how many blobs it holds."""
    from tuckbox.backends.local import LocalBackend
    from tuckbox.repository.repo import Repository
    from tuckbox.snapshot.walk import find
    from tuckbox.types import BlobType

    repo = Repository.open(LocalBackend(tb.repo), lambda: tb.passfile.read_bytes().strip())
    try:
        node = find(lambda t: repo.load_blob(BlobType.TREE, t), repo.find_snapshot("latest").tree, os.fsencode(path))
        loc = repo.index.lookup(node.content[0])
        return loc.pack.name, loc.entry.offset, len(repo.index.pack_blobs(loc.pack.name))
    finally:
        repo.close()


def test_a_damaged_pack_is_replaced_by_its_intact_blobs_and_the_next_backup_heals(tb: Tuckbox, tmp_path: Path) -> None:
    src = _setup(tb, tmp_path)
    victim = src / "docs" / "n7.txt"
    name, offset, blobs = _pack_of(tb, victim)
    assert blobs > 1  # the other notes share its pack: they must survive
    pack = next((Path(tb.repo) / "data").rglob(name))
    _flip(pack, offset + 20)  # one blob damaged; the pack keeps its size
    check = tb("check", "--read-data", expect=1)
    assert f"tuckbox repair packs {name[:8]}" in check.out
    assert "the index is complete" in tb("repair", "index").out  # nothing for it to do: the pack is stored
    dry = tb("repair", "packs", name[:8], "--dry-run", "--json").json()
    assert (dry["blobs_salvaged"], dry["blobs_damaged"], dry["blobs_lost"]) == (blobs - 1, 1, 1)
    assert pack.exists()
    done = tb("repair", "packs", name[:8], "--json").json()
    assert done["packs"] == [name] and done["blobs_salvaged"] == blobs - 1 and done["blobs_lost"] == 1
    assert not pack.exists()
    # exactly the file of the damaged blob is missing from the index; every other file is intact
    damaged = {line.split("damaged file: ", 1)[1].split(" (snapshot")[0]
               for line in tb("check", "--read-data", expect=1).err.splitlines() if line.startswith("damaged file: ")}
    assert damaged == {str(victim)}
    # the file still exists: the next backup stores it again (the files cache no longer trusts it) ...
    tb("backup", str(src))
    assert "no errors found" in tb("check", "--read-data").out  # ... which makes the older snapshots whole too
    _restore_equal(tb, src, tmp_path / "r")
    first = tb("snapshots", "--json").json()[0]["id"]
    tb("restore", first, "--target", str(tmp_path / "r0"), "--include", str(victim))
    assert (Path(str(tmp_path / "r0") + str(victim))).read_bytes() == victim.read_bytes()


def test_a_damaged_tree_pack_is_salvaged_from_the_caches_copy(tb: Tuckbox, tmp_path: Path) -> None:
    src = _setup(tb, tmp_path)
    tb("ls", "latest")  # this machine reads the listings: its cache holds a verified copy of the tree pack
    from tuckbox.backends.local import LocalBackend
    from tuckbox.repository.repo import Repository

    repo = Repository.open(LocalBackend(tb.repo), lambda: tb.passfile.read_bytes().strip())
    loc = repo.index.lookup(repo.find_snapshot("latest").tree)  # the root listing's tree pack
    tree_pack, entry = loc.pack, loc.entry
    repo.close()
    pack = next((Path(tb.repo) / "data").rglob(tree_pack.name))
    _flip(pack, entry.offset + 5)
    assert f"tuckbox repair packs {tree_pack.name[:8]}" in tb("check", "--read-data", expect=1).out
    done = tb("repair", "packs", tree_pack.name, "--json").json()
    assert done["blobs_damaged"] == 0 and done["blobs_lost"] == 0 and done["blobs_salvaged"] >= 1
    assert "no errors found" in tb("check", "--read-data").out
    _restore_equal(tb, src, tmp_path / "r")


def test_repair_packs_refuses_what_is_not_a_pack(tb: Tuckbox, tmp_path: Path) -> None:
    _setup(tb, tmp_path)
    assert "needs the names of the damaged packs" in tb("repair", "packs", expect=2).err
    assert "no pack" in tb("repair", "packs", "ffffffff", expect=2).err
    assert "not a pack name" in tb("repair", "packs", "zz", expect=2).err
