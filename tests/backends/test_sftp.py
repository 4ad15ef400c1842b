"""The SFTP backend against a real OpenSSH sshd (scripts/servers/sshd.sh)."""

from __future__ import annotations

import os
import posixpath
import shutil
import time
import uuid

import pytest

from tuckbox.backends import open_backend
from tuckbox.backends import sftp as sftp_module
from tuckbox.backends.sftp import SFTPBackend
from tuckbox.errors import ObjectExists, PermanentError, TransientError, UsageError
from tuckbox.testing.conformance import CONFORMANCE_CHECKS
from tuckbox.testing.servers import server_env
from tuckbox.types import ObjectType

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def sshd() -> dict[str, str]:
    return server_env("sshd")


def _url(env: dict[str, str], sub: str) -> str:
    root = env["SFTP_ROOT"]
    path = posixpath.join(root if root.startswith("/") else "/" + root, sub)
    return f"sftp://{env['SFTP_USER']}@{env['SFTP_HOST']}:{env['SFTP_PORT']}{path}"


def _options(env: dict[str, str], **extra: str) -> dict[str, str]:
    opts = {"sftp.identity": env["SFTP_IDENTITY"], "sftp.known_hosts": env["SFTP_KNOWN_HOSTS"], "sftp.config": os.devnull}
    opts.update(extra)
    return opts


@pytest.fixture
def fresh_backend(sshd):
    b = open_backend(_url(sshd, f"t-{uuid.uuid4().hex}"), _options(sshd))
    assert isinstance(b, SFTPBackend)
    assert not b.exists()
    b.create()
    assert b.exists()
    yield b
    b.close()
    _cleanup(sshd, b)


def _cleanup(env: dict[str, str], b: SFTPBackend) -> None:
    """Free the server's disk for the next run (the served directory is local)."""
    local = env.get("SFTP_LOCAL_ROOT")
    if local:
        shutil.rmtree(os.path.join(local, posixpath.relpath(b.root, env["SFTP_ROOT"])), ignore_errors=True)


@pytest.mark.parametrize("check", CONFORMANCE_CHECKS, ids=lambda c: c.__name__)
def test_conformance(check, fresh_backend):
    check(fresh_backend)


def test_layout_directories_created(sshd, fresh_backend):
    local = sshd.get("SFTP_LOCAL_ROOT")
    if not local:
        pytest.skip("server root not visible locally")
    root = os.path.join(local, posixpath.relpath(fresh_backend.root, sshd["SFTP_ROOT"]))
    assert os.path.isdir(os.path.join(root, "data", "00"))
    assert os.path.isdir(os.path.join(root, "data", "ff"))
    for d in ("keys", "index", "snapshots", "locks"):
        assert os.path.isdir(os.path.join(root, d))
    fresh_backend.save(ObjectType.PACK, "ab" * 32, b"pack")
    assert os.listdir(os.path.join(root, "data", "ab")) == ["ab" * 32]  # no temporary file left behind
    with pytest.raises(ObjectExists):
        fresh_backend.save(ObjectType.PACK, "ab" * 32, b"other")
    assert os.listdir(os.path.join(root, "data", "ab")) == ["ab" * 32]


def test_unknown_host_key_refused(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    b = open_backend(_url(sshd, "nothing"), _options(sshd, **{"sftp.known_hosts": str(empty)}))
    try:
        with pytest.raises(PermanentError) as info:
            b.exists()
    finally:
        b.close()
    msg = str(info.value)
    assert "host key" in msg and sshd["SFTP_HOST"] in msg and "known_hosts" in msg
    assert "\n" not in msg


def test_wrong_host_key_refused(sshd, tmp_path):
    other = tmp_path / "known_hosts"
    # a syntactically valid but different ed25519 key for the same host:port
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().split()[:2]
    other.write_text(f"[{sshd['SFTP_HOST']}]:{sshd['SFTP_PORT']} {' '.join(key)}\n")
    b = open_backend(_url(sshd, "nothing"), _options(sshd, **{"sftp.known_hosts": str(other)}))
    try:
        with pytest.raises(PermanentError, match="host key"):
            b.exists()
    finally:
        b.close()


def test_wrong_key_is_permanent(sshd, tmp_path):
    import asyncssh

    k = tmp_path / "id_other"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(k))
    b = SFTPBackend(
        sshd["SFTP_HOST"], "/x", port=int(sshd["SFTP_PORT"]), username=sshd["SFTP_USER"],
        identity=str(k), known_hosts=sshd["SFTP_KNOWN_HOSTS"], config=os.devnull,
    )
    t0 = time.monotonic()
    try:
        with pytest.raises(PermanentError, match="refused"):
            b.exists()
    finally:
        b.close()
    assert time.monotonic() - t0 < 30


