"""Ctrl-C: a real ``tuckbox backup`` gets SIGINT while packs are uploading over a slow link, stops within
a couple of seconds (it does not wait for the pack in flight), exits 130, and leaves a repository that
``check --read-data`` accepts with a checkpoint that holds exactly the files whose data was stored.
The next backup resumes: it uploads no chunk of a pack that was already stored, re-reads only the
files the checkpoint did not save, and restores equal to the source.

The link is slowed with ``--limit-upload`` so that one 1 MiB pack takes about 4 s, twice the time the
stop may take; the SIGINT comes once two packs are stored (journaled), so there is always a pack in
flight, an open pack and files the walk finished whose chunks are in neither stored pack. Against a
local repository and the real SFTP and S3 test servers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import time

import pytest

from tuckbox.testing.crash import (
    KiB,
    MiB,
    Cli,
    PackInspector,
    file_hashes,
    journaled,
    local_storage,
    make_tree,
    open_repo,
    restored,
    s3_storage,
    sftp_storage,
    wait_for,
)
from tuckbox.testing.servers import server_env
from tuckbox.testing.trees import compare_trees
from tuckbox.types import BlobType

INIT = ("init", "--pack-size", "1MiB", "--chunk-min", "16KiB", "--chunk-avg", "32KiB", "--chunk-max", "256KiB")
RATE = 256 * KiB  # bytes per second: a 1 MiB pack takes 4 s
STOP_WITHIN = 3.0  # seconds from SIGINT to exit: what the run is allowed, under one pack's upload (4 s)
SAFETY = 10.0  # a hard bound even on a very slow test machine


@pytest.fixture(params=["local", "sftp", "s3"])
def storage(request, tmp_path):
    name = f"interrupt-{os.getpid()}-{int(time.time() * 1000) % 10**8}"
    if request.param == "local":
        st = local_storage(tmp_path / "repo")
    elif request.param == "sftp":
        st = sftp_storage(server_env("sshd"), name)
    else:
        st = s3_storage(server_env("seaweedfs"), name)
    yield st
    st.cleanup()


def _data_blobs(insp: PackInspector, packs: dict[str, int]) -> set[bytes]:
    return {e.id for name, size in packs.items() for e in insp.blobs(name, size) if e.type is BlobType.DATA}


def test_ctrl_c_stops_at_once_keeps_what_was_stored_and_resumes(storage, tmp_path):
    _ctrl_c_round(storage, tmp_path, big_size=(600 * KiB, 900 * KiB), left_out=True)


def test_ctrl_c_while_large_files_stream(tmp_path):
    """The same, with files above 4 MiB: read, chunked and stored by reader threads when the stop comes."""
    # (the file being streamed is left out by the walk itself, so none may be "left out" afterwards)
    _ctrl_c_round(local_storage(tmp_path / "repo"), tmp_path, big_size=(5 * MiB, 6 * MiB), left_out=False)


def test_sigterm_stops_like_ctrl_c(tmp_path):
    """SIGTERM (``systemctl stop``, a shutdown, ``kill``) stops a backup the same way: checkpoint, exit 130."""
    _ctrl_c_round(local_storage(tmp_path / "repo"), tmp_path, big_size=(600 * KiB, 900 * KiB), left_out=True,
                  sig=signal.SIGTERM)


def _ctrl_c_round(storage, tmp_path, big_size: tuple[int, int], left_out: bool,
                  sig: signal.Signals = signal.SIGINT) -> None:
    src = tmp_path / "src"
    make_tree(src, 11, big=2, big_size=big_size, dirs=6, files_per_dir=40, small_size=(0, 40 * KiB))
    time.sleep(1.1)  # files changed (ctime) within a second of being read are not put in the files cache
    cli = Cli(tmp_path, storage)
    cli(*INIT)
    repo = open_repo(storage, cli.passphrase, tmp_path / "inspect-cache")
    insp = PackInspector(repo)
    try:
        running = cli.start("--json", "--limit-upload", str(RATE), "backup", str(src))
        wait_for(lambda: len(journaled(cli.cache)) >= 2 or running.proc.poll() is not None, 120, "two stored packs")
        assert running.proc.poll() is None, "the backup ended before it could be interrupted"
        t0 = time.monotonic()
        running.proc.send_signal(sig)  # our own child, by pid
        res = running.wait(timeout=60)
        elapsed = time.monotonic() - t0
        print(f"{storage.kind}: stopped {elapsed:.2f}s after {sig.name}")
        assert res.code == 130, f"exit {res.code}\n{res.err}"
        assert elapsed < SAFETY, f"the stop took {elapsed:.1f}s"
        assert elapsed < STOP_WITHIN, f"the stop took {elapsed:.1f}s: it waited for an upload"
        err = [line for line in res.err.splitlines() if line.strip()]
        assert err[-1].startswith("tuckbox: interrupted: checkpoint "), res.err
        summary = res.summary()
        assert summary["interrupted"], summary
        last = json.loads(res.out.splitlines()[-1])  # (README: a failure ends the stream; it used to end in the summary)
        assert last["type"] == "error" and last["exit_code"] == 130 and summary["short_id"] in last["message"], last
        if left_out:
            assert summary["left_out"] > 0, summary  # a pack was in flight

        # the repository is valid, and every pack that reached the storage is indexed: none half-written,
        # none stored and forgotten
        check = cli("check", "--read-data", "--json").json()
        assert check["ok"] and not check["errors"], check
        stored = insp.stored()
        assert set(stored) == set(insp.indexed()), "a stored pack is not indexed"
        if storage.local_root is not None:
            leftovers = [p for p in storage.local_root.rglob("*") if p.name.startswith(".tmp-")]
            assert not leftovers, leftovers

        # the checkpoint holds exactly the files it lists, each equal to the source
        snaps = cli("snapshots", "--json").json()
        assert [s["partial"] for s in snaps] == [True]
        listed = {
            os.path.relpath(e["path"], src)
            for e in cli("ls", "--json", snaps[0]["id"][:12], str(src)).json()["entries"]
            if e["type"] in ("file", "symlink")
        }
        target = tmp_path / "checkpoint"
        cli("restore", snaps[0]["id"][:12], "--target", str(target))
        got, want = file_hashes(restored(target, src)), file_hashes(src)
        assert set(got) == listed
        saved = len([p for p in got if not got[p].startswith("link:")])
        assert (0 if left_out else -1) < saved < len(want) - 1  # (a large file first in the walk may hold it all)
        wrong = [p for p, h in got.items() if want.get(p) != h]
        assert not wrong, f"the checkpoint restores files that differ from the source: {wrong[:5]}"
        shutil.rmtree(target)
        saved_files = [p for p in got if stat.S_ISREG(os.lstat(src / p).st_mode)]

        # resume: no chunk of a stored pack is uploaded again, only the files not saved are read
        before = _data_blobs(insp, stored)
        done = cli("--json", "backup", str(src)).summary()
        new = {n: s for n, s in insp.stored().items() if n not in stored}
        again = _data_blobs(insp, new) & before
        assert not again, f"{len(again)} chunk(s) of packs stored before the interrupt were uploaded again"
        assert done["files_unmodified"] == len(saved_files), done
        # new to the repository, as in a first backup (not "changed": only the interrupted run had read them)
        assert done["files_changed"] == 0, done
        assert done["files_new"] == len([p for p in want if not want[p].startswith("link:")]) - len(saved_files), done
        saved_bytes = sum((src / p).stat().st_size for p in saved_files)
        assert done["bytes_read"] == done["bytes_total"] - saved_bytes, done

        cli("restore", "latest", "--target", str(tmp_path / "final"))
        problems = compare_trees(src, restored(tmp_path / "final", src))
        assert problems == [], "\n".join(problems[:20])
        snaps = cli("snapshots", "--json").json()
        assert [s["partial"] for s in snaps] == [False], "the checkpoint was not superseded"
        assert cli("check", "--read-data", "--json").json()["ok"]
    finally:
        repo.close()


def test_ctrl_c_before_any_file_was_stored_saves_no_checkpoint(tmp_path):
    """Ctrl-C in a backup's first moments, before its first pack is stored: the checkpoint it used to save held
    no file, became ``latest``, and ``restore latest`` restored nothing with exit 0. No checkpoint is saved, the
    message says so and how to resume, and the next run backs everything up."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(60):
        (src / f"f{i:02}").write_bytes(os.urandom(20 * KiB))
    cli = Cli(tmp_path, local_storage(tmp_path / "repo"))
    cli(*INIT)
    locks = tmp_path / "repo" / "locks"
    running = cli.start("--json", "--limit-upload", str(RATE), "backup", str(src))  # the first pack: 4 s
    wait_for(lambda: any(locks.iterdir()) or running.proc.poll() is not None, 120, "the backup's lock")
    time.sleep(0.3)
    assert running.proc.poll() is None, "the backup ended before it could be interrupted"
    running.proc.send_signal(signal.SIGINT)  # our own child, by pid
    res = running.wait(timeout=60)
    assert res.code == 130, f"exit {res.code}\n{res.err}"
    assert journaled(cli.cache) == set(), "a pack was stored before the stop: the test came too late"
    last = [line for line in res.err.splitlines() if line.strip()][-1]
    assert last.startswith("tuckbox: interrupted before any file was saved") and "no checkpoint saved" in last, res.err
    assert "run the same backup again to resume" in last, res.err
    summary = res.summary()
    assert summary["interrupted"] and summary["snapshot"] is None and summary["short_id"] is None, summary
    assert json.loads(res.out.splitlines()[-1])["exit_code"] == 130
    assert cli("snapshots", "--json").json() == []
    cli("restore", "latest", "--target", str(tmp_path / "r"), expect=2)
    assert cli("check", "--json").json()["ok"]
    done = cli("--json", "backup", str(src)).summary()
    assert (done["files_new"], done["files_changed"]) == (60, 0), done  # as in a first backup
    cli("restore", "latest", "--target", str(tmp_path / "r"))
    assert compare_trees(src, restored(tmp_path / "r", src)) == []


