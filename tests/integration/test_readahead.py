"""Small files opened ahead of the walk (prefetch.py): what happens to them before their turn."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tuckbox.archiver import prefetch
from tuckbox.archiver.report import Progress
from tuckbox.archiver.backup import BackupRequest, run_backup
from tuckbox.backends.local import LocalBackend
from tuckbox.repository.repo import Repository
from tuckbox.restorer.restorer import Restorer


class _OnStart(Progress):
    """Runs ``action`` once, when the file ``trigger`` is started."""

    def __init__(self, trigger: Path, action) -> None:
        self.trigger, self.action, self.done = os.fsencode(trigger), action, False
        self.warnings: list[str] = []

    def file_started(self, path: bytes, size: int) -> None:
        if path == self.trigger and not self.done:
            self.done = True
            self.action()

    def warning(self, message: str) -> None:
        self.warnings.append(message)


def _repo(tmp_path: Path) -> Repository:
    return Repository.init(LocalBackend(str(tmp_path / "repo")), b"pw", created="t", host="h", user="u")


def _restored(tmp_path: Path, repo: Repository, snapshot, src: Path) -> Path:
    Restorer(repo).restore(snapshot, os.fsencode(tmp_path / "r"))
    return Path(str(tmp_path / "r") + str(src))


def test_small_file_opened_ahead_then_rewritten_is_stored_as_rewritten(tmp_path, monkeypatch):
    monkeypatch.setenv("TUCKBOX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(prefetch, "PREFETCH_FILES", 4)  # b is opened (ahead) before a's turn ends
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("first")
    victim = src / "b.txt"
    victim.write_bytes(b"old contents " * 100)
    (src / "c.txt").write_text("last")

    def rewrite() -> None:  # in place: the descriptor opened ahead sees the new bytes, and a new size
        with open(victim, "r+b") as f:
            f.truncate(0)
            f.write(b"the new contents, longer than before " * 100)

    progress = _OnStart(src / "a.txt", rewrite)
    result = run_backup(_repo(tmp_path), BackupRequest([str(src)]), progress)
    assert progress.done
    assert result.warnings == [] and not result.snapshot.partial
    out = _restored(tmp_path, _repo_at(tmp_path), result.snapshot, src)
    assert (out / "b.txt").read_bytes() == b"the new contents, longer than before " * 100
    assert (out / "a.txt").read_text() == "first" and (out / "c.txt").read_text() == "last"


def _repo_at(tmp_path: Path) -> Repository:
    return Repository.open(LocalBackend(str(tmp_path / "repo")), lambda: b"pw")


def test_small_file_deleted_before_it_is_opened_is_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("TUCKBOX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(prefetch, "PREFETCH_FILES", 1)  # only the next file is opened ahead
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.txt", "b.txt", "c_victim.txt", "d.txt"):
        (src / name).write_text(f"contents of {name}")
    progress = _OnStart(src / "a.txt", lambda: (src / "c_victim.txt").unlink())
    result = run_backup(_repo(tmp_path), BackupRequest([str(src)]), progress)
    assert len(result.warnings) == 1
    assert "c_victim.txt" in result.warnings[0] and "vanished" in result.warnings[0]
    out = _restored(tmp_path, _repo_at(tmp_path), result.snapshot, src)
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "b.txt", "d.txt"]
    assert (out / "d.txt").read_text() == "contents of d.txt"


def test_running_out_of_descriptors_while_reading_ahead_loses_nothing(tmp_path):
    """A low descriptor limit, and a readahead window told to ignore it: it stops opening ahead
    at EMFILE and reads every file when its turn comes, without a warning."""
    src = tmp_path / "src"
    (src / "many").mkdir(parents=True)
    expected = {}
    for i in range(300):
        data = f"small file {i}\n".encode() * (i % 7 + 1)
        (src / "many" / f"f{i:03}").write_bytes(data)
        expected[f"f{i:03}"] = data
    script = textwrap.dedent(
        """
        import os, resource, sys
        from tuckbox.archiver import prefetch
        from tuckbox.archiver.backup import BackupRequest, run_backup
        from tuckbox.backends.local import LocalBackend
        from tuckbox.repository.repo import Repository
        repo = Repository.init(LocalBackend(sys.argv[2]), b"pw", created="t", host="h", user="u")
        prefetch.OPEN_AHEAD = 10**6
        prefetch.PREFETCH_FILES = 10**6
        opened = len(os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (opened + 60, opened + 60))  # (the walk raises a soft limit)
        ran_out = []
        real = prefetch.open_for_backup
        def spy(path):
            try:
                return real(path)
            except OSError as e:
                ran_out.append(e.errno)
                raise
        prefetch.open_for_backup = spy
        result = run_backup(repo, BackupRequest([sys.argv[1]]))
        import errno
        print(len(result.warnings), errno.EMFILE in ran_out, result.snapshot.id)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(src), str(tmp_path / "repo")],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TUCKBOX_CACHE_DIR": str(tmp_path / "cache"), "TUCKBOX_TEST_CHEAP_KDF": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    warnings, ran_out, snap_id = proc.stdout.split()
    assert warnings == "0"
    assert ran_out == "True"  # the limit was really met
    repo = _repo_at(tmp_path)
    out = _restored(tmp_path, repo, repo.find_snapshot(snap_id), src)
    got = {p.name: p.read_bytes() for p in (out / "many").iterdir()}
    assert got == expected