@pytest.mark.parametrize("setting", ["sftp.identity", "sftp.known_hosts", "sftp.config"])
def test_missing_local_ssh_file_is_permanent_and_named(sshd, tmp_path, setting):
    missing = str(tmp_path / "no-such-file")
    b = open_backend(_url(sshd, "nothing"), _options(sshd, **{setting: missing}))
    t0 = time.monotonic()
    try:
        with pytest.raises(PermanentError) as info:
            b.exists()
    finally:
        b.close()
    assert missing in str(info.value) and setting in str(info.value)
    assert time.monotonic() - t0 < 10  # not retried as if the server were down


def test_full_disk_is_permanent_and_says_so(fresh_backend, monkeypatch):
    """OpenSSH's sftp-server reports ENOSPC as a bare "Failure": it was retried for a minute and a half and
    then shown as "SFTP error ... Failure". The server's free space (statvfs@openssh.com) tells them apart."""
    import asyncssh

    async def no_room(self, data, offset=None):
        raise asyncssh.SFTPFailure("Failure")

    real_statvfs = asyncssh.SFTPClient.statvfs

    async def nearly_full(self, path):
        vfs = await real_statvfs(self, path)
        vfs.bavail, vfs.frsize = 3, 4096  # 12 KiB free
        return vfs

    monkeypatch.setattr(asyncssh.SFTPClientFile, "write", no_room)
    monkeypatch.setattr(asyncssh.SFTPClient, "statvfs", nearly_full)
    with pytest.raises(PermanentError, match="no space left") as info:
        fresh_backend.save(ObjectType.PACK, "ab" + "0" * 62, b"x" * (64 << 10))
    assert "free some space" in str(info.value)
    monkeypatch.setattr(asyncssh.SFTPClient, "statvfs", real_statvfs)  # room enough: a failure stays transient
    with pytest.raises(TransientError):
        fresh_backend.save(ObjectType.PACK, "ab" + "1" * 62, b"x" * (64 << 10))


def test_connection_refused_is_transient(sshd):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    b = SFTPBackend("127.0.0.1", "/x", port=port, known_hosts=sshd["SFTP_KNOWN_HOSTS"], config=os.devnull)
    try:
        with pytest.raises(TransientError) as info:
            b.exists()
    finally:
        b.close()
    # the one line a user sees once the retries are used up: the server, the storage, and what to do
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "sftp://" in message, message
    assert "check that the server is up and reachable" in message, message


def test_password_in_url_refused():
    with pytest.raises(UsageError) as info:
        open_backend("sftp://me:hunter2@example.invalid/repo", {})
    assert "hunter2" not in str(info.value)


def test_ssh_config_alias(sshd, tmp_path):
    cfg = tmp_path / "ssh_config"
    cfg.write_text(
        "Host tuckbox-test-alias\n"
        f"  HostName {sshd['SFTP_HOST']}\n  Port {sshd['SFTP_PORT']}\n  User {sshd['SFTP_USER']}\n"
        f"  IdentityFile {sshd['SFTP_IDENTITY']}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {sshd['SFTP_KNOWN_HOSTS']}\n"
    )
    root = sshd["SFTP_ROOT"]
    path = posixpath.join(root if root.startswith("/") else "/" + root, f"alias-{uuid.uuid4().hex}")
    b = open_backend(f"sftp://tuckbox-test-alias{path}", {"sftp.config": str(cfg)})
    try:
        b.create()
        b.save(ObjectType.CONFIG, "config", b"cfg")
        assert b.load(ObjectType.CONFIG, "config") == b"cfg"
    finally:
        b.close()
        _cleanup(sshd, b)


