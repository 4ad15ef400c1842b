"""repair index: a damaged or lost index object, or a lost pack, is repaired from the packs' own headers;
afterwards check --read-data passes (or names exactly the files whose data is gone), restore gives back
the source, and the next backup stores lost chunks again."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tuckbox.testing.trees import compare_trees

from .conftest import Tuckbox

MiB = 1 << 20


def _setup(tb: Tuckbox, tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    for i in range(4):
        (src / f"big{i}").write_bytes(os.urandom(700 * 1024))
    for i in range(50):
        (src / "docs" / f"n{i}.txt").write_text(f"note {i}\n" * 50)
    tb("init", "--pack-size", "1MiB")
    tb("backup", str(src))
    (src / "later").write_bytes(os.urandom(300_000))
    tb("backup", str(src))
    return src


def _restore_equal(tb: Tuckbox, src: Path, target: Path) -> None:
    tb("restore", "latest", "--target", str(target))
    assert compare_trees(src, Path(str(target) + str(src)), check_atime=False) == []


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 1
    path.chmod(0o600)
    path.write_bytes(bytes(data))


def test_a_damaged_index_object_is_rebuilt_from_the_packs(tb: Tuckbox, tmp_path: Path) -> None:
    src = _setup(tb, tmp_path)
    assert "the index is complete" in tb("repair", "index").out
    victim = sorted((Path(tb.repo) / "index").iterdir())[0]
    _flip(victim, 60)
    (tmp_path / "cache").rename(tmp_path / "old-cache")  # a machine without a cached copy of it
    check = tb("check", expect=1)
    assert victim.name in check.err and "tuckbox repair index" in check.out
    dry = tb("repair", "index", "--dry-run", "--json").json()
    assert dry["indexes_damaged"] == [victim.name] and dry["packs_reindexed"] >= 1 and dry["blobs_lost"] == 0
    assert victim.exists()  # a dry run changes nothing
    done = tb("repair", "index", "--json").json()
    assert done["indexes_damaged"] == [victim.name] and done["indexes_written"] >= 1
    assert not victim.exists()
    out = tb("check", "--read-data")
    assert "no errors found" in out.out and "not in any index" not in out.out
    _restore_equal(tb, src, tmp_path / "r")
    assert "the index is complete" in tb("repair", "index").out


def test_a_lost_index_object_is_rebuilt(tb: Tuckbox, tmp_path: Path) -> None:
    src = _setup(tb, tmp_path)
    for f in (Path(tb.repo) / "index").iterdir():
        f.unlink()  # every index object gone: only the packs are left
    (tmp_path / "cache").rename(tmp_path / "old-cache")
    tb("check", expect=1)
    tb("repair", "index")
    assert "no errors found" in tb("check", "--read-data").out
    _restore_equal(tb, src, tmp_path / "r")


def test_a_lost_index_directory_is_rebuilt_and_check_says_how(tb: Tuckbox, tmp_path: Path) -> None:
    src = _setup(tb, tmp_path)
    shutil.rmtree(Path(tb.repo) / "index")  # the directory itself, not only its objects
    (tmp_path / "cache").rename(tmp_path / "old-cache")
    check = tb("check", expect=1)
    assert "run 'tuckbox repair index'" in check.out and "harmless" not in check.out
    tb("repair", "index")
    assert "no errors found" in tb("check", "--read-data").out
    _restore_equal(tb, src, tmp_path / "r")
    for name in ("locks", "snapshots"):  # a backup makes a lost directory again too
        shutil.rmtree(Path(tb.repo) / name)
        (src / "docs" / "n0.txt").write_text(f"changed for {name}\n")
        tb("backup", str(src))
    shutil.rmtree(Path(tb.repo) / "data")  # every pack lost (and the snapshots that needed them)
    shutil.rmtree(Path(tb.repo) / "snapshots")
    tb("repair", "index")  # drops the lost packs from the index
    tb("backup", str(src))  # stores everything again, in a new data/
    assert "no errors found" in tb("check", "--read-data").out
    _restore_equal(tb, src, tmp_path / "r2")


def test_a_lost_pack_is_dropped_from_the_index_and_the_next_backup_stores_it_again(tb: Tuckbox, tmp_path: Path) -> None:
    src = _setup(tb, tmp_path)
    data_packs = sorted((f for f in (Path(tb.repo) / "data").rglob("*") if f.is_file()), key=lambda f: -f.stat().st_size)
    data_packs[0].unlink()  # a large pack: file content
    (tmp_path / "cache").rename(tmp_path / "old-cache")
    report = tb("repair", "index", "--json").json()
    assert report["packs_missing"] == [data_packs[0].name] and report["blobs_lost"] >= 1
    check = tb("check", expect=1)
    assert "damaged file" in check.err and "missing from the index" in check.err
    assert "pack " + data_packs[0].name not in check.err  # the index no longer names the lost pack
    lines = tb("backup", str(src), "--json").out.splitlines()
    assert __import__("json").loads(lines[-1])["bytes_new_raw"] >= 512 * 1024  # the lost chunks stored again
    _restore_equal(tb, src, tmp_path / "r")
    tb("forget", "--keep-last", "1", "--prune")  # the damaged snapshots go; what is left is whole
    assert "no errors found" in tb("check", "--read-data").out


def test_an_unindexed_pack_with_a_damaged_header_is_left_alone(tb: Tuckbox, tmp_path: Path) -> None:
    src = _setup(tb, tmp_path)
    for f in (Path(tb.repo) / "index").iterdir():
        f.unlink()
    (tmp_path / "cache").rename(tmp_path / "old-cache")
    packs = sorted(f for f in (Path(tb.repo) / "data").rglob("*") if f.is_file())
    victim = packs[0]
    _flip(victim, victim.stat().st_size - 5)  # in the trailer: its header cannot be found
    report = tb("repair", "index", "--json").json()
    assert report["packs_unreadable"] == [victim.name]
    assert report["packs_reindexed"] == len(packs) - 1
    assert victim.exists()
    r = tb("repair", "index")  # still reported, still left alone
    assert "header unreadable" in r.err and victim.exists()
    # check still finds the pack unindexed and blobs missing: it must not only send the user back to
    # 'repair index', which cannot read that pack; what it held is lost, and 'repair snapshots' is the way on
    check = tb("check", expect=1)
    assert "tuckbox repair snapshots" in check.out
    del src


def test_repair_snapshots_leaves_out_exactly_the_files_whose_data_is_lost(tb: Tuckbox, tmp_path: Path) -> None:
    src = _setup(tb, tmp_path)
    data_packs = sorted((f for f in (Path(tb.repo) / "data").rglob("*") if f.is_file()), key=lambda f: -f.stat().st_size)
    data_packs[0].unlink()
    tb("repair", "index")
    damaged = {line.split("damaged file: ", 1)[1].split(" (snapshot")[0]
               for line in tb("check", expect=1).err.splitlines() if line.startswith("damaged file: ")}
    assert damaged
    before = {s["id"] for s in tb("snapshots", "--json").json()}
    dry = tb("repair", "snapshots", "--dry-run", "--json").json()
    assert {r["old"] for r in dry["snapshots"]} <= before and dry["snapshots"]
    assert {s["id"] for s in tb("snapshots", "--json").json()} == before  # a dry run changes nothing
    done = tb("repair", "snapshots", "--json").json()
    assert {p for r in done["snapshots"] for p in r["removed"]} == damaged
    snaps = tb("snapshots", "--json").json()
    assert len(snaps) == 2 and all("repaired" in s["tags"] for s in snaps if s["id"] in {r["new"] for r in done["snapshots"]})
    assert not before & {r["new"] for r in done["snapshots"]}
    assert "no errors found" in tb("check", "--read-data").out  # clean again
    target = tmp_path / "r"
    tb("restore", "latest", "--target", str(target))
    for name in damaged:  # exactly the damaged files are missing; everything else is exact
        parent = os.stat(Path(name).parent)
        Path(name).rename(Path(str(tmp_path / "aside") + name.replace("/", "_")))
        os.utime(Path(name).parent, ns=(parent.st_atime_ns, parent.st_mtime_ns))  # (moving it out changed them)
    assert compare_trees(src, Path(str(target) + str(src)), check_atime=False) == []
    latest = tb("snapshots", "--json").json()[-1]["summary"]  # its size is that of what it still holds
    assert latest["bytes_total"] == sum(f.stat().st_size for f in src.rglob("*") if f.is_file())
    assert "every piece of their data" in tb("repair", "snapshots").out


def test_repair_snapshots_killed_between_saving_and_removing_leaves_no_duplicate(tb: Tuckbox, tmp_path: Path) -> None:
    """Killed after saving a repaired snapshot and before removing the damaged one, the next run repaired the
    damaged one again: two identical repaired snapshots. Now it finds the one saved and removes the old."""
    _setup(tb, tmp_path)
    data_packs = sorted((f for f in (Path(tb.repo) / "data").rglob("*") if f.is_file()), key=lambda f: -f.stat().st_size)
    data_packs[0].unlink()
    tb("repair", "index")
    before = tb("snapshots", "--json").json()
    res = tb("repair", "snapshots", env={"TUCKBOX_TEST_FAULTS": "crash_after_snapshots=1"}, expect=None)
    assert res.code == -9, res.err
    assert len(tb("snapshots", "--json").json()) == len(before) + 1
    tb("unlock")
    tb("repair", "snapshots")
    snaps = tb("snapshots", "--json").json()
    assert len(snaps) == len(before) and all("repaired" in s["tags"] for s in snaps), snaps
    assert "no errors found" in tb("check").out


def test_repair_snapshots_reports_a_snapshot_whose_root_is_lost(tb: Tuckbox, tmp_path: Path) -> None:
    _setup(tb, tmp_path)
    from tuckbox.backends.local import LocalBackend
    from tuckbox.repository.repo import Repository
    from tuckbox.types import BlobType

    repo = Repository.open(LocalBackend(tb.repo), lambda: tb.passfile.read_bytes().strip())
    tree_packs = [name for name, p in repo.index.packs.items() if p.kind is BlobType.TREE]
    repo.close()
    assert tree_packs
    for f in (Path(tb.repo) / "data").rglob("*"):
        if f.name in tree_packs:
            f.unlink()  # every directory listing is gone
    (tmp_path / "cache").rename(tmp_path / "old-cache")
    tb("repair", "index")
    res = tb("repair", "snapshots", "--json").json()
    assert res["snapshots"] and all(r["lost"] and not r["new"] for r in res["snapshots"])
    assert "root directory listing is lost" in tb("repair", "snapshots").out


def test_repair_snapshots_keeps_a_directory_whose_listing_is_lost_empty(tb: Tuckbox, tmp_path: Path) -> None:
    src = _setup(tb, tmp_path)  # two backups: the second stored new listings for src and its parents only
    from tuckbox.backends.local import LocalBackend
    from tuckbox.repository.repo import Repository
    from tuckbox.snapshot.walk import find
    from tuckbox.types import BlobType

    repo = Repository.open(LocalBackend(tb.repo), lambda: tb.passfile.read_bytes().strip())
    latest = repo.find_snapshot("latest")
    docs = find(lambda t: repo.load_blob(BlobType.TREE, t), latest.tree, os.fsencode(src / "docs"))
    docs_pack = repo.index.lookup(docs.subtree).pack.name
    assert repo.index.lookup(latest.tree).pack.name != docs_pack
    repo.close()
    next(f for f in (Path(tb.repo) / "data").rglob(docs_pack)).unlink()
    (tmp_path / "cache").rename(tmp_path / "old-cache")
    tb("repair", "index")
    res = tb("repair", "snapshots", "--json").json()
    by_old = {r["old"]: r for r in res["snapshots"]}
    assert not by_old[latest.id]["lost"] and by_old[latest.id]["removed"] == [str(src / "docs") + "/"]
    lost = [old for old, r in by_old.items() if r["lost"]]
    assert len(lost) == 1 and lost[0] != latest.id  # the first snapshot's root listing went with the pack
    assert "root tree is missing" in tb("check", expect=1).err
    tb("forget", lost[0][:12])  # what 'repair snapshots' told to do with it
    assert "no errors found" in tb("check", "--read-data").out
    target = tmp_path / "r"
    tb("restore", by_old[latest.id]["new"][:12], "--target", str(target))
    restored = Path(str(target) + str(src))
    assert (restored / "docs").is_dir() and list((restored / "docs").iterdir()) == []
    assert (restored / "later").read_bytes() == (src / "later").read_bytes()
    assert all((restored / f"big{i}").read_bytes() == (src / f"big{i}").read_bytes() for i in range(4))
