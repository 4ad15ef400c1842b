"""Resumable restores, stale locks, and restore targets that cannot take the data.

* A restore SIGKILLed part-way (twice in a row) and run again into the same target completes, skips
  the files already restored (``files_skipped`` > 0, fewer bytes written) and equals the source.
* A lock left by a killed process is shown and removed by ``tuckbox unlock``, never blocks a backup
  (locks are shared), and ``unlock`` keeps the lock of a process that is still running.
* A read-only restore target and a full one (real tmpfs mounts) stop with one line and exit 1; after
  space is made, the same restore resumes and completes exactly.
"""

from __future__ import annotations

import os
import random
import stat
import subprocess
from pathlib import Path

import pytest

from tuckbox.repository.locks import read_locks
from tuckbox.testing.crash import (
    KiB,
    MiB,
    Cli,
    local_storage,
    make_tree,
    open_repo,
    restored,
    wait_for,
)
from tuckbox.testing.trees import compare_trees

INIT = ("init", "--pack-size", "1MiB", "--chunk-min", "16KiB", "--chunk-avg", "32KiB", "--chunk-max", "256KiB")
SEED = int(os.environ.get("TUCKBOX_RESTORE_SEED", "515"))


def one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert lines[0].startswith("tuckbox: error: "), lines[0]
    return lines[0]


