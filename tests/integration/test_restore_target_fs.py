"""Restore onto a file system that lacks what the snapshot holds (ramfs: no xattrs, no ACLs)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

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


class _Progress:
    def __init__(self) -> None:
        self.said: list[str] = []

    def warning(self, msg: str) -> None:
        self.said.append(msg)


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
