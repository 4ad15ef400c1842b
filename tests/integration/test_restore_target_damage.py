"""A resumed restore whose target was changed meanwhile (what an interrupted restore leaves is anybody's to
touch): a symlink where a directory goes, pointing out of the target, is replaced, never followed; whatever
cannot be restored (a directory where a file or a hardlink goes) is an error, not a warning: exit 1, each
entry named, the marker kept, so the same command completes the target once the obstacle is gone."""

from __future__ import annotations

import os
from pathlib import Path

from tuckbox.testing.trees import compare_trees

from .conftest import Tuckbox


def _source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    for d in ("a", "b", "c"):
        (src / d / "deep").mkdir(parents=True)
        for i in range(5):
            (src / d / f"f{i}.txt").write_text(f"{d} {i}\n" * 100)
            (src / d / "deep" / f"g{i}.txt").write_text(f"{d} deep {i}\n" * 100)
    os.link(src / "a" / "f0.txt", src / "a" / "hardlink")
    return src


def _interrupted(tb: Tuckbox, target: Path) -> str:
    """A target as an interrupted restore of the latest snapshot leaves it: only its marker, so far."""
    snap = tb("snapshots", "--json").json()[-1]["id"]
    target.mkdir()
    (target / ".tuckbox-restore").write_text(snap + "\n")
    return snap


def test_a_resumed_restore_replaces_symlinks_in_the_way_and_never_writes_outside(tb: Tuckbox, tmp_path: Path) -> None:
    src = _source(tmp_path)
    tb("init")
    tb("backup", str(src))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f0.txt").write_text("not the restore's\n")
    target = tmp_path / "target"
    _interrupted(tb, target)
    here = Path(str(target) + str(src))
    here.mkdir(parents=True)
    (here / "a").symlink_to(outside)  # where a directory goes
    (here / "b").mkdir()
    (here / "b" / "deep").symlink_to(outside)  # deeper down
    (here / "c").write_text("a file where a directory goes\n")
    tb("restore", "latest", "--target", str(target))
    assert sorted(p.name for p in outside.iterdir()) == ["f0.txt"]
    assert (outside / "f0.txt").read_text() == "not the restore's\n"
    assert not (target / ".tuckbox-restore").exists()
    assert compare_trees(src, here, check_atime=False) == []


def test_what_cannot_be_restored_is_an_error_and_the_restore_stays_resumable(tb: Tuckbox, tmp_path: Path) -> None:
    src = _source(tmp_path)
    tb("init")
    tb("backup", str(src))
    target = tmp_path / "target"
    _interrupted(tb, target)
    here = Path(str(target) + str(src))
    (here / "a" / "hardlink").mkdir(parents=True)  # a directory where the second name of a hardlink goes
    (here / "a" / "hardlink" / "x").write_text("someone's\n")
    res = tb("restore", "latest", "--target", str(target), expect=1)
    assert f"{src}/a/hardlink: not restored" in res.err
    assert (target / ".tuckbox-restore").exists()  # not complete: the same command resumes it
    (here / "a" / "hardlink" / "x").unlink()
    (here / "a" / "hardlink").rmdir()
    tb("restore", "latest", "--target", str(target))
    assert not (target / ".tuckbox-restore").exists()
    assert compare_trees(src, here, check_atime=False) == []