def test_repr_and_messages_have_no_secret(sshd, monkeypatch):
    monkeypatch.setenv("TUCKBOX_SFTP_PASSWORD", "s3cr3t-pw-value")
    b = open_backend(_url(sshd, f"t-{uuid.uuid4().hex}"), _options(sshd))
    try:
        assert "s3cr3t" not in repr(b) and "s3cr3t" not in b.location
        b.create()
        try:
            b.load(ObjectType.INDEX, "00" * 32)
        except Exception as e:  # noqa: BLE001
            assert "s3cr3t" not in str(e)
    finally:
        b.close()
        _cleanup(sshd, b)


def test_reconnects_after_connection_loss(fresh_backend):
    fresh_backend.save(ObjectType.INDEX, "11" * 32, b"one")
    # kill the SSH connection under the backend: the next call fails transiently or reconnects
    conn = fresh_backend._conn
    assert conn is not None
    fresh_backend._loop.loop.call_soon_threadsafe(conn.abort)
    time.sleep(0.2)
    for _ in range(3):
        try:
            assert fresh_backend.load(ObjectType.INDEX, "11" * 32) == b"one"
            break
        except TransientError:
            continue
    else:
        raise AssertionError("did not reconnect")


def _threads() -> list[str]:
    import threading

    return sorted(t.name for t in threading.enumerate() if t.name.startswith("tuckbox-sftp"))


def test_resume_connects_in_the_background_and_suspend_waits_for_it(fresh_backend, monkeypatch):
    """After a fork the parent's storage connects again in the background (``resume``): the connection
    is there before the next operation asks. A suspend while that connection is being made (a fork right
    after) waits for it and closes it: no thread and no connection are left behind."""
    fresh_backend.save(ObjectType.INDEX, "22" * 32, b"two")
    fresh_backend.suspend()
    assert fresh_backend._conn is None and _threads() == []
    fresh_backend.resume()
    deadline = time.monotonic() + 20
    while fresh_backend._conn is None and time.monotonic() < deadline:
        time.sleep(0.01)
    first = fresh_backend._conn
    assert first is not None and not first.is_closed()
    assert fresh_backend.load(ObjectType.INDEX, "22" * 32) == b"two"
    assert fresh_backend._conn is first  # the operation used the connection made in the background
    made = []
    real_connect = sftp_module.asyncssh.connect

    async def connect(*args, **kwargs):
        made.append(await real_connect(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(sftp_module.asyncssh, "connect", connect)
    fresh_backend.suspend()
    fresh_backend.resume()
    fresh_backend.suspend()  # at once: the handshake is still under way
    assert fresh_backend._conn is None and _threads() == []
    assert first.is_closed() and len(made) == 1 and made[0].is_closed()
    assert fresh_backend.load(ObjectType.INDEX, "22" * 32) == b"two"


def test_closed_backend_refuses_quickly(sshd):
    b = open_backend(_url(sshd, "closed"), _options(sshd))
    b.close()
    t0 = time.monotonic()
    with pytest.raises(UsageError, match="closed"):
        b.exists()
    assert time.monotonic() - t0 < 1


def test_url_forms():
    b = SFTPBackend.from_url("sftp://alice@example.invalid:2200/srv/repo/", {})
    try:
        assert (b.host, b.port, b.username, b.root) == ("example.invalid", 2200, "alice", "/srv/repo")
        assert b.location == "sftp://alice@example.invalid:2200/srv/repo/"
    finally:
        b.close()
    for url, root in [("sftp://h/~/backups", "backups"), ("sftp://h/~", "."), ("sftp://h", ".")]:
        b = SFTPBackend.from_url(url, {})
        assert b.root == root and b.port is None and b.username is None
        b.close()
    with pytest.raises(UsageError):
        SFTPBackend.from_url("sftp:///no-host", {})
    b = SFTPBackend.from_url("sftp://bob@[::1]:2222/srv/repo", {})
    try:
        assert (b.host, b.port) == ("::1", 2222)
        assert b._server() == "[::1]:2222"  # (messages named it "::1:2222")
        assert "[::1]:2222" in str(b._map(ConnectionRefusedError(111, "Connection refused"), "config"))
    finally:
        b.close()