def test_second_ctrl_c_quits_at_once(tmp_path):
    """The second SIGINT does not wait for anything; what was stored is adopted by the next run."""
    src = tmp_path / "src"
    make_tree(src, 5, big=3, big_size=(2 * MiB, 3 * MiB), dirs=2, files_per_dir=10)
    cli = Cli(tmp_path, local_storage(tmp_path / "repo"))
    cli(*INIT)
    running = cli.start("--limit-upload", str(RATE), "backup", str(src))
    wait_for(lambda: len(journaled(cli.cache)) >= 1, 120, "a stored pack")
    running.proc.send_signal(signal.SIGINT)
    running.proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    res = running.wait(timeout=60)
    assert res.code == 130, res.err
    assert time.monotonic() - t0 < SAFETY
    assert "Traceback" not in res.err
    cli("check", "--read-data")
    cli("backup", str(src))
    cli("restore", "latest", "--target", str(tmp_path / "r"))
    assert compare_trees(src, restored(tmp_path / "r", src)) == []


def test_second_ctrl_c_quits_at_once_when_the_storage_stopped_answering(tmp_path):
    """A server that accepts connections and then answers nothing (a hung NAS, a stopped process): the first
    Ctrl-C's checkpoint cannot be saved, and the second quits within seconds anyway (it used to wait for the
    server for good). Once the server answers again, the next run resumes and check passes."""
    src = tmp_path / "src"
    make_tree(src, 5, big=3, big_size=(2 * MiB, 3 * MiB), dirs=2, files_per_dir=10)
    cli = Cli(tmp_path, local_storage(tmp_path / "repo"))
    cli(*INIT)
    running = cli.start("--limit-upload", str(RATE), "backup", str(src), env={"TUCKBOX_TEST_FAULTS": "hang_after=3"})
    wait_for(lambda: len(journaled(cli.cache)) >= 1, 120, "a stored pack")
    time.sleep(2)  # (the third save is under way; every call after it hangs)
    running.proc.send_signal(signal.SIGINT)
    time.sleep(1)
    running.proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    res = running.wait(timeout=60)
    assert res.code == 130, res.err
    assert time.monotonic() - t0 < SAFETY
    assert "Traceback" not in res.err
    cli("unlock")
    cli("check", "--read-data")
    cli("backup", str(src))
    cli("restore", "latest", "--target", str(tmp_path / "r"))
    assert compare_trees(src, restored(tmp_path / "r", src)) == []


