"""Hardlink groups whose members the backup read with different contents: a file with two names, written to
after the walk read it under its first name and before it listed the directory of its second. Restore linked
the second name to the first, so it got the first name's (older) bytes, not the bytes its own entry holds,
with exit 0 and no word. Each name now gets the bytes its entry holds; a group read alike stays linked."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tuckbox.archiver.backup import BackupRequest, run_backup
from tuckbox.archiver.report import Progress
from tuckbox.backends.local import LocalBackend
from tuckbox.repository.config import Config
from tuckbox.repository.repo import Repository
from tuckbox.restorer.restorer import Restorer


class _WriteDuringWalk(Progress):
    """Writes to ``victim`` when the walk starts on ``when`` (after the first name was read, before the
    directory of the second is listed)."""

    def __init__(self, when: Path, victim: Path, data: bytes) -> None:
        self.when, self.victim, self.data = os.fsencode(when), victim, data

    def file_started(self, path: bytes, size: int) -> None:
        if path == self.when:
            with open(self.victim, "r+b") as f:
                f.write(self.data)


def test_names_of_one_file_read_with_different_contents_each_restore_their_own(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TUCKBOX_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "src"
    for d in ("a", "b", "c"):
        (src / d).mkdir(parents=True)
    (src / "a" / "first").write_bytes(b"old " * 2000)
    os.link(src / "a" / "first", src / "b" / "second")
    (src / "a" / "z").write_bytes(os.urandom(3000))  # a linked pair read alike: stays linked
    os.link(src / "a" / "z", src / "c" / "z-link")
    time.sleep(1.1)
    new = b"NEW! " * 3000
    repo = Repository.init(LocalBackend(str(tmp_path / "repo")), b"pw", created="t", host="h", user="u",
                           config=Config.new("t"))
    try:
        progress = _WriteDuringWalk(src / "a" / "z", src / "b" / "second", new)
        snap = run_backup(repo, BackupRequest([str(src)]), progress=progress).snapshot
        assert snap is not None
        target = tmp_path / "r"
        result = Restorer(repo, connections=2).restore(snap, os.fsencode(target))
    finally:
        repo.close()
    out = target / str(src).lstrip("/")
    assert (out / "b" / "second").read_bytes() == new  # what its entry holds (it was linked to the old bytes)
    assert (out / "a" / "first").read_bytes() == b"old " * 2000
    assert os.stat(out / "a" / "first").st_ino != os.stat(out / "b" / "second").st_ino
    assert os.stat(out / "a" / "z").st_ino == os.stat(out / "c" / "z-link").st_ino
    assert (out / "c" / "z-link").read_bytes() == (src / "a" / "z").read_bytes()
    assert result.errors == []
    assert [w for w in result.warnings if "second" in w] == [
        f"{src}/b/second: restored as a file of its own, not as a hardlink to {src}/a/first: the backup read them "
        "with different contents (written to meanwhile)"
    ], result.warnings
