"""What the local backend says when the repository's disk refuses: objects another user wrote (root's timer and
a user's own run), a file system mounted read-only, a disk quota. Each is one line naming what to do."""

from __future__ import annotations

import errno
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest

from tuckbox.backends.local import LocalBackend
from tuckbox.errors import NoSpace, PermanentError
from tuckbox.types import ObjectType

NOBODY = 65534


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
    return pickle.loads(b"".join(chunks))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (objects of another user)")
def test_objects_of_another_user_are_named_with_their_owner_and_the_way_out() -> None:
    """A repository a user made, then written once by root (a manual 'sudo tuckbox backup'): the user's timer
    failed every hour with 'cannot access index/... : Permission denied', nothing said about why or what to do."""
    d = Path(tempfile.mkdtemp(prefix="tuckbox-owner-", dir="/tmp"))  # reachable by nobody
    try:
        d.chmod(0o755)
        root = d / "repo"
        backend = LocalBackend(str(root))
        backend.create()
        backend.save(ObjectType.CONFIG, "config", b"c")
        backend.save(ObjectType.INDEX, "ab" * 32, b"written by root")
        for path in (root, *root.iterdir()):
            os.chown(path, NOBODY, NOBODY)
        os.chown(root / "config", NOBODY, NOBODY)
        os.chown(root / "locks", 0, 0)

        def load() -> None:
            LocalBackend(str(root)).load(ObjectType.INDEX, "ab" * 32)

        def lock() -> None:
            LocalBackend(str(root)).save(ObjectType.LOCK, "cd" * 16, b"lock")

        status, message = _as_nobody(load)
        assert status == "error" and message.startswith("PermanentError: cannot access index/abab"), message
        assert ": it belongs to root, and tuckbox runs as nobody; run every command on this repository as one " \
               f"user, or give it back to nobody: chown -R nobody {root} (as root)" in message
        status, message = _as_nobody(lock)
        assert status == "error" and ": its directory belongs to root, and tuckbox runs as nobody" in message
        # the user's own object that the user cannot read (mode 000): no word about owners
        os.chown(root / "locks", NOBODY, NOBODY)
        (root / "locks" / ("ef" * 16)).write_bytes(b"x")
        os.chown(root / "locks" / ("ef" * 16), NOBODY, NOBODY)
        (root / "locks" / ("ef" * 16)).chmod(0)
        status, message = _as_nobody(lambda: LocalBackend(str(root)).load(ObjectType.LOCK, "ef" * 16))
        assert status == "error" and message.endswith("Permission denied"), message
    finally:
        shutil.rmtree(d)


def test_a_read_only_file_system_and_a_quota_say_what_they_are(tmp_path: Path) -> None:
    backend = LocalBackend(str(tmp_path / "repo"))
    path = str(tmp_path / "repo" / "locks" / "x")
    e = backend._fail(OSError(errno.EROFS, os.strerror(errno.EROFS), path), "locks/x", ObjectType.LOCK)
    assert isinstance(e, PermanentError)
    assert "cannot write locks/x in" in str(e) and "mounted read-only; remount it read-write" in str(e)
    e = backend._fail(OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), path), "locks/x", ObjectType.LOCK)
    assert isinstance(e, NoSpace) and "disk quota exceeded" in str(e) and "raise the quota" in str(e)
