"""Restore onto a file system that lacks what the snapshot holds (ramfs: no xattrs, no ACLs)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest

from tuckbox.archiver.backup import BackupRequest, run_backup
from tuckbox.archiver.report import Progress
from tuckbox.backends.local import LocalBackend
from tuckbox.repository.repo import Repository
from tuckbox.restorer.restorer import RestoreProgress, Restorer
from tuckbox.restorer.writer import Report, warning_kind


@pytest.fixture
def ramfs(tmp_path):
    """A ramfs mount (a file system with no extended attributes at all); needs the right to mount."""
    mnt = tmp_path / "ramfs"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "ramfs", "ramfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a ramfs here (needs root and CAP_SYS_ADMIN)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_xattrs_the_target_cannot_hold_are_one_warning_per_kind_not_one_per_file(tb, tmp_path, ramfs):
    """Restoring 40 files with xattrs onto a file system without them printed 40 warnings (a real home
    directory: tens of thousands, burying anything else said). Now: the first of each kind with its path, then
    one line with how many more; the bytes are restored and the exit code is 0 (metadata problems are warnings)."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for i in range(40):
        f = src / ("sub" if i % 2 else ".") / f"f{i}"
        f.write_bytes(b"data %d\n" % i * (i + 1))
        os.setxattr(f, "user.tag", b"v%d" % i)
        if i < 3:
            os.setxattr(f, "user.other", b"x")
    tb("init")
    tb("backup", str(src))
    target = ramfs / "r"
    res = tb("--json", "restore", "latest", "--target", str(target))
    restored = Path(str(target) + str(src))
    for i in range(40):
        f = restored / ("sub" if i % 2 else ".") / f"f{i}"
        assert f.read_bytes() == b"data %d\n" % i * (i + 1)
    docs = [json.loads(ln) for ln in res.out.splitlines()]
    lines = [d["message"] for d in docs if d["type"] == "warning"]
    assert len(lines) == 2, lines  # the first, with its path; then the count of the rest
    assert "cannot restore extended attribute user." in lines[0] and str(restored) in lines[0]
    assert lines[1] == ("cannot restore extended attribute: Operation not supported, 42 more times "
                        "(not listed one by one) (the target's file system does not support them)"), lines
    assert docs[-1]["type"] == "summary" and docs[-1]["warnings"] == lines and docs[-1]["errors"] == []
    res = tb("restore", "latest", "--target", str(ramfs / "r2"))  # the same on standard error
    assert [ln for ln in res.err.splitlines() if ln.startswith("warning: ")] == [
        f"warning: {w}".replace(f"{ramfs}/r/", f"{ramfs}/r2/") for w in lines]


class _Progress(RestoreProgress):
    def __init__(self) -> None:
        self.said: list[str] = []

    def warning(self, message: str) -> None:
        self.said.append(message)


def test_report_groups_only_repeated_metadata_warnings():
    class Result:
        warnings: list[str] = []

    progress = _Progress()
    report = Report(Result(), progress)
    for i in range(3):
        report.warn(f"/r/a: b/f{i}: cannot set owner 1000:{i}: Operation not permitted")
        report.warn(f"/r/f{i}: cannot set setuid bit: owner differs")  # (not of a repeated kind: each is said)
    report.warn("/r/x: cannot set times: Invalid argument")
    report.finish()
    assert progress.said == [
        "/r/a: b/f0: cannot set owner 1000:0: Operation not permitted",
        "/r/f0: cannot set setuid bit: owner differs",
        "/r/f1: cannot set setuid bit: owner differs",
        "/r/f2: cannot set setuid bit: owner differs",
        "/r/x: cannot set times: Invalid argument",
        "cannot set owner: Operation not permitted, 2 more times (not listed one by one)",
    ]
    assert warning_kind("/r/f: cannot restore ACL system.posix_acl_access: Operation not supported") == (
        "cannot restore ACL", "Operation not supported")


@pytest.mark.parametrize("err", [errno.EPERM, errno.EMLINK])
def test_hardlinks_the_target_refuses_are_restored_as_copies(tmp_path, monkeypatch, err):
    """vfat and exFAT (a USB stick: the usual place to restore onto) refuse link() with EPERM, and a file at
    ext4's 65,000 links gets EMLINK. Every name but the first of each hardlinked file was 'not restored'
    (exit 1): the files were on the stick under one name only. Now each further name is a copy (bytes, mode,
    times), with one warning for the kind."""
    monkeypatch.setenv("TUCKBOX_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "big").write_bytes(os.urandom(3 << 20))
    (src / "small").write_bytes(b"small\n")
    (src / "empty").write_bytes(b"")
    for name in ("big", "small", "empty"):
        os.link(src / name, src / "d" / (name + "-1"))
        os.link(src / name, src / (name + "-2"))
        os.chmod(src / name, 0o640)
        os.utime(src / name, ns=(1_500_000_000_123_456_789, 1_600_000_000_987_654_321))
    repo = Repository.init(LocalBackend(str(tmp_path / "repo")), b"pw", created="t", host="h", user="u")
    snap = run_backup(repo, BackupRequest([str(src)]), Progress()).snapshot

    def refuse(*args, **kwargs):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, "link", refuse)
    said = _Progress()
    result = Restorer(repo, said).restore(snap, os.fsencode(tmp_path / "r"))
    assert result.errors == []
    out = Path(str(tmp_path / "r") + str(src))
    for name in ("big", "small", "empty"):
        want = (src / name).stat()
        for copy in (out / name, out / "d" / (name + "-1"), out / (name + "-2")):
            got = copy.stat()
            assert copy.read_bytes() == (src / name).read_bytes()
            assert (got.st_mode, got.st_mtime_ns, got.st_uid) == (want.st_mode, want.st_mtime_ns, want.st_uid)
    assert result.files == 9
    copies = [w for w in said.said if "made a copy" in w]
    assert len(copies) == 2 and copies[0].endswith(os.strerror(err)), said.said
    assert copies[1] == f"cannot hard-link, made a copy: {os.strerror(err)}, 5 more times (not listed one by one)"
