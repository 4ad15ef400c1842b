"""Storage faults: flaky storage is survived, a permanent fault stops cleanly and the next run resumes.

The flaky runs inject, through the test-only ``TUCKBOX_TEST_FAULTS`` hook, a FaultyBackend directly
around the real backend (local disk, the real SFTP server, the real S3 server) and under the normal
retry wrapper: 5 % of all calls fail with a dropped connection, 5 % of saves store the object and then
report a dropped connection anyway, 5 % of loads return silently truncated bytes, and every call is
delayed a little. backup, restore and ``check --read-data`` must all succeed and restore exactly.

Dropped connections are also done for real: a TCP proxy between tuckbox and the real SFTP / S3 server
resets connections in the middle of requests and replies.

Permanent faults are real where possible: a full file system (a small tmpfs), a read-only mount, and
the repository directory vanishing mid-backup and mid-restore (an unplugged disk); a storage quota is
simulated as a PermanentError on SFTP. Each stops with one line and exit 1; after the fault is gone
the same backup (or restore) resumes, reusing what was done, and completes.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tuckbox.testing.crash import (
    MiB,
    Cli,
    local_storage,
    make_tree,
    journaled,
    restored,
    s3_storage,
    sftp_storage,
    wait_for,
)
from tuckbox.testing.proxy import DroppingProxy, through_proxy
from tuckbox.testing.servers import server_env
from tuckbox.testing.trees import compare_trees

INIT = ("init", "--pack-size", "1MiB", "--chunk-min", "16KiB", "--chunk-avg", "32KiB", "--chunk-max", "256KiB")
COMMANDS = {"init", "backup", "check", "restore"}
FLAKY = "seed=7,rate=0.05,lost_ack=0.05,truncate=0.05,delay=0.01,retry_delay=0.02"


def _name() -> str:
    return f"faults-{os.getpid()}-{int(time.time() * 1000) % 10**8}"


@pytest.fixture(params=["local", "sftp", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        st = local_storage(tmp_path / "repo")
    elif request.param == "sftp":
        st = sftp_storage(server_env("sshd"), _name())
    else:
        st = s3_storage(server_env("seaweedfs"), _name())
    yield st
    st.cleanup()


def one_line_error(err: str) -> str:
    """The error line; notes said while retrying before it are not part of it."""
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("tuckbox: note: ")]
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert lines[0].startswith("tuckbox: error: "), lines[0]
    return lines[0]


def flaky_round_trip(cli: Cli, src: Path, tmp_path: Path, faults: str) -> dict[str, int]:
    """init, two backups, check --read-data, restore, all under ``faults``; return the faults injected."""
    report = tmp_path / "faults.jsonl"
    flaky = {"TUCKBOX_TEST_FAULTS": faults, "TUCKBOX_TEST_FAULTS_REPORT": str(report)}
    cli(*INIT, env=flaky)
    first = cli("--json", "backup", str(src), env=flaky).summary()
    (src / "dir-01" / "file-000.dat").write_bytes(os.urandom(300_000))  # a second snapshot on top
    second = cli("--json", "backup", str(src), env=flaky).summary()
    assert 300_000 <= second["bytes_new_raw"] < first["bytes_new_raw"]  # deduplicated against the first
    check = cli("check", "--read-data", "--json", env=flaky).json()
    assert check["ok"] and check["counts"]["snapshots"] == 2
    target = tmp_path / "restore"
    res = cli("--json", "restore", "latest", "--target", str(target), env=flaky).summary()
    assert res["errors"] == [] and res["files"] > 100
    assert compare_trees(src, restored(target, src)) == []
    # nothing was lost to the faults: without them the same backup finds every chunk stored ...
    third = cli("--json", "backup", str(src)).summary()
    assert third["bytes_new_raw"] < 64 * 1024  # at most new directory listings (directory atimes moved)
    assert cli("check", "--read-data", "--json").json()["ok"]
    # ... and the faults really happened, in every command
    runs = [json.loads(line) for line in report.read_text().splitlines()]
    assert [next(a for a in r["argv"] if a in COMMANDS) for r in runs] == ["init", "backup", "backup", "check", "restore"]
    return {k: sum(r[k] for r in runs) for k in ("error", "lost_ack", "truncate")}


def test_flaky_storage_backup_restore_check(storage, tmp_path):
    """5 % of every operation fails (dropped connection, lost reply, truncated read), on real storage."""
    src = tmp_path / "src"
    make_tree(src, 11, big=3, big_size=(3 * MiB, 6 * MiB), dirs=4, files_per_dir=40)
    # files above 4 MiB are read, chunked and stored by a reader thread (archiver/reading.py): cover that too
    assert any(p.stat().st_size > 4 * MiB for p in src.rglob("*") if p.is_file())
    injected = flaky_round_trip(Cli(tmp_path, storage), src, tmp_path, FLAKY)
    assert sum(injected.values()) >= 2, injected  # expected about 5; every kind alone is the next test


@pytest.mark.parametrize("kind", ["rate", "lost_ack", "truncate"])
def test_each_fault_kind_at_a_high_rate(kind, tmp_path):
    """One kind of fault at 25 %, so each one is certain to be hit several times, and survived."""
    src = tmp_path / "src"
    make_tree(src, 12, big=2, big_size=(2 * MiB, 6 * MiB), dirs=3, files_per_dir=40)
    injected = flaky_round_trip(
        Cli(tmp_path, local_storage(tmp_path / "repo")), src, tmp_path, f"seed=3,{kind}=0.25,retry_delay=0.01"
    )
    assert injected[{"rate": "error"}.get(kind, kind)] >= 2, injected


def test_flaky_storage_really_injects(tmp_path):
    """The hook is live: with every call failing and no retries left, the one-line error names the fault."""
    cli = Cli(tmp_path, local_storage(tmp_path / "repo"))
    res = cli(*INIT, env={"TUCKBOX_TEST_FAULTS": "rate=1,retry_delay=0.001"}, expect=1)
    assert "injected fault" in one_line_error(res.err)
    notes = [ln for ln in res.err.splitlines() if ln.startswith("tuckbox: note: ")]
    assert len(notes) == 1 and "retrying" in notes[0], res.err  # the wait was announced, once
    quiet = cli("-q", *INIT, env={"TUCKBOX_TEST_FAULTS": "rate=1,retry_delay=0.001"}, expect=1)
    assert "note" not in quiet.err and "injected fault" in one_line_error(quiet.err)


def test_quota_exceeded_stops_then_resumes(tmp_path):
    storage = sftp_storage(server_env("sshd"), _name())
    try:
        src = tmp_path / "src"
        total = make_tree(src, 12, big=3, big_size=(2 * MiB, 3 * MiB), dirs=4, files_per_dir=30)
        cli = Cli(tmp_path, storage)
        cli(*INIT)
        res = cli("--json", "backup", str(src), env={"TUCKBOX_TEST_FAULTS": "quota_after=4"}, expect=1)
        assert "quota" in one_line_error(res.err) and "exceeded" in res.err
        assert cli("snapshots", "--json").json() == []
        cli("check", "--read-data")
        resumed = cli("--json", "backup", str(src)).summary()
        assert resumed["packs_adopted"] >= 1  # what was stored before the fault is reused ...
        assert resumed["bytes_new_raw"] < total  # ... not uploaded again
        cli("check", "--read-data")
        cli("restore", "latest", "--target", str(tmp_path / "r"))
        assert compare_trees(src, restored(tmp_path / "r", src)) == []
    finally:
        storage.cleanup()


def test_storage_fails_while_a_large_file_streams(tmp_path):
    """A large file is read, chunked and stored by a reader thread: the storage failing under it stops the
    run with the storage's own one-line error (not a warning about the file, not an internal error)."""
    src = tmp_path / "src"
    src.mkdir()
    big = os.urandom(12 * MiB)  # above the 4 MiB whole-file limit: streamed (archiver/reading.py)
    (src / "big.bin").write_bytes(big)
    (src / "small.txt").write_bytes(b"small\n")
    cli = Cli(tmp_path, local_storage(tmp_path / "repo"))
    cli(*INIT)
    res = cli("--json", "backup", str(src), env={"TUCKBOX_TEST_FAULTS": "quota_after=2"}, expect=1)
    line = one_line_error(res.err)
    assert "quota" in line and "exceeded" in line, line
    assert "internal error" not in res.err and "big.bin" not in res.err
    assert cli("snapshots", "--json").json() == []
    cli("check", "--read-data")
    cli("--json", "backup", str(src))  # the fault is gone: the same backup completes
    cli("check", "--read-data")
    cli("restore", "latest", "--target", str(tmp_path / "r"))
    assert compare_trees(src, restored(tmp_path / "r", src)) == []


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@pytest.fixture
def small_fs(tmp_path):
    """A real, small file system (tmpfs) we can fill up and grow; skipped only where mounting is impossible."""
    mnt = tmp_path / "small-fs"
    mnt.mkdir()
    try:
        _mount("-t", "tmpfs", "-o", "size=6m,mode=0755", "tmpfs", str(mnt))
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        pytest.skip(f"cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN): {e}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_stops_then_resumes(small_fs, tmp_path):
    src = tmp_path / "src"
    total = make_tree(src, 13, big=3, big_size=(3 * MiB, 4 * MiB), dirs=3, files_per_dir=20)
    assert total > 9 * MiB
    cli = Cli(tmp_path, local_storage(small_fs / "repo"))
    cli(*INIT)
    res = cli("--json", "backup", str(src), expect=1)
    line = one_line_error(res.err)
    assert "no space left" in line and str(small_fs) in line, line
    assert not list((small_fs / "repo" / "snapshots").iterdir())
    stored_before = sum(p.stat().st_size for p in (small_fs / "repo" / "data").rglob("*") if p.is_file())
    assert stored_before > 2 * MiB
    _mount("-o", "remount,size=64m", str(small_fs))  # the fault is gone
    cli("check", "--read-data")
    resumed = cli("--json", "backup", str(src)).summary()
    assert resumed["packs_adopted"] >= 1
    assert resumed["bytes_new_raw"] <= total - stored_before + 2 * MiB  # at most the packs in flight again
    cli("check", "--read-data")
    cli("restore", "latest", "--target", str(tmp_path / "r"))
    assert compare_trees(src, restored(tmp_path / "r", src)) == []


def test_read_only_repository(tmp_path):
    """A repository on a read-only mount: backup stops with one line; check and restore still work."""
    src = tmp_path / "src"
    make_tree(src, 14, big=1, big_size=(1 * MiB, 1 * MiB), dirs=2, files_per_dir=10)
    repo = tmp_path / "repo"
    cli = Cli(tmp_path, local_storage(repo))
    cli(*INIT)
    cli("backup", str(src))
    try:
        _mount("--bind", str(repo), str(repo))
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        pytest.skip(f"cannot bind-mount here: {e}")
    try:
        _mount("-o", "remount,bind,ro", str(repo))
        (src / "new.txt").write_text("new")
        res = cli("backup", str(src), expect=1)
        assert "read-only" in one_line_error(res.err).lower()
        checked = cli("--json", "check", "--read-data").json()  # no lock to be had: checks anyway, and says so
        assert checked["ok"] and checked["counts"]["packs"] >= 1
        assert any("without a lock" in n and "read-only" in n.lower() for n in checked["notes"]), checked["notes"]
        cli("restore", "latest", "--target", str(tmp_path / "r"))
        os.unlink(src / "new.txt")
        assert compare_trees(src, restored(tmp_path / "r", src), check_atime=False) == []
    finally:
        subprocess.run(["umount", str(repo)], capture_output=True)
    cli("backup", str(src))  # writable again: works


def test_check_without_a_lock(tmp_path):
    """Storage where no lock can be created (here: an immutable locks/ directory, which even root cannot
    write into) still gets checked, with a note saying it was done without a lock; --no-lock does not even
    try."""
    src = tmp_path / "src"
    make_tree(src, 15, big=1, big_size=(1 * MiB, 1 * MiB), dirs=2, files_per_dir=5)
    cli = Cli(tmp_path, local_storage(tmp_path / "repo"))
    cli(*INIT)
    cli("backup", str(src))
    locks = tmp_path / "repo" / "locks"
    try:
        subprocess.run(["chattr", "+i", str(locks)], check=True, capture_output=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        pytest.skip(f"cannot make a directory immutable here: {e}")
    try:
        res = cli("--json", "check", "--read-data").json()
        assert res["ok"] and res["read_data"]
        assert res["notes"][0].startswith("checked without a lock: ") and "locks" in res["notes"][0], res["notes"]
        res = cli("--json", "check", "--no-lock").json()
        assert res["ok"] and res["notes"][0] == "checked without a lock (--no-lock)", res["notes"]
    finally:
        subprocess.run(["chattr", "-i", str(locks)], capture_output=True)
    res = cli("--json", "check").json()  # writable again: locked as usual, nothing to note
    assert res["ok"] and not any("lock" in n for n in res["notes"]), res["notes"]
    assert not list(locks.iterdir())  # and released


def _packs(repo: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(repo / "data"))


def test_repository_vanishes_mid_backup(tmp_path):
    """The repository directory is moved away (an unplugged disk) during a backup: one line, exit 1,
    nothing recreated in its place; once it is back, the same backup resumes and completes."""
    src = tmp_path / "src"
    make_tree(src, 15, big=3, big_size=(3 * MiB, 4 * MiB), dirs=3, files_per_dir=20)
    repo = tmp_path / "repo"
    cli = Cli(tmp_path, local_storage(repo))
    cli(*INIT)
    running = cli.start("--limit-upload", "4MiB", "backup", str(src))
    wait_for(lambda: running.proc.poll() is not None or _packs(repo) >= 2, 60, "two packs to be stored")
    moved = tmp_path / "unplugged"
    os.rename(repo, moved)
    res = running.wait()
    assert res.code == 1, res.err
    assert "has disappeared" in one_line_error(res.err)
    assert not repo.exists(), "the backup recreated a repository without config or keys"
    os.rename(moved, repo)
    resumed = cli("--json", "backup", str(src)).summary()
    assert resumed["packs_adopted"] >= 1
    cli("check", "--read-data")
    cli("restore", "latest", "--target", str(tmp_path / "r"))
    assert compare_trees(src, restored(tmp_path / "r", src)) == []


def test_repository_vanishes_mid_restore(tmp_path):
    src = tmp_path / "src"
    make_tree(src, 16, big=3, big_size=(3 * MiB, 4 * MiB), dirs=4, files_per_dir=30)
    repo = tmp_path / "repo"
    cli = Cli(tmp_path, local_storage(repo))
    cli(*INIT)
    cli("backup", str(src))
    target = tmp_path / "target"
    running = cli.start("--limit-download", "4MiB", "restore", "latest", "--target", str(target))
    wait_for(lambda: running.proc.poll() is not None or sum(len(f) for _, _, f in os.walk(target)) > 40, 60,
             "the restore to make progress")
    moved = tmp_path / "unplugged"
    os.rename(repo, moved)
    res = running.wait()
    assert res.code == 1, res.err
    assert "has disappeared" in one_line_error(res.err)
    os.rename(moved, repo)
    final = cli("--json", "restore", "latest", "--target", str(target)).summary()
    assert final["errors"] == [] and final["files_skipped"] > 0
    assert compare_trees(src, restored(target, src)) == []


@pytest.mark.parametrize("kind", ["sftp", "s3"])
def test_real_dropped_connections(kind, tmp_path):
    """Not simulated: a TCP proxy between tuckbox and the real server resets connections part-way through
    (requests and replies cut in the middle); backup, check --read-data and restore still succeed."""
    direct = sftp_storage(server_env("sshd"), _name()) if kind == "sftp" else s3_storage(server_env("seaweedfs"), _name())
    u = urlsplit(direct.url if kind == "sftp" else direct.options["s3.endpoint"])
    proxy = DroppingProxy(u.hostname, u.port, seed=21, mean_bytes=6 * MiB)
    try:
        src = tmp_path / "src"
        make_tree(src, 17, big=3, big_size=(2 * MiB, 3 * MiB), dirs=3, files_per_dir=30)
        cli = Cli(tmp_path, through_proxy(direct, proxy, tmp_path))
        quick_retries = {"TUCKBOX_TEST_FAULTS": "retry_delay=0.05"}
        cli(*INIT, env=quick_retries)
        cli("backup", str(src), env=quick_retries)
        assert cli("check", "--read-data", "--json", env=quick_retries).json()["ok"]
        cli("restore", "latest", "--target", str(tmp_path / "r"), env=quick_retries)
        assert compare_trees(src, restored(tmp_path / "r", src)) == []
        assert proxy.drops >= 2, f"only {proxy.drops} connection(s) were dropped"
    finally:
        proxy.close()
        direct.cleanup()


@pytest.mark.parametrize("kind", ["sftp", "s3"])
def test_server_gone_for_good_mid_backup(kind, tmp_path):
    """The server goes away in the middle of a backup and stays away (the proxy in front of the real server
    stops: every connection cut, new ones refused). The backup gives up after one round of retries, not one
    for every upload under way and then another for its lock: one line, exit 1, no traceback. Once the
    server is back the same backup resumes without storing the packs already stored again."""
    direct = sftp_storage(server_env("sshd"), _name()) if kind == "sftp" else s3_storage(server_env("seaweedfs"), _name())
    u = urlsplit(direct.url if kind == "sftp" else direct.options["s3.endpoint"])
    proxy = DroppingProxy(u.hostname, u.port, seed=1, mean_bytes=1 << 40)  # drops nothing until closed
    try:
        src = tmp_path / "src"
        total = make_tree(src, 18, big=2, big_size=(2 * MiB, 3 * MiB), dirs=2, files_per_dir=10)
        cli = Cli(tmp_path, through_proxy(direct, proxy, tmp_path))
        cli(*INIT)
        quick = {"TUCKBOX_TEST_FAULTS": "retry_delay=0.02", "TUCKBOX_DEBUG": "1"}
        running = cli.start("--limit-upload", "2MiB", "--json", "backup", str(src), env=quick)
        wait_for(lambda: len(journaled(cli.cache)) >= 2 or running.proc.poll() is not None, 120, "two stored packs")
        proxy.close()
        assert running.proc.wait(300) == 1
        err = running.err_path.read_text()  # (with botocore's debug log, which logs tracebacks it handled)
        errors = [ln for ln in err.splitlines() if ln.startswith("tuckbox: error: ")]
        assert len(errors) == 1 and "127.0.0.1" in errors[0] and "internal error" not in errors[0], err[-3000:]
        assert json.loads(running.out_path.read_text().splitlines()[-1])["exit_code"] == 1
        # one operation used up its retries; every other one (the uploads under way, the lock's removal)
        # gave up at its next failure instead of retrying as long again
        full_rounds = [ln for ln in err.splitlines() if "giving up on" in ln and " attempts: " in ln]
        assert len(full_rounds) == 1, "\n".join(full_rounds)
        stored = journaled(cli.cache)
        back = Cli(tmp_path, direct, cache=cli.cache, name="direct")
        resumed = back("--json", "backup", str(src)).summary()
        assert resumed["packs_adopted"] >= len(stored) >= 2  # what was stored is used ...
        assert resumed["bytes_new_raw"] < total  # ... not uploaded again
        assert back("check", "--read-data", "--json").json()["ok"]
        back("restore", "latest", "--target", str(tmp_path / "r"))
        assert compare_trees(src, restored(tmp_path / "r", src)) == []
    finally:
        proxy.close()
        direct.cleanup()
