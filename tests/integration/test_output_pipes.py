"""A reader of tuckbox's standard output that goes away while the command runs (``| head -1``, a log pipe
that died): a command whose output only reports on what it does finishes its work."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tuckbox.testing.trees import compare_trees

from .conftest import Tuckbox


def _first_line_then_close(tb: Tuckbox, *args: str) -> tuple[int, bytes, bytes]:
    p = subprocess.Popen([sys.executable, "-m", "tuckbox.cli.main", *args], env=tb.env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    first = p.stdout.readline()
    p.stdout.close()
    err = p.stderr.read()
    return p.wait(timeout=600), first, err


def test_backup_and_restore_finish_when_their_reader_goes_away(tb: Tuckbox, tmp_path) -> None:
    """backup --json | head -1 saved its snapshot and exited 1, saying nothing; restore --json | head -1 stopped
    after a few files (exit 1, nothing said). Both slowed down so that they still print after the reader left."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}").write_bytes(os.urandom(1 << 20))
    tb("init")
    code, first, err = _first_line_then_close(tb, "backup", str(src), "--json", "--limit-upload", "1MiB")
    assert (code, err) == (0, b""), err
    assert first.startswith(b'{"')
    (snap,) = tb("snapshots", "--json").json()
    assert snap["partial"] is False and snap["summary"]["files_new"] == 4
    target = tmp_path / "t"
    code, first, err = _first_line_then_close(tb, "restore", "latest", "--target", str(target), "--json",
                                              "--limit-download", "1MiB")
    assert (code, err) == (0, b""), err
    assert compare_trees(src, target / src.relative_to("/"), check_atime=False) == []


def test_a_warning_to_a_standard_error_whose_reader_is_gone_does_not_stop_a_backup(tb: Tuckbox, tmp_path) -> None:
    """backup ... 2>&1 | a-reader-that-died: the warning it printed first (here: the path given is a symlink)
    raised BrokenPipeError into the backup, which stopped before its snapshot, exit 1, nothing said."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("data\n")
    (tmp_path / "link").symlink_to(src)
    tb("init")
    p = subprocess.Popen([sys.executable, "-m", "tuckbox.cli.main", "backup", str(tmp_path / "link")], env=tb.env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert p.stdout is not None
    p.stdout.close()
    assert p.wait(timeout=600) == 0
    (snap,) = tb("snapshots", "--json").json()
    assert snap["paths"] == [str(tmp_path / "link")] and snap["partial"] is False


def test_a_report_to_a_full_disk_does_not_stop_a_backup(tb: Tuckbox, tmp_path) -> None:
    """cron's 'tuckbox backup ... >> /var/log/tuckbox.log 2>&1' with /var full: the first line of a --json report
    (or the first warning on standard error) failed, and the backup stopped before its snapshot, exit 1 - every
    scheduled run, until someone noticed the log disk. The backup now finishes and saves its snapshot, then
    exits 1 with one line saying its report is incomplete (and why)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(100_000))
    (tmp_path / "link").symlink_to(src)  # (a path given that is a symlink: one warning on standard error)
    tb("init")
    with open("/dev/full", "wb") as full:
        p = subprocess.run([sys.executable, "-m", "tuckbox.cli.main", "backup", "--json", str(src)], env=tb.env,
                           stdin=subprocess.DEVNULL, stdout=full, stderr=subprocess.PIPE, timeout=600)
        lines = p.stderr.decode().splitlines()
        assert p.returncode == 1 and len(lines) == 1, p.stderr
        assert "backup finished" in lines[0] and "standard output: No space left on device" in lines[0]
        assert [s["paths"] for s in tb("snapshots", "--json").json()] == [[str(src)]]
        p = subprocess.run([sys.executable, "-m", "tuckbox.cli.main", "backup", "--json", str(tmp_path / "link")],
                           env=tb.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=full, timeout=600)
    assert p.returncode == 1
    *_, summary, error = [json.loads(line) for line in p.stdout.splitlines()]
    assert summary["type"] == "summary" and error["type"] == "error" and error["exit_code"] == 1
    assert "standard error: No space left on device" in error["message"]
    assert [s["paths"] for s in tb("snapshots", "--json").json()] == [[str(src)], [str(tmp_path / "link")]]
    tb("check")
