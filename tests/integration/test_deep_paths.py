"""A tree nested deeper than one system call can name (PATH_MAX, 4096 bytes) backs up and restores whole."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tuckbox.backends.local import LocalBackend
from tuckbox.longpath import DIR_PATH, PATH_MAX, held, open_deep
from tuckbox.repository.repo import Repository
from tuckbox.restorer import restorer as restorer_module
from tuckbox.testing.trees import compare_trees, sample_tree

NAME = b"d" * 200
LEVELS = 25  # about 5,000 bytes of path below the source


def _deep_tree(src: Path) -> bytes:
    """``src`` with a file on every level of a chain of ``LEVELS`` directories; return the deepest one's path."""
    path = os.fsencode(src)
    os.mkdir(path)
    for level in range(LEVELS):
        parent = open_deep(path, DIR_PATH)
        try:
            os.mkdir(NAME, dir_fd=parent)
            fd = os.open(b"level.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=parent)
            os.write(fd, b"level %d\n" % level)
            os.close(fd)
        finally:
            os.close(parent)
        path += b"/" + NAME
    assert len(path) > PATH_MAX + 500
    return path


def _levels(top: bytes) -> list[bytes]:
    """Every level's file, read a piece of path at a time."""
    out, path = [], top
    for _ in range(LEVELS):
        fd = open_deep(path + b"/level.txt", os.O_RDONLY)
        try:
            out.append(os.read(fd, 100))
        finally:
            os.close(fd)
        path += b"/" + NAME
    return out


def _files(deepest: bytes) -> list[str]:
    """The names of regular files (each name of a hardlinked file) of the sample tree below ``deepest``."""
    fd, sample = _sample_at(deepest)
    try:
        out = []
        for top, _, names in os.walk(sample):
            for name in names:
                if os.path.stat.S_ISREG(os.lstat(os.path.join(top, name)).st_mode):
                    out.append(name)
        return out
    finally:
        os.close(fd)


def _sample_at(deepest: bytes) -> tuple[int, Path]:
    """Open the deepest directory; return its descriptor and a short path to its ``sample`` below."""
    fd = open_deep(deepest, DIR_PATH)
    return fd, Path(os.fsdecode(held(fd))) / "sample"


def test_deep_tree_round_trip(tb, tmp_path):
    src = tmp_path / "src"
    deepest = _deep_tree(src)
    fd, sample = _sample_at(deepest)
    try:
        sample_tree(sample)  # every kind of entry and metadata, more than PATH_MAX below the source
    finally:
        os.close(fd)
    time.sleep(1.05)  # (the files cache trusts no file modified within a second of being read)
    tb("init")
    backup = tb("backup", str(src), "--json")  # exit 0: every entry read, no warning
    summary = json.loads([ln for ln in backup.out.splitlines() if '"type": "summary"' in ln][-1])
    assert summary["files_new"] == LEVELS + sum(1 for _ in _files(deepest)), summary

    # restored below a target that makes every path longer still; by worker processes (the default)
    target = tmp_path / ("r" * 200) / ("s" * 200)
    tb("restore", "latest", "--target", str(target))
    restored_top = os.fsencode(target) + os.fsencode(src)
    assert _levels(restored_top) == [b"level %d\n" % k for k in range(LEVELS)]
    fd_a, a = _sample_at(deepest)
    fd_b, b = _sample_at(restored_top + deepest[len(os.fsencode(src)):])
    try:
        assert compare_trees(a, b) == []
    finally:
        os.close(fd_a)
        os.close(fd_b)

    # the files cache knows the deep files: an unchanged backup reads nothing
    again = tb("backup", str(src))
    assert "read 0 B" in again.out, again.out


def test_deep_tree_restore_in_process(tb, tmp_path, monkeypatch: pytest.MonkeyPatch):
    """The same restore by threads in one process (no worker processes)."""
    src = tmp_path / "src"
    deepest = _deep_tree(src)
    fd, sample = _sample_at(deepest)
    try:
        sample_tree(sample)
    finally:
        os.close(fd)
    tb("init")
    tb("backup", str(src))
    monkeypatch.setattr(restorer_module, "PROCESSES", 1)
    monkeypatch.setenv("TUCKBOX_CACHE_DIR", str(tmp_path / "cache"))
    repo = Repository.open(LocalBackend(tb.repo), lambda: tb.passfile.read_bytes().rstrip(b"\n"))
    target = os.fsencode(tmp_path / ("t" * 250))
    result = restorer_module.Restorer(repo).restore(repo.find_snapshot("latest"), target)
    assert result.errors == [] and result.warnings == []
    restored_top = target + os.fsencode(src)
    assert _levels(restored_top) == [b"level %d\n" % k for k in range(LEVELS)]
    fd_a, a = _sample_at(deepest)
    fd_b, b = _sample_at(restored_top + deepest[len(os.fsencode(src)):])
    try:
        assert compare_trees(a, b) == []
    finally:
        os.close(fd_a)
        os.close(fd_b)