@pytest.mark.parametrize("command", ["restore", "check"])
def test_a_stopped_restore_or_check_does_not_wait_for_its_downloads(tmp_path, command):
    """SIGTERM during a restore or `check --read-data` limited to 256 KiB/s stops it at once (they used to
    wait for the downloads in flight, and check for every pack still queued: minutes on a slow link); the
    rerun resumes the restore, and the target equals the source."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}").write_bytes(os.urandom(3 * MiB))
    cli = Cli(tmp_path, local_storage(tmp_path / "repo"))
    cli(*INIT)
    cli("backup", str(src))
    target = tmp_path / "r"
    args = ("restore", "latest", "--target", str(target)) if command == "restore" else ("check", "--read-data")
    locks = tmp_path / "repo" / "locks"
    running = cli.start("--limit-download", str(RATE), *args)  # 12 MiB: ~48 s
    wait_for(lambda: any(locks.iterdir()) or running.proc.poll() is not None, 120, "the command's lock")
    time.sleep(1.5)
    assert running.proc.poll() is None, "the command ended before it could be stopped"
    running.proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    res = running.wait(timeout=120)
    assert res.code == 130, f"exit {res.code}\n{res.err}"
    assert time.monotonic() - t0 < SAFETY, "it waited for its downloads in flight"
    assert res.err.splitlines()[-1] == "tuckbox: interrupted", res.err
    assert not list(locks.iterdir())
    cli(*args)
    if command == "restore":
        assert compare_trees(src, restored(target, src)) == []


@pytest.mark.parametrize("command", ["restore", "check"])
def test_second_signal_quits_every_command_when_the_storage_stopped_answering(tmp_path, command):
    """Restore and check, with every storage call after their lock hanging: the first SIGINT unwinds into the
    lock's removal (which hangs too), the second ends the process within seconds with 130 (it used to take
    a third, and then the interpreter's exit waited for the hung transfers)."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}").write_bytes(os.urandom(1 * MiB))
    cli = Cli(tmp_path, local_storage(tmp_path / "repo"))
    cli(*INIT)
    cli("backup", str(src))
    args = ("restore", "latest", "--target", str(tmp_path / "r")) if command == "restore" else ("check", "--read-data")
    running = cli.start(*args, env={"TUCKBOX_TEST_FAULTS": "hang_data=1"})  # silence from the first data read on
    locks = tmp_path / "repo" / "locks"
    wait_for(lambda: any(locks.iterdir()), 120, "the command's lock")
    time.sleep(1)
    assert running.proc.poll() is None
    running.proc.send_signal(signal.SIGINT)
    time.sleep(1)
    assert running.proc.poll() is None, "the hung storage call ended by itself"
    running.proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    res = running.wait(timeout=60)
    assert res.code == 130, res.err
    assert time.monotonic() - t0 < SAFETY
    cli("unlock")
    cli("check", "--read-data")


