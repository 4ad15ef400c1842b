"""Restoring, as an ordinary user, a snapshot that root took: what only root may make (owners, devices) is a
warning that names the entry's real path, and no setuid or setgid bit is left on a file that would then run
as the restoring user or group."""

from __future__ import annotations

import os
import pickle
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest

from tuckbox.archiver.backup import BackupRequest, run_backup
from tuckbox.backends.local import LocalBackend
from tuckbox.repository.repo import Repository
from tuckbox.restorer import restorer as restorer_module
from tuckbox.restorer.restorer import Restorer

NOBODY = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a device node, owners, another user)")


def _as_nobody(fn: Callable[[], Any]) -> Any:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            result: Any = ("ok", fn())
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            result = ("error", f"{type(e).__name__}: {e}")
        os.write(w, pickle.dumps(result))
        os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    status, value = pickle.loads(b"".join(chunks))
    assert status == "ok", value
    return value


@pytest.fixture
def shared() -> Any:
    d = Path(tempfile.mkdtemp(prefix="tuckbox-as-user-", dir="/tmp"))  # reachable by nobody
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)


@pytest.mark.parametrize("processes", [1, 2])
def test_a_root_snapshot_restored_by_a_user(shared: Path, monkeypatch: pytest.MonkeyPatch, processes: int) -> None:
    monkeypatch.setenv("TUCKBOX_CACHE_DIR", str(shared / "cache"))
    monkeypatch.setattr(restorer_module, "PROCESSES", processes)
    src = shared / "src"
    src.mkdir()
    (src / "suid").write_bytes(b"#!/bin/sh\necho root\n")
    os.chmod(src / "suid", 0o4755)
    (src / "sgid").write_bytes(b"#!/bin/sh\necho group\n")
    os.chown(src / "sgid", 0, 42)
    os.chmod(src / "sgid", 0o2755)
    (src / "own").write_bytes(b"nobody's own\n")
    os.chown(src / "own", NOBODY, NOBODY)
    os.chmod(src / "own", 0o6750)
    os.mknod(src / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mkfifo(src / "fifo")
    repo = Repository.init(LocalBackend(str(shared / "repo")), b"pw", created="t", host="h", user="u")
    snap = run_backup(repo, BackupRequest([str(src)])).snapshot
    for d, _, files in os.walk(shared / "repo"):  # (the restoring user reads the repository)
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    target = shared / "target"
    target.mkdir()
    os.chown(target, NOBODY, NOBODY)

    def restore() -> tuple[list[str], list[str]]:
        result = Restorer(repo).restore(snap, os.fsencode(target))
        return result.errors, result.warnings

    errors, warnings = _as_nobody(restore)
    out = Path(str(target) + str(src))
    assert errors == []
    assert sorted(warnings) == sorted([
        f"{out}/null: cannot create character device 1:3: not permitted (restore as root)",
        f"{out}/sgid: setgid bit not restored: it is owned by {NOBODY}:{NOBODY} here, not 0:42, and would run as "
        "the wrong group",
        f"{out}/suid: setuid bit not restored: it is owned by {NOBODY}:{NOBODY} here, not 0:0, and would run as "
        "the wrong user",
    ])
    modes = {n: (stat.S_IMODE(os.lstat(out / n).st_mode), os.lstat(out / n).st_uid) for n in ("suid", "sgid", "own")}
    assert modes == {"suid": (0o755, NOBODY), "sgid": (0o755, NOBODY), "own": (0o6750, NOBODY)}
    assert stat.S_ISFIFO(os.lstat(out / "fifo").st_mode)
    assert not os.path.lexists(out / "null")
    assert (out / "suid").read_bytes() == (src / "suid").read_bytes()
