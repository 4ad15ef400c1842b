"""A reader of tuckbox's standard output that goes away while the command runs (``| head -1``, a log pipe
that died): a command whose output only reports on what it does finishes its work."""

from __future__ import annotations

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
