"""The paths given to ``backup``: what reaches them through symbolic links is what is stored."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import Tuckbox


def restored(target: Path, src: Path) -> Path:
    return Path(str(target) + str(src))


def test_a_symlinked_directory_on_the_way_to_a_path_is_stored_as_a_directory(tb: Tuckbox, tmp_path: Path) -> None:
    """``backup /home/ann/docs`` where /home is a symbolic link to /data/home stored /home as the link, and
    the files read below it nowhere: the snapshot said saved and restored nothing. A directory on the way to
    a path is now stored as the directory the link leads to, so the path typed holds the files."""
    real = tmp_path / "data" / "home"
    (real / "docs" / "sub").mkdir(parents=True)
    (real / "docs" / "a.txt").write_bytes(b"alpha\n")
    (real / "docs" / "sub" / "b.txt").write_bytes(b"beta\n")
    past = 1_600_000_000_000_000_000  # (the files cache trusts no file modified within a second of the read)
    for f in (real / "docs" / "a.txt", real / "docs" / "sub" / "b.txt"):
        os.utime(f, ns=(past, past))
    time.sleep(1.05)
    os.setxattr(real, b"user.note", b"on the directory")
    os.utime(real, ns=(1_500_000_000_123_456_789, 1_600_000_000_987_654_321))
    link = tmp_path / "home"
    link.symlink_to(real)
    typed = link / "docs"
    tb("init")
    tb("backup", str(typed))
    entries = {e["path"]: e["type"] for e in tb("ls", "--json", "latest").json()["entries"]}
    assert entries[str(link)] == "dir", entries
    assert entries[str(typed / "a.txt")] == "file" and entries[str(typed / "sub" / "b.txt")] == "file", entries
    assert tb("dump", "latest", str(typed / "sub" / "b.txt")).raw == b"beta\n"
    tb("restore", "latest", "--target", str(tmp_path / "r"))
    out = restored(tmp_path / "r", link)
    assert not out.is_symlink() and (out / "docs" / "a.txt").read_bytes() == b"alpha\n"
    assert (out / "docs" / "sub" / "b.txt").read_bytes() == b"beta\n"
    # the directory's own metadata, not the link's
    assert os.getxattr(out, b"user.note") == b"on the directory"
    assert os.stat(out).st_mtime_ns == 1_600_000_000_987_654_321
    # an unchanged second run reads nothing again
    second = tb("backup", str(typed), "--json").out.splitlines()[-1]
    assert '"files_unmodified": 2' in second and '"bytes_read": 0' in second, second


def test_a_symlink_and_a_path_through_it_are_refused_together(tb: Tuckbox, tmp_path: Path) -> None:
    """``backup link link/sub``: the link is stored as a link, which cannot also hold sub; the second path
    was dropped as 'inside the first' and its files were in no snapshot."""
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    (real / "sub" / "f").write_bytes(b"data\n")
    link = tmp_path / "link"
    link.symlink_to(real)
    tb("init")
    res = tb("backup", str(link), str(link / "sub"), expect=2)
    errors = [ln for ln in res.err.splitlines() if ln.startswith("tuckbox: error:")]
    assert len(errors) == 1 and f"{link}/sub" in errors[0] and "symbolic link" in errors[0], res.err
    assert tb("snapshots", "--json").json() == []


def test_a_path_through_a_symlink_inside_another_path_is_refused(tb: Tuckbox, tmp_path: Path) -> None:
    """``backup top top/link/sub`` where top/link is a symbolic link: the walk of top stores the link as a
    link, and top/link/sub was dropped as 'inside top' without a word: the snapshot said saved and held no
    top/link/sub. Refused now, naming the link and the directory to give instead."""
    top = tmp_path / "top"
    (top / "real" / "sub").mkdir(parents=True)
    (top / "real" / "sub" / "f").write_bytes(b"data\n")
    (top / "link").symlink_to("real")
    tb("init")
    res = tb("backup", str(top), str(top / "link" / "sub"), expect=2)
    errors = [ln for ln in res.err.splitlines() if ln.startswith("tuckbox: error:")]
    assert len(errors) == 1 and f"{top}/link is a symbolic link" in errors[0], res.err
    assert f"({top}/real/sub)" in errors[0], res.err
    assert tb("snapshots", "--json").json() == []
    tb("backup", str(top), str(top / "real" / "sub"))  # (a real directory inside another path: fine)
    tb("backup", str(top / "link" / "sub"))  # (alone, the link on the way is stored as a directory)
    assert tb("dump", "latest", str(top / "link" / "sub" / "f")).raw == b"data\n"


def test_dot_dot_after_a_symlink_is_not_taken_as_text(tb: Tuckbox, tmp_path: Path) -> None:
    """``backup deep/../g`` where deep is a symlink to a/b means a/g to the system; tuckbox dropped
    'deep/..' as text and said g 'does not exist' (or, had there been one, backed up another g)."""
    base = tmp_path / "base"
    (base / "a" / "b").mkdir(parents=True)
    (base / "a" / "g").write_bytes(b"the real g\n")
    (base / "deep").symlink_to("a/b")
    tb("init")
    res = tb("backup", "deep/../g", cwd=base, expect=2)
    assert len(res.err.strip().splitlines()) == 1 and "deep/../g" in res.err and "does not exist" not in res.err, res.err
    (base / "g").write_bytes(b"another g\n")  # now the text names a file that exists: still refused
    res = tb("backup", "deep/../g", cwd=base, expect=2)
    assert "deep/../g" in res.err and str(base / "a" / "g") in res.err, res.err
    assert tb("snapshots", "--json").json() == []
    # '..' that goes where the text says is fine
    tb("backup", "a/b/../g", cwd=base)
    assert tb("dump", "latest", str(base / "a" / "g")).raw == b"the real g\n"


def test_one_file_system_keeps_every_file_system_given(tb: Tuckbox, tmp_path: Path) -> None:
    """``backup --one-file-system / /home`` with /home a file system of its own: /home was dropped as inside
    /, and the walk of / then stored it empty as another file system. Each path given brings its own."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "a").write_bytes(b"on the first\n")
    mounted = src / "m"
    other = src / "other"
    for where in (mounted, other):
        where.mkdir()
        try:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], check=True, capture_output=True)
        except (subprocess.CalledProcessError, FileNotFoundError) as e:
            pytest.skip(f"cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN): {e}")
    try:
        (mounted / "b").write_bytes(b"on the second\n")
        (other / "c").write_bytes(b"not asked for\n")
        tb("init")
        tb("backup", "--one-file-system", str(src), str(mounted))
        entries = {e["path"] for e in tb("ls", "--json", "latest").json()["entries"]}
        assert str(src / "d" / "a") in entries and str(mounted / "b") in entries, entries
        assert str(other) in entries and str(other / "c") not in entries, entries  # (not given: stays empty)
        assert tb("dump", "latest", str(mounted / "b")).raw == b"on the second\n"
    finally:
        for where in (mounted, other):
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_an_exclude_that_covers_a_backup_path_is_refused(tb: Tuckbox, tmp_path: Path) -> None:
    """``backup /tmp/x --exclude /tmp``: README says a pattern leaves out everything inside what it
    matches, yet the walk applied patterns below the paths given only, so all of /tmp/x was stored. The
    two ask for opposite things; a scheduled backup should not settle it in silence either way."""
    src = tmp_path / "src"
    (src / "proj" / "sub").mkdir(parents=True)
    (src / "proj" / "sub" / "f.txt").write_bytes(b"data\n")
    (src / "other").mkdir()
    (src / "other" / "g.txt").write_bytes(b"more\n")
    tb("init")
    for pattern, path in ((str(src / "proj"), src / "proj" / "sub"), ("proj", src / "proj" / "sub"), ("sub", src / "proj" / "sub"),
                          ("proj/sub", src / "proj" / "sub"), ("*.txt", src / "proj" / "sub" / "f.txt")):
        res = tb("backup", str(src / "other"), str(path), "--exclude", pattern, expect=2)
        errors = [ln for ln in res.err.splitlines() if ln.strip()]
        assert len(errors) == 1 and pattern in errors[0] and str(path) in errors[0], (pattern, res.err)
    assert tb("snapshots", "--json").json() == []
    # a pattern that matches below the path (or elsewhere) is what excludes are for
    tb("backup", str(src), "--exclude", "sub", "--exclude", str(tmp_path / "elsewhere"))
    paths = {e["path"] for e in tb("ls", "--json", "latest").json()["entries"]}
    assert str(src / "other" / "g.txt") in paths and str(src / "proj") in paths, paths
    assert not any(p.startswith(str(src / "proj" / "sub")) for p in paths), paths
