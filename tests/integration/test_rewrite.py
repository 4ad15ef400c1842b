"""rewrite --exclude: a file that should never have been backed up is removed from every snapshot, and
after prune its data is gone from the repository; everything else restores exactly."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tuckbox.testing.trees import compare_trees

from .conftest import Tuckbox


def _pack_bytes(tb: Tuckbox) -> int:
    return sum(f.stat().st_size for f in (Path(tb.repo) / "data").rglob("*") if f.is_file())


def test_a_secret_is_removed_from_every_snapshot_and_its_data_pruned(tb: Tuckbox, tmp_path: Path) -> None:
    src = tmp_path / "home"
    (src / ".ssh").mkdir(parents=True)
    (src / "docs").mkdir()
    secret = os.urandom(2 << 20)  # big enough to be its own chunks
    (src / ".ssh" / "id_ed25519").write_bytes(secret)
    (src / ".ssh" / "known_hosts").write_text("host key\n")
    for i in range(20):
        (src / "docs" / f"d{i}.txt").write_text(f"doc {i}\n" * 100)
    (src / "big.bin").write_bytes(os.urandom(1 << 20))
    tb("init")
    tb("backup", str(src))
    (src / "docs" / "new.txt").write_text("new\n")
    tb("backup", str(src))
    ids = [s["id"] for s in tb("snapshots", "--json").json()]

    dry = tb("rewrite", "--exclude", "id_*", "--dry-run", "--json").json()
    assert [r["removed"] for r in dry["snapshots"]] == [[str(src / ".ssh" / "id_ed25519")]] * 2
    assert [s["id"] for s in tb("snapshots", "--json").json()] == ids  # a dry run changes nothing

    before = _pack_bytes(tb)
    out = tb("rewrite", "--exclude", "id_*", "--prune", "--max-unused", "0", "--json").json()
    assert {r["old"] for r in out["snapshots"]} == set(ids)
    snaps = tb("snapshots", "--json").json()
    assert {s["id"] for s in snaps} == {r["new"] for r in out["snapshots"]}
    assert all("rewritten" in s["tags"] and s["summary"]["rewritten_removed"] == 1 for s in snaps)
    assert _pack_bytes(tb) <= before - len(secret)  # its data is gone from the storage
    assert "id_ed25519" not in tb("find", "id_*").out
    assert "no errors found" in tb("check", "--read-data").out

    target = tmp_path / "r"
    tb("restore", "latest", "--target", str(target))
    st = os.stat(src / ".ssh")
    shutil.move(src / ".ssh" / "id_ed25519", tmp_path / "the-secret")
    os.utime(src / ".ssh", ns=(st.st_atime_ns, st.st_mtime_ns))  # (the move touched the directory)
    assert compare_trees(src, Path(str(target) + str(src)), check_atime=False) == []
    assert "nothing matches" in tb("rewrite", "--exclude", "id_*").out


def test_rewrite_refuses_what_it_should(tb: Tuckbox, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    tb("init")
    tb("backup", str(src))
    assert "--exclude" in tb("rewrite", expect=2).err
    assert "tuckbox forget" in tb("rewrite", "--exclude", "/", expect=2).err
    assert "no snapshot" in tb("rewrite", "abcd1234", "--exclude", "a", expect=2).err
    # a directory pattern takes everything inside it, and the directory itself
    (src / "cache").mkdir()
    (src / "cache" / "x").write_text("x")
    tb("backup", str(src))
    res = tb("rewrite", "--exclude", "cache/", "--json").json()
    assert [r["removed"] for r in res["snapshots"]] == [[str(src / "cache")]]
    assert str(src / "a") in tb("ls", "latest").out and str(src / "cache") not in tb("ls", "latest").out


def test_rewrite_refuses_a_pattern_that_takes_a_backed_up_path(tb: Tuckbox, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("hello\n")
    tb("init")
    tb("backup", str(src))
    before = tb("snapshots", "--json").json()
    short = before[0]["short_id"]
    # the backed-up path itself, a directory above it, by name or by path: all of the snapshot would go
    for pattern in (str(src), str(src) + "/", "src", str(tmp_path), tmp_path.name, "/" + str(src).split("/")[1]):
        for extra in ((), ("--dry-run",)):
            err = tb("rewrite", "--exclude", "sub", "--exclude", pattern, *extra, expect=2).err
            assert f"'{pattern}'" in err and short in err and "tuckbox forget" in err
            assert len(err.strip().splitlines()) == 1
    assert tb("snapshots", "--json").json() == before  # nothing changed


def test_a_rewritten_snapshot_has_the_sizes_and_counts_of_what_it_holds(tb: Tuckbox, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("hello\n")
    (src / "sub" / "b.txt").write_text("world\n")
    (src / "big1").write_bytes(os.urandom(3_000_000))
    (src / "sub" / "big2").write_bytes(os.urandom(2_000_000))
    (src / "drop").mkdir()
    (src / "drop" / "c").write_bytes(os.urandom(1000))
    (src / "link").symlink_to("a.txt")
    tb("init")
    tb("backup", str(src))
    old = tb("snapshots", "--json").json()[0]["summary"]
    assert (old["bytes_total"], old["dirs"], old["others"]) == (5_001_012, 3, 1)
    assert "until 'tuckbox prune'" in tb("rewrite", "--exclude", "big*", "--exclude", "drop").out
    new = tb("snapshots", "--json").json()[0]["summary"]
    assert (new["bytes_total"], new["files"], new["dirs"], new["others"]) == (12, 2, 2, 1)
    assert new["rewritten_removed"] == 3 and new["bytes_read"] == old["bytes_read"]
    assert "12 B in the latest" in tb("stats").out


def test_a_rewrite_killed_between_saving_and_removing_leaves_no_duplicate(tb: Tuckbox, tmp_path: Path) -> None:
    """Rewrite saves the new snapshot before it removes the old one. Killed in between, the next run made
    the same snapshot again: the history kept two identical snapshots (each taking a place a retention rule
    keeps). Now the next run finds the one already saved and only removes the old snapshot."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("secret", "a", "b"):
        (src / name).write_bytes(name.encode() * 100)
    tb("init")
    tb("backup", str(src))
    (src / "c").write_bytes(b"c")
    tb("backup", str(src))
    res = tb("rewrite", "--exclude", "secret", env={"TUCKBOX_TEST_FAULTS": "crash_after_snapshots=1"}, expect=None)
    assert res.code == -9, res.err  # killed right after the first new snapshot was stored
    assert len(tb("snapshots", "--json").json()) == 3
    tb("unlock")
    tb("rewrite", "--exclude", "secret")
    snaps = tb("snapshots", "--json").json()
    assert len(snaps) == 2 and all("rewritten" in s["tags"] for s in snaps), snaps
    assert sorted(s["summary"]["files"] for s in snaps) == [2, 3]
    for s in snaps:
        assert f"{src}/secret" not in tb("ls", s["id"], str(src)).out
    assert "no errors found" in tb("check").out
