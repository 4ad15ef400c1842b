"""The machine around tuckbox: where its cache goes, and what happens when that place is unusable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tuckbox.testing.trees import compare_trees

from .conftest import Tuckbox

IS_ROOT = os.geteuid() == 0
NO_SUCH_UID = 54321  # a uid without a passwd entry (a container's, or systemd's DynamicUser=)


@pytest.fixture
def shared_tmp():
    """A directory another uid can use (pytest's tmp_path is private to its user)."""
    path = Path(tempfile.mkdtemp(prefix="tuckbox-env-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_as(uid: int, env: dict, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """Run tuckbox as ``uid`` (with setpriv, which resolves the interpreter's path before it drops its rights:
    the test's Python may live under root's private home)."""
    cmd = ["setpriv", "--reuid", str(uid), "--regid", str(uid), "--clear-groups",
           sys.executable, "-m", "tuckbox.cli.main", *args]
    pythonpath = os.pathsep.join(os.path.abspath(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)
    env = {**env, "PYTHONPATH": pythonpath}  # (made absolute: the command runs in another directory)
    res = subprocess.run(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr, res.stderr
    return res


@pytest.mark.skipif(not IS_ROOT or not shutil.which("setpriv"), reason="runs a command as a uid without a passwd entry")
def test_no_home_directory_is_a_cache_notice_not_an_internal_error(shared_tmp):
    """With no TUCKBOX_CACHE_DIR, no XDG_CACHE_HOME, no HOME and a uid without a passwd entry, commands
    said 'internal error: RuntimeError'. Now the cache is unused and a backup says why; nothing is written
    into the working directory."""
    for name in ("src", "work"):
        (shared_tmp / name).mkdir(mode=0o777)
    (shared_tmp / "src" / "f").write_bytes(b"data\n")
    tb = Tuckbox(shared_tmp)
    tb.passfile.chmod(0o644)
    tb("init")
    for path in shared_tmp.rglob("*"):
        os.chown(path, NO_SUCH_UID, NO_SUCH_UID, follow_symlinks=False)
    env = {k: v for k, v in tb.env.items() if k not in ("HOME", "XDG_CACHE_HOME", "TUCKBOX_CACHE_DIR")}
    work = shared_tmp / "work"
    res = run_as(NO_SUCH_UID, env, work, "backup", str(shared_tmp / "src"))
    assert res.returncode == 0, res.stderr
    notices = [ln for ln in res.stderr.splitlines() if "cache directory" in ln]
    assert len(notices) == 1, res.stderr
    assert f"no home directory: HOME is not set and user {NO_SUCH_UID} has none" in notices[0], res.stderr
    assert "TUCKBOX_CACHE_DIR" in notices[0]
    res = run_as(NO_SUCH_UID, env, work, "ls", "latest", str(shared_tmp / "src"))
    assert res.returncode == 0 and f"{shared_tmp}/src/f" in res.stdout, res.stderr
    # an empty HOME= (a unit file's) is no home either: the cache never goes into the working directory
    res = run_as(NO_SUCH_UID, {**env, "HOME": "", "XDG_CACHE_HOME": "rel"}, work, "backup", str(shared_tmp / "src"))
    assert res.returncode == 0 and "no home directory" in res.stderr, res.stderr
    assert list(work.iterdir()) == []


def _damage_files_cache_record(cache_dir: Path, name: bytes, where: str, strip_trailer: bool = False) -> None:
    """Flip one byte of the stored node of file ``name`` in the files cache stream (and, with
    ``strip_trailer``, cut the trailer off, as a killed run's stream has none)."""
    import msgpack

    (stream,) = [p for p in cache_dir.glob("*/state/files-cache/*")]
    data = bytearray(stream.read_bytes())
    unpacker = msgpack.Unpacker(use_list=True)
    unpacker.feed(bytes(data))
    unpacker.unpack()
    pos = unpacker.tell()
    while True:
        start, rec = pos, unpacker.unpack()
        pos = unpacker.tell()
        if isinstance(rec, list) and rec[0].endswith(b"\x01" + name):
            break
    raw = rec[8]
    at = bytes(data).index(raw, start, pos)
    at += 0 if where == "map header" else raw.index(rec[7][0]) + 5  # (else: inside the first chunk id)
    data[at] ^= 0x10
    if strip_trailer:
        assert bytes(data[-39:-35]) == b"\x81\xa3en"
        del data[-39:]
    stream.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["map header", "chunk id"])
@pytest.mark.parametrize("trailer", [True, False], ids=["closed stream", "killed run's stream"])
def test_a_damaged_files_cache_never_goes_into_a_snapshot(tb, tmp_path, where, trailer):
    """An unchanged file's node goes from the files cache into the new tree as it is: one flipped byte of
    the local disk there made every later backup store a file whose chunk does not exist, or a directory
    listing that does not decode (the whole directory lost), with exit 0 each time. Now a damaged stream is
    not used (a closed one has a hash of its bytes) or its damaged record is not (a killed run's stream)."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for i in range(5):
        (src / "d" / f"f{i}").write_bytes(os.urandom(3000))
        os.utime(src / "d" / f"f{i}", ns=(1_500_000_000_000_000_000,) * 2)
    time.sleep(1.1)  # (a file changed within a second of being read is never trusted)
    tb("init")
    tb("backup", str(src))
    _damage_files_cache_record(tmp_path / "cache", b"f4", where, strip_trailer=not trailer)
    res = tb("backup", str(src), "--json")
    summary = json.loads(res.out.splitlines()[-1])
    assert summary["files_unmodified"] == (0 if trailer else 4), summary  # (only the damaged record is re-read)
    tb("check", "--read-data")
    tb("restore", "latest", "--target", str(tmp_path / "r"))
    assert compare_trees(src, tmp_path / "r" / src.relative_to("/")) == []
    res = tb("backup", str(src), "--json")  # and the cache works again
    assert json.loads(res.out.splitlines()[-1])["files_unmodified"] == 5


@pytest.mark.skipif(not IS_ROOT or not shutil.which("setpriv"), reason="runs a command as another uid")
def test_a_repository_another_user_cannot_read_is_named_plainly(shared_tmp):
    """A repository made by root (objects mode 0600) opened by another user: the error named the file
    'config/config', which is not where it is."""
    tb = Tuckbox(shared_tmp)
    tb("init")
    tb.passfile.chmod(0o644)
    (shared_tmp / "cache").chmod(0o777)
    res = run_as(NO_SUCH_UID, tb.env, shared_tmp, "snapshots")
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == (
        f"tuckbox: error: cannot access config in {tb.repo}: Permission denied: it belongs to root, and tuckbox runs "
        f"as uid {NO_SUCH_UID}; run every command on this repository as one user, or give it back to uid "
        f"{NO_SUCH_UID}: chown -R {NO_SUCH_UID} {tb.repo} (as root)")


def test_a_cache_that_can_be_read_but_not_written(shared_tmp):
    """A cache directory this user cannot write (another user's, a read-only mount) holding a killed run's
    files-cache stream: the backup stopped with 'internal error: OSError' (adopting the stream). Now it
    runs, uses what the cache holds, and says that it cannot write it."""
    src = shared_tmp / "src"
    src.mkdir(mode=0o777)
    for i in range(3):
        (src / f"f{i}").write_bytes(os.urandom(2000))
        os.utime(src / f"f{i}", ns=(1_500_000_000_000_000_000,) * 2)
    time.sleep(1.1)
    tb = Tuckbox(shared_tmp)
    tb.passfile.chmod(0o644)
    tb("init")
    tb("backup", str(src))
    (stream,) = list((shared_tmp / "cache").glob("*/state/files-cache/*"))
    shutil.copy(stream, f"{stream}.new-999999999")  # a run killed outright, whose pid is gone
    if IS_ROOT:
        if not shutil.which("setpriv"):
            pytest.skip("needs setpriv to run as another user")
        for p in [Path(tb.repo), *Path(tb.repo).rglob("*")]:  # (not the files: that would change their ctime)
            os.chown(p, NO_SUCH_UID, NO_SUCH_UID)
        for p in [shared_tmp / "cache", *(shared_tmp / "cache").rglob("*")]:  # root's cache, readable to all
            p.chmod(0o755 if p.is_dir() else 0o644)
        res = run_as(NO_SUCH_UID, tb.env, shared_tmp, "backup", str(src), "--json")
        code, err, out = res.returncode, res.stderr, res.stdout
    else:
        for p in (shared_tmp / "cache").rglob("*"):
            if p.is_dir():
                p.chmod(0o555)
        res = tb("backup", str(src), "--json")
        code, err, out = res.code, res.err, res.out
    assert code == 0, err
    notices = [ln for ln in err.splitlines() if "cache directory" in ln]
    assert len(notices) == 1 and notices[0].startswith("warning: cannot write to the cache directory "), err
    assert "TUCKBOX_CACHE_DIR" in notices[0]
    summary = json.loads(out.splitlines()[-1])
    assert summary["files_unmodified"] == 3 and summary["bytes_read"] == 0, summary


@pytest.fixture
def small_mount(tmp_path):
    """A 256 KiB file system (tmpfs; needs the right to mount)."""
    path = tmp_path / "small"
    path.mkdir()
    if not IS_ROOT or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(path)],
                                     capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_cache_on_a_full_disk_is_pointed_out(tb, tmp_path, small_mount):
    """With the cache's file system full, a backup stores everything, but its files cache is cut short:
    the next run reads most files again (counted as new), every time, and nothing said so."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3000):
        (src / f"file-with-a-longer-name-{i:05}").write_bytes(b"%d\n" % i)
    tb.env["TUCKBOX_CACHE_DIR"] = str(small_mount / "cache")
    tb("init")
    res = tb("backup", str(src), "--json")
    notices = [ln for ln in res.err.splitlines() if "cache directory" in ln]
    assert len(notices) == 1 and "(No space left on device)" in notices[0], res.err
    assert "make room there or set TUCKBOX_CACHE_DIR" in notices[0]
    assert json.loads(res.out.splitlines()[-1])["files_new"] == 3000
    tb("check")


def test_init_on_a_full_disk_leaves_nothing_behind(tb, small_mount):
    """init stores its key, then the config. With no room for the config it stopped with a clear error but
    left the key of a repository that never existed, which the next init's 'key list' showed as a key."""
    tb.repo = str(small_mount / "repo")
    tb.env["TUCKBOX_REPOSITORY"] = tb.repo
    free = os.statvfs(small_mount).f_bavail * os.statvfs(small_mount).f_frsize
    (small_mount / "filler").write_bytes(b"\0" * (free - 4096))  # room for the key file, not for the config
    res = tb("init", expect=1)
    assert res.err.strip().splitlines()[-1].startswith("tuckbox: error: no space left on the device holding"), res.err
    assert list((small_mount / "repo" / "keys").iterdir()) == []
    (small_mount / "filler").unlink()
    tb("init")
    assert [k["in_use"] for k in tb("key", "list", "--json").json()] == [True]


def test_a_repository_shared_with_a_group_stays_readable_by_it(shared_tmp):
    """Objects were always written 0600, whatever the repository's own modes: a repository a group shares
    (chgrp -R; chmod -R g+rX) became unreadable to the group with its next backup. Now a group-readable
    config makes new objects 0640 and new directories 0750 (as restic does); a private one keeps 0600."""
    src = shared_tmp / "src"
    src.mkdir()
    files = {f"f{i}": os.urandom(300_000) for i in range(4)}
    for name, data in files.items():
        (src / name).write_bytes(data)
    tb = Tuckbox(shared_tmp)
    tb.passfile.chmod(0o644)
    tb("init")
    repo = Path(tb.repo)
    assert (repo / "config").stat().st_mode & 0o777 == 0o600
    group = 54322
    for p in [repo, *repo.rglob("*")]:
        if IS_ROOT:
            os.chown(p, -1, group)
        p.chmod(p.stat().st_mode | (0o2050 if p.is_dir() else 0o040))  # (set-group-ID: new files get the group)
    for shard in (repo / "data").iterdir():
        shard.rmdir()  # (made again as packs need them: directories made by the backup)
    before = {p for p in repo.rglob("*")}
    tb("backup", str(src))
    new = [p for p in repo.rglob("*") if p not in before]
    assert any(p.is_dir() for p in new) and any(p.parent.parent.name == "data" for p in new)  # a shard, a pack
    for p in new:
        assert p.stat().st_mode & 0o777 == (0o750 if p.is_dir() else 0o640), p
        if IS_ROOT:
            assert p.stat().st_gid == group, p
    if IS_ROOT and shutil.which("setpriv"):
        (shared_tmp / "cache-other").mkdir(mode=0o777)
        env = {**tb.env, "TUCKBOX_CACHE_DIR": str(shared_tmp / "cache-other")}
        cmd = ["setpriv", "--reuid", str(NO_SUCH_UID), "--regid", str(group), "--clear-groups",
               sys.executable, "-m", "tuckbox.cli.main", "dump", "latest", str(src / "f2")]
        pythonpath = os.pathsep.join(os.path.abspath(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)
        res = subprocess.run(cmd, env={**env, "PYTHONPATH": pythonpath}, cwd=shared_tmp, stdin=subprocess.DEVNULL,
                             capture_output=True, timeout=300)
        assert res.returncode == 0, res.stderr
        assert res.stdout == files["f2"]  # a member of the group reads what the backup added
