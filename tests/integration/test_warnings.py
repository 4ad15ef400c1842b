"""Unreadable, vanishing and changing files: warnings, exit code 3, a valid snapshot of the rest."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


from tuckbox.archiver import prefetch, reading
from tuckbox.archiver.report import Progress
from tuckbox.archiver.backup import BackupRequest, run_backup
from tuckbox.backends.local import LocalBackend
from tuckbox.repository.repo import Repository
from tuckbox.restorer.restorer import Restorer


DROP_READ_CAPS = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def test_unreadable_entries_give_exit_3_and_a_snapshot_of_the_rest(tb, tmp_path):
    src = tmp_path / "src"
    (src / "closed_dir").mkdir(parents=True)
    (src / "closed_dir" / "inside.txt").write_text("hidden")
    (src / "open.txt").write_text("readable")
    (src / "secret.txt").write_text("unreadable")
    (src / "secret.txt").chmod(0)
    (src / "closed_dir").chmod(0)
    lone = tmp_path / "lone-secret.txt"  # an unreadable file named on the command line
    lone.write_text("unreadable too")
    lone.chmod(0)
    tb("init")
    try:
        if os.geteuid() == 0:
            # root reads everything: run the backup without the capabilities that bypass permissions
            assert shutil.which("setpriv"), "setpriv (util-linux) is needed to test unreadable files as root"
            proc = subprocess.run(
                [*DROP_READ_CAPS, sys.executable, "-m", "tuckbox.cli.main", "backup", "--json", str(src), str(lone)],
                env=tb.env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300,
            )
            code, out, err = proc.returncode, proc.stdout, proc.stderr
        else:
            res = tb("backup", "--json", str(src), str(lone), expect=None)
            code, out, err = res.code, res.out, res.err
    finally:
        (src / "closed_dir").chmod(0o755)
    assert code == 3, err
    assert "Traceback" not in err
    assert "secret.txt" in out + err and "closed_dir" in out + err and "lone-secret.txt" in out + err
    summary = json.loads([ln for ln in out.splitlines() if '"summary"' in ln][-1])
    assert (summary["files_new"], summary["files_changed"]) == (1, 0), summary  # open.txt: what was stored
    tb("restore", "latest", "--target", str(tmp_path / "r"))
    out = Path(str(tmp_path / "r") + str(src))
    assert (out / "open.txt").read_text() == "readable"
    assert not (out / "secret.txt").exists()
    tb("check", "--read-data")


def test_backup_path_below_a_directory_that_cannot_be_searched(tb, tmp_path):
    """A path given to backup whose parent cannot be searched is reported as such (it used to be reported
    as not existing)."""
    src = tmp_path / "s"
    (src / "noread").mkdir(parents=True)
    (src / "noread" / "f").write_text("f")
    (src / "noread").chmod(0)
    tb("init")
    try:
        if os.geteuid() == 0:
            assert shutil.which("setpriv"), "setpriv (util-linux) is needed to test unreadable files as root"
            proc = subprocess.run(
                [*DROP_READ_CAPS, sys.executable, "-m", "tuckbox.cli.main", "backup", str(src / "noread" / "f")],
                env=tb.env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300,
            )
            code, err = proc.returncode, proc.stderr
        else:
            res = tb("backup", str(src / "noread" / "f"), expect=None)
            code, err = res.code, res.err
    finally:
        (src / "noread").chmod(0o755)
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1, err
    assert f"cannot back up {src / 'noread' / 'f'}: permission denied" in lines[0], lines[0]
    assert "does not exist" not in lines[0]


class _Saboteur(Progress):
    """Deletes one file when another starts, and appends to a file while it is being read."""

    def __init__(self, trigger: bytes, victim: Path, grower: Path) -> None:
        self.trigger, self.victim, self.grower = trigger, victim, grower
        self.current = b""
        self.warnings: list[str] = []

    def file_started(self, path: bytes, size: int) -> None:
        self.current = path
        if path == self.trigger and self.victim.exists():
            self.victim.unlink()

    def bytes_done(self, n: int) -> None:
        if self.current == os.fsencode(self.grower):
            with open(self.grower, "ab") as f:
                f.write(b"more data appended while reading\n")

    def warning(self, message: str) -> None:
        self.warnings.append(message)


def test_vanishing_and_changing_files(tmp_path, monkeypatch):
    monkeypatch.setenv("TUCKBOX_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "src"
    src.mkdir()
    # read ahead only one file, so the victim is listed but not yet opened when it is deleted
    monkeypatch.setattr(prefetch, "PREFETCH_FILES", 1)
    (src / "a_first.txt").write_text("first")
    # larger than a reader may run ahead of the walk (reading.STREAM_BYTES), so appends land while it is read
    monkeypatch.setattr(reading, "STREAM_BYTES", 2 << 20)
    (src / "b_grows.log").write_bytes(os.urandom(24 << 20))
    (src / "c_stable.txt").write_text("stable")
    (src / "z_vanishes.txt").write_bytes(os.urandom(5 << 20))
    repo = Repository.init(LocalBackend(str(tmp_path / "repo")), b"pw", created="t", host="h", user="u")
    saboteur = _Saboteur(os.fsencode(src / "a_first.txt"), src / "z_vanishes.txt", src / "b_grows.log")
    result = run_backup(repo, BackupRequest([str(src)]), saboteur)
    joined = "\n".join(result.warnings)
    assert "z_vanishes.txt" in joined and "vanished" in joined
    assert "b_grows.log" in joined and "changed while being read" in joined
    # the snapshot is valid and holds everything else exactly
    Restorer(repo).restore(result.snapshot, os.fsencode(tmp_path / "r"))
    out = Path(str(tmp_path / "r") + str(src))
    assert (out / "a_first.txt").read_text() == "first"
    assert (out / "c_stable.txt").read_text() == "stable"
    assert not (out / "z_vanishes.txt").exists()
    assert (out / "b_grows.log").exists()


def test_file_changed_once_is_reread_consistently(tmp_path, monkeypatch):
    monkeypatch.setenv("TUCKBOX_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "src"
    src.mkdir()
    target = src / "edited.txt"
    # larger than a reader may run ahead of the walk (reading.STREAM_BYTES), so the edit lands mid-read
    monkeypatch.setattr(reading, "STREAM_BYTES", 2 << 20)
    target.write_bytes(b"version one\n" * 2_000_000)

    class EditOnce(Progress):
        done = False

        def bytes_done(self, n: int) -> None:
            if not self.done:
                self.done = True
                target.write_bytes(b"version two\n" * 2_400_000)

    repo = Repository.init(LocalBackend(str(tmp_path / "repo")), b"pw", created="t", host="h", user="u")
    result = run_backup(repo, BackupRequest([str(src)]), EditOnce())
    assert result.warnings == []  # retried once and read a consistent copy
    Restorer(repo).restore(result.snapshot, os.fsencode(tmp_path / "r"))
    assert (Path(str(tmp_path / "r") + str(src)) / "edited.txt").read_bytes() == b"version two\n" * 2_400_000


class _Deleter(Progress):
    """Deletes every file named ``v*`` of a directory when its first file starts (rm -rf mid-walk)."""

    def __init__(self, trigger: bytes, directory: Path) -> None:
        self.trigger, self.directory = trigger, directory
        self.warnings: list[str] = []

    def file_started(self, path: bytes, size: int) -> None:
        if path == self.trigger:
            for victim in self.directory.glob("v*"):
                victim.unlink()

    def warning(self, message: str) -> None:
        self.warnings.append(message)


def test_a_directory_emptied_mid_walk_is_one_line_not_one_per_file(tmp_path, monkeypatch):
    """A build tree of thousands of files deleted while the backup walks it: the first few vanished files
    are named, the rest counted in one line for the directory (not thousands of lines), the exit is still
    "with warnings", and the rest of the snapshot is intact."""
    from tuckbox.archiver.archiver import VANISHED_SHOWN

    monkeypatch.setenv("TUCKBOX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(prefetch, "PREFETCH_FILES", 1)  # listed, not yet opened, when deleted
    src = tmp_path / "src"
    (src / "build").mkdir(parents=True)
    (src / "build" / "a_first.txt").write_text("first")
    victims = VANISHED_SHOWN + 25
    for i in range(victims):
        (src / "build" / f"v{i:03}").write_bytes(b"x" * 100)
    (src / "other.txt").write_text("other")
    repo = Repository.init(LocalBackend(str(tmp_path / "repo")), b"pw", created="t", host="h", user="u")
    deleter = _Deleter(os.fsencode(src / "build" / "a_first.txt"), src / "build")
    result = run_backup(repo, BackupRequest([str(src)]), deleter)
    named = [w for w in result.warnings if w.endswith(": vanished during backup")]
    assert len(named) == VANISHED_SHOWN, result.warnings
    assert all("/build/v" in w for w in named)
    rest = [w for w in result.warnings if "more of its entries vanished" in w]
    assert rest == [f"{src / 'build'}: 25 more of its entries vanished during backup (not listed one by one)"]
    assert len(result.warnings) == VANISHED_SHOWN + 1 and deleter.warnings == result.warnings
    Restorer(repo).restore(result.snapshot, os.fsencode(tmp_path / "r"))
    out = Path(str(tmp_path / "r") + str(src))
    assert (out / "build" / "a_first.txt").read_text() == "first"
    assert (out / "other.txt").read_text() == "other"
    assert sorted(p.name for p in (out / "build").iterdir()) == ["a_first.txt"]
