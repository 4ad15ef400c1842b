"""longpath: opening and linking places whose paths are longer than one system call takes."""

from __future__ import annotations

import errno
import os

import pytest

from tuckbox.longpath import DIR_PATH, PATH_MAX, fits, held, link_deep, open_deep, room_for_children, through


def _deep_dir(base: bytes, levels: int = 22) -> bytes:
    path = base
    for _ in range(levels):
        fd = open_deep(path, DIR_PATH)
        try:
            os.mkdir(b"n" * 250, dir_fd=fd)
        finally:
            os.close(fd)
        path += b"/" + b"n" * 250
    return path


def test_open_and_link_deep(tmp_path):
    deep = _deep_dir(os.fsencode(tmp_path))
    assert not fits(deep) and len(deep) > PATH_MAX
    with pytest.raises(OSError) as e:
        os.open(deep + b"/f", os.O_WRONLY | os.O_CREAT, 0o600)
    assert e.value.errno == errno.ENAMETOOLONG  # what the kernel says without longpath
    fd = open_deep(deep + b"/f", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b"deep content")
    os.close(fd)
    top = os.open(tmp_path, DIR_PATH)
    try:
        link_deep(deep + b"/f", b"linked", top)  # a hard link of the deep file, next to the top
    finally:
        os.close(top)
    assert (tmp_path / "linked").read_bytes() == b"deep content"
    assert os.stat(tmp_path / "linked").st_nlink == 2
    # a short path through a held descriptor reaches the same entries
    fd = open_deep(deep, DIR_PATH)
    try:
        assert room_for_children(held(fd)) and os.listdir(held(fd)) == [b"f"]
        assert os.lstat(through(fd, b"f")).st_ino == os.stat(tmp_path / "linked").st_ino
    finally:
        os.close(fd)


def test_a_double_slash_at_the_cut_stays_relative(tmp_path):
    deep = _deep_dir(os.fsencode(tmp_path), 17)
    # a "//" whose first slash is the last one the first piece may end at (PATH_MAX - 2): what follows
    # the cut must not become an absolute path
    i = deep.rfind(b"/", 0, PATH_MAX - 2)
    path = b"/" * (PATH_MAX - 2 - i) + deep  # (leading slashes name the same place)
    assert path[PATH_MAX - 2 : PATH_MAX - 1] == b"/"
    path = path[: PATH_MAX - 1] + b"/" + path[PATH_MAX - 1 :]
    fd = open_deep(path + b"/" + b"m" * 200, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    fd = open_deep(deep, DIR_PATH)
    try:
        assert os.listdir(held(fd)) == [b"m" * 200]
    finally:
        os.close(fd)