@pytest.mark.parametrize("command", ["restore", "check"])
def test_sigterm_stops_every_command_like_ctrl_c(tmp_path, command):
    """SIGTERM (systemd, cron, ``kill``) stops a restore or a check as Ctrl-C does: exit 130 and the
    repository lock released (they used to die with 143 and leave their lock behind)."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}").write_bytes(os.urandom(3 * MiB))
    storage = local_storage(tmp_path / "repo")
    cli = Cli(tmp_path, storage)
    cli(*INIT)
    cli("backup", str(src))
    locks = tmp_path / "repo" / "locks"
    assert not list(locks.iterdir())
    args = ("restore", "latest", "--target", str(tmp_path / "r")) if command == "restore" else ("check", "--read-data")
    running = cli.start("--limit-download", str(2 * MiB), *args)  # 12 MiB at 2 MiB/s: ~6 s
    wait_for(lambda: any(locks.iterdir()) or running.proc.poll() is not None, 120, "the command's lock")
    time.sleep(0.5)
    assert running.proc.poll() is None, "the command ended before it could be stopped"
    running.proc.send_signal(signal.SIGTERM)  # our own child, by pid
    res = running.wait(timeout=60)
    assert res.code == 130, f"exit {res.code}\n{res.err}"
    assert res.err.splitlines()[-1] == "tuckbox: interrupted", res.err
    assert not list(locks.iterdir()), "the lock was left behind"


_SIGNAL_WHILE_IMPORTING = """
import importlib.abc, os, runpy, signal, sys

SIG = getattr(signal, sys.argv[1])

class Trap(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tuckbox.cli.common":  # one of the modules tuckbox.cli.main loads before main() runs
            sys.meta_path.remove(self)
            os.kill(os.getpid(), SIG)
        return None

sys.meta_path.insert(0, Trap())
sys.argv = ["tuckbox", *sys.argv[2:]]
runpy.run_module("tuckbox.cli.main", run_name="__main__")
"""


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("json_out", [False, True])
def test_a_signal_while_the_program_starts_exits_130_without_a_traceback(sig, json_out, tmp_path):
    """Ctrl-C in a backup's first tenth of a second (the user saw the wrong path) came while Python loaded
    tuckbox's modules: a traceback of the import under way, and SIGTERM there ended it with 143, not 130."""
    import subprocess
    import sys

    cli = Cli(tmp_path, local_storage(tmp_path / "repo"))
    args = [*(["--json"] if json_out else []), "backup", str(tmp_path)]
    proc = subprocess.run([sys.executable, "-c", _SIGNAL_WHILE_IMPORTING, sig, *args], env=cli.env,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    err, out = proc.stderr.decode(), proc.stdout.decode()
    assert "Traceback" not in err, err
    assert proc.returncode == 130, (proc.returncode, err)
    assert err.strip().splitlines() == ["tuckbox: interrupted"], err
    if json_out:
        assert json.loads(out) == {"type": "error", "message": "interrupted", "exit_code": 130}
    else:
        assert out == ""