def count_files(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


@pytest.fixture
def backed_up(tmp_path):
    src = tmp_path / "src"
    total = make_tree(src, SEED, big=4, big_size=(3 * MiB, 5 * MiB), dirs=10, files_per_dir=40, small_size=(1, 48 * KiB))
    cli = Cli(tmp_path, local_storage(tmp_path / "repo"))
    cli(*INIT)
    cli("backup", str(src))
    return cli, src, total


def test_killed_restore_resumes_and_skips_what_is_done(backed_up, tmp_path):
    cli, src, total = backed_up
    rng = random.Random(SEED)
    target = tmp_path / "target"
    nfiles = count_files(src)
    args = ("--json", "--limit-download", "6MiB", "restore", "latest", "--target", str(target))
    for attempt in range(2):
        running = cli.start(*args)
        # kill once a seeded share of the files exists (no wall-clock guess about how fast it goes)
        share = rng.uniform(0.15, 0.6)
        before = count_files(target) if target.exists() else 0
        wait_for(lambda: running.proc.poll() is not None
                 or (target.exists() and count_files(target) - before >= share * (nfiles - before)),
                 timeout=120, what="the restore to make progress")
        running.kill()
        res = running.wait()
        assert res.code == -9, f"attempt {attempt}: the restore finished before it could be killed:\n{res.err}"
        assert (target / ".tuckbox-restore").exists()
    final = cli(*args[:1], *args[3:]).summary()  # without the download limit
    assert final["errors"] == []
    assert final["files_skipped"] > 0
    assert final["bytes_written"] < total
    assert not (target / ".tuckbox-restore").exists()
    assert compare_trees(src, restored(target, src)) == []


def test_restore_into_a_non_empty_target_is_refused(backed_up, tmp_path):
    cli, src, _ = backed_up
    target = tmp_path / "occupied"
    target.mkdir()
    (target / "precious.txt").write_text("do not touch")
    res = cli("restore", "latest", "--target", str(target), expect=2)
    assert "not empty" in res.err and len(res.err.strip().splitlines()) == 1
    assert (target / "precious.txt").read_text() == "do not touch"


def test_a_fresh_file_systems_lost_and_found_does_not_make_a_target_full(backed_up, tmp_path):
    """A new ext4 file system holds an empty lost+found: restoring onto one (say a new disk for a lost one)
    works, the snapshot's own /lost+found goes into it; anything else, or something in lost+found, is refused.
    A symlink as the target is refused naming what it is."""
    cli, src, _ = backed_up
    target = tmp_path / "new-disk"
    (target / "lost+found").mkdir(parents=True, mode=0o700)
    paths = [str(src)] + (["/lost+found"] if os.geteuid() == 0 and os.path.isdir("/lost+found") else [])
    if len(paths) > 1:
        cli("backup", *paths)
    summary = cli("--json", "restore", "latest", "--target", str(target)).summary()
    assert summary["errors"] == []
    assert compare_trees(src, restored(target, src)) == []
    assert not (target / ".tuckbox-restore").exists()
    if len(paths) > 1:
        assert stat.S_IMODE(os.stat(target / "lost+found").st_mode) == stat.S_IMODE(os.stat("/lost+found").st_mode)

    for name in ("lost+found/not-empty", "other"):
        occupied = tmp_path / name.replace("/", "-")
        (occupied / "lost+found").mkdir(parents=True)
        (occupied / name).write_text("do not touch")
        res = cli("restore", "latest", "--target", str(occupied), expect=2)
        assert "not empty" in res.err and len(res.err.strip().splitlines()) == 1
        assert (occupied / name).read_text() == "do not touch"
    link = tmp_path / "link"
    link.symlink_to(target)
    res = cli("restore", "latest", "--target", str(link), expect=2)
    assert f"{link} is a symbolic link" in res.err and str(target) in res.err


def test_stale_lock_is_shown_removed_and_never_blocks(tmp_path):
    src = tmp_path / "src"
    make_tree(src, SEED + 1, big=2, big_size=(2 * MiB, 2 * MiB), dirs=2, files_per_dir=10)
    cli = Cli(tmp_path, local_storage(tmp_path / "repo"))
    cli(*INIT)
    cli("backup", str(src))  # (data for the live check below to read)
    other = tmp_path / "other"
    make_tree(other, SEED + 2, big=2, big_size=(2 * MiB, 2 * MiB), dirs=1, files_per_dir=5)
    dead = cli.start("backup", str(other), env={"TUCKBOX_TEST_FAULTS": "crash_after=3"})  # dies after its lock + 2 packs
    assert dead.wait().code == -9
    pid = dead.proc.pid
    repo = open_repo(cli.storage, cli.passphrase, tmp_path / "inspect-cache")
    try:
        locks = read_locks(repo.backend, repo.keys.index_key)
        assert [lk.pid for lk in locks] == [pid] and all(lk.is_stale() for lk in locks)
        # a stale (shared) lock does not block anybody (a backup of this host and user would take it over:
        # test_crash.test_prune_keeps_the_packs_a_killed_backup_resumes_from)
        cli("check")
        cli("prune", "--dry-run")
        assert [lk.pid for lk in read_locks(repo.backend, repo.keys.index_key)] == [pid]
        # a live lock is kept by unlock; the dead one is shown and removed
        live = cli.start("--limit-download", "512KiB", "check", "--read-data")  # 4 MiB and more: 8 s
        wait_for(lambda: len(read_locks(repo.backend, repo.keys.index_key)) == 2, 60, "the live check's lock")
        res = cli("unlock")
        assert "removing" in res.out and f"pid {pid}" in res.out and "shared lock" in res.out
        assert "keeping active" in res.out
        remaining = read_locks(repo.backend, repo.keys.index_key)
        assert [lk.pid for lk in remaining] == [live.proc.pid]
        assert live.wait().code == 0
        assert read_locks(repo.backend, repo.keys.index_key) == []
        cli("backup", str(src))
        cli("restore", "latest", "--target", str(tmp_path / "r"))
    finally:
        repo.close()
    assert compare_trees(src, restored(tmp_path / "r", src)) == []


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@pytest.fixture
def mounts(tmp_path):
    made: list[Path] = []

    def mount_tmpfs(path: Path, options: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        try:
            _mount("-t", "tmpfs", "-o", options, "tmpfs", str(path))
        except (subprocess.CalledProcessError, FileNotFoundError) as e:
            pytest.skip(f"cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN): {e}")
        made.append(path)
        return path

    yield mount_tmpfs
    for path in reversed(made):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_read_only_restore_target(backed_up, tmp_path, mounts):
    cli, src, _ = backed_up
    target = mounts(tmp_path / "ro", "size=1m,ro")
    res = cli("restore", "latest", "--target", str(target), expect=1)
    line = one_line_error(res.err)
    assert "read-only" in line.lower() and str(target) in line
    res = cli("restore", "latest", "--target", str(target / "sub"), expect=1)
    assert "read-only" in one_line_error(res.err).lower()


def test_full_restore_target_stops_then_resumes(backed_up, tmp_path, mounts):
    cli, src, total = backed_up
    assert total > 20 * MiB
    disk = mounts(tmp_path / "small", "size=8m")
    target = disk / "restore"
    res = cli("--json", "restore", "latest", "--target", str(target), expect=1)
    line = one_line_error(res.err)
    assert "no space left" in line.lower() and "again" in line, line
    assert (target / ".tuckbox-restore").exists()  # unfinished: the marker says so
    _mount("-o", "remount,size=96m", str(disk))  # space was made
    final = cli("--json", "restore", "latest", "--target", str(target)).summary()
    assert final["errors"] == [] and final["files_skipped"] > 0
    assert compare_trees(src, restored(target, src)) == []


def test_a_storage_that_goes_down_mid_restore_stops_it_then_a_rerun_resumes(backed_up, tmp_path):
    """The server gone mid-restore (from the 4th pack read on, every call is refused): the restore went on,
    failing every file left with one error line each (and again in its summary); now it stops with one line
    that says to run it again, and the rerun restores everything."""
    cli, src, total = backed_up
    target = tmp_path / "r"
    env = {"TUCKBOX_TEST_FAULTS": "down_data=4,retry_delay=0.001"}
    res = cli("restore", "latest", "--target", str(target), env=env, expect=1)
    fatal = [ln for ln in res.err.splitlines() if ln.startswith("tuckbox: error: ")]
    assert len(fatal) == 1 and "the storage stopped answering" in fatal[0] and "again" in fatal[0], res.err
    per_file = [ln for ln in res.err.splitlines() if "not restored" in ln]
    assert len(per_file) < count_files(src) // 4, res.err  # not one per file left
    final = cli("--json", "restore", "latest", "--target", str(target)).summary()
    assert final["errors"] == []
    assert compare_trees(src, restored(target, src)) == []
