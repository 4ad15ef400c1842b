"""Directories and files replaced while the walk is in them: nothing from outside the tree gets in.

A user whose home is backed up by root can swap a directory for a symlink between the walk's listing of
its parent and its own turn (``mv dir dir.old; ln -s /root/.ssh dir``): what is stored under the name
must be what the tree held, or nothing with a warning - never the files the symlink leads to.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from tuckbox.archiver import prefetch
from tuckbox.archiver.backup import BackupRequest, run_backup
from tuckbox.archiver.report import Progress
from tuckbox.backends.local import LocalBackend
from tuckbox.repository.repo import Repository
from tuckbox.restorer.restorer import Restorer

SECRET = b"-----BEGIN OPENSSH PRIVATE KEY----- root's\n"


class _OnStart(Progress):
    """Runs ``action`` once, when the file ``trigger`` is started."""

    def __init__(self, trigger: Path, action: Callable[[], None]) -> None:
        self.trigger, self.action, self.done = os.fsencode(trigger), action, False
        self.warnings: list[str] = []

    def file_started(self, path: bytes, size: int) -> None:
        if path == self.trigger and not self.done:
            self.done = True
            self.action()

    def warning(self, message: str) -> None:
        self.warnings.append(message)


def _secret_dir(tmp_path: Path) -> Path:
    secret = tmp_path / "root-ssh"
    secret.mkdir()
    for name in ("id_rsa", "b.txt", "inner"):
        (secret / name).write_bytes(SECRET)
    return secret


def _backup_and_restore(tmp_path: Path, src: Path, progress: _OnStart) -> tuple[Path, list[str]]:
    repo = Repository.init(LocalBackend(str(tmp_path / "repo")), b"pw", created="t", host="h", user="u")
    result = run_backup(repo, BackupRequest([str(src)]), progress)
    assert progress.done
    Restorer(repo).restore(result.snapshot, os.fsencode(tmp_path / "r"))
    out = Path(str(tmp_path / "r") + str(src))
    for f in out.rglob("*"):
        assert not (f.is_file() and f.read_bytes() == SECRET), f"{f} holds what the symlink led to"
    return out, result.warnings


def test_a_directory_swapped_for_a_symlink_before_its_turn_is_not_followed(tmp_path, monkeypatch):
    monkeypatch.setenv("TUCKBOX_CACHE_DIR", str(tmp_path / "cache"))
    secret = _secret_dir(tmp_path)
    src = tmp_path / "home"
    (src / "dir").mkdir(parents=True)
    (src / "a_first.txt").write_text("first")
    (src / "dir" / "id_rsa").write_text("the user's own key\n")

    def swap() -> None:  # the home is listed; dir is not yet
        (src / "dir").rename(src / "dir.old")
        (src / "dir").symlink_to(secret)

    out, warnings = _backup_and_restore(tmp_path, src, _OnStart(src / "a_first.txt", swap))
    assert (out / "a_first.txt").read_text() == "first"
    assert not (out / "dir").exists()
    assert len(warnings) == 1 and "/home/dir: replaced" in warnings[0], warnings


def test_files_of_a_directory_swapped_for_a_symlink_are_read_from_the_directory_listed(tmp_path, monkeypatch):
    monkeypatch.setenv("TUCKBOX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(prefetch, "PREFETCH_FILES", 1)  # the files after the next one are opened after the swap
    secret = _secret_dir(tmp_path)
    src = tmp_path / "home"
    listed = src / "dir"
    (listed / "inner").mkdir(parents=True)
    (listed / "a_first.txt").write_text("first")
    (listed / "b.txt").write_text("the user's b\n")
    (listed / "id_rsa").write_text("the user's own key\n")
    (listed / "inner" / "x").write_text("inside")

    def swap() -> None:  # dir is listed and being walked: its files are then opened at their paths
        listed.rename(src / "moved")
        listed.symlink_to(secret)

    out, warnings = _backup_and_restore(tmp_path, src, _OnStart(listed / "a_first.txt", swap))
    assert warnings == []  # every file was read where it was listed, through the directory held open
    assert (out / "dir" / "id_rsa").read_text() == "the user's own key\n"
    assert (out / "dir" / "b.txt").read_text() == "the user's b\n"
    assert (out / "dir" / "inner" / "x").read_text() == "inside"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the files different owners")
def test_a_file_replaced_by_rename_is_stored_with_the_owner_of_what_was_read(tmp_path, monkeypatch):
    monkeypatch.setenv("TUCKBOX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(prefetch, "PREFETCH_FILES", 1)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a_first.txt").write_text("first")
    (src / "b.txt").write_text("b")
    target = src / "c.conf"
    target.write_text("written by the user\n")
    os.chown(target, 65534, 65534)

    def save() -> None:  # an editor's (or a package manager's) atomic save, by another owner
        new = src / ".c.conf.tmp"
        new.write_text("written by root, mode 0600\n")
        new.chmod(0o600)
        os.setxattr(new, b"user.origin", b"root")
        new.rename(target)

    out, warnings = _backup_and_restore(tmp_path, src, _OnStart(src / "a_first.txt", save))
    assert warnings == []
    restored = out / "c.conf"
    assert restored.read_text() == "written by root, mode 0600\n"
    st = restored.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o600)
    assert os.getxattr(restored, b"user.origin") == b"root"


def test_a_tree_deeper_than_the_usual_descriptor_limit_is_backed_up_whole(tb, tmp_path):
    """The walk holds every directory it is in open: 1,500 levels need more than a soft limit of 1024."""
    top = os.fsencode(tmp_path / "deep")
    os.mkdir(top)
    fd = os.open(top, os.O_PATH)
    for _ in range(1500):  # (3,000 bytes of path: short enough for one call, deep enough for the limit)
        os.mkdir(b"a", dir_fd=fd)
        below = os.open(b"a", os.O_PATH, dir_fd=fd)
        os.close(fd)
        fd = below
    leaf = b"/proc/self/fd/%d/leaf.txt" % fd
    with open(leaf, "wb") as f:
        f.write(b"at the bottom\n")
    deepest = os.path.join(top, *[b"a"] * 1500, b"leaf.txt")
    os.close(fd)
    tb("init")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip("the hard limit on open files is too low to raise the soft one past the tree's depth")
    run = (
        "import resource, runpy, sys; "
        "resource.setrlimit(resource.RLIMIT_NOFILE, (1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1])); "
        "sys.argv[0] = 'tuckbox'; runpy.run_module('tuckbox.cli.main', run_name='__main__')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", run, "backup", str(tmp_path / "deep")],
        env=tb.env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert tb("dump", "latest", os.fsdecode(deepest)).raw == b"at the bottom\n"


def test_a_file_system_mounted_on_a_directory_before_its_turn_is_backed_up(tmp_path, monkeypatch):
    """What an automount (/boot/efi, /home on autofs) does when the walk opens the directory: the directory
    is then another one, on another device, and is walked as before - only a swap on the same device (what a
    rename can do) is refused."""
    monkeypatch.setenv("TUCKBOX_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "src"
    (src / "mnt").mkdir(parents=True)
    (src / "a_first.txt").write_text("first")
    mounted: list[bool] = []

    def mount() -> None:
        try:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(src / "mnt")], check=True,
                           capture_output=True)
        except (subprocess.CalledProcessError, FileNotFoundError):
            return
        mounted.append(True)
        (src / "mnt" / "on-the-mount.txt").write_text("mounted\n")

    try:
        progress = _OnStart(src / "a_first.txt", mount)
        repo = Repository.init(LocalBackend(str(tmp_path / "repo")), b"pw", created="t", host="h", user="u")
        result = run_backup(repo, BackupRequest([str(src)]), progress)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(src / "mnt")], capture_output=True)
    if not mounted:
        pytest.skip("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)")
    assert result.warnings == []
    Restorer(repo).restore(result.snapshot, os.fsencode(tmp_path / "r"))
    assert (Path(str(tmp_path / "r") + str(src)) / "mnt" / "on-the-mount.txt").read_text() == "mounted\n"
