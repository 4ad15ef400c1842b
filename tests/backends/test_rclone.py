"""The rclone: backend against a real rclone remote (scripts/servers/rclone.sh writes its config)."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tuckbox.backends import open_backend
from tuckbox.backends.rclone import RcloneBackend, redact_remote, split_spec
from tuckbox.errors import ObjectExists, PermanentError, TransientError, UsageError
from tuckbox.testing.conformance import CONFORMANCE_CHECKS
from tuckbox.testing.servers import server_env
from tuckbox.types import ObjectType

pytestmark = pytest.mark.servers

NAME = "ab" + "0" * 62


@pytest.fixture
def rc() -> dict[str, str]:
    return server_env("rclone")


def _options(rc: dict[str, str]) -> dict[str, str]:
    return {"rclone.binary": rc["RCLONE_BIN"], "rclone.config": rc["RCLONE_CONFIG"]}


def _fresh_path() -> str:
    return f"t-{uuid.uuid4().hex}/repo"


@pytest.fixture
def fresh_backend(rc):
    b = open_backend(f"rclone:{rc['RCLONE_REMOTE']}:{_fresh_path()}", _options(rc))
    assert isinstance(b, RcloneBackend)
    assert not b.exists()
    b.create()
    assert b.exists()
    yield b
    b.close()


@pytest.mark.parametrize("check", CONFORMANCE_CHECKS, ids=lambda c: c.__name__)
def test_conformance(check, fresh_backend):
    check(fresh_backend)


def test_objects_land_in_the_remote_with_the_standard_layout(rc):
    path = _fresh_path()
    b = open_backend(f"rclone:{rc['RCLONE_REMOTE']}:{path}", _options(rc))
    try:
        b.create()
        pack = "3f" + "1" * 62
        b.save(ObjectType.PACK, pack, b"data")
        b.save(ObjectType.CONFIG, "config", b"{}")
        with pytest.raises(ObjectExists):
            b.save(ObjectType.PACK, pack, b"other")
    finally:
        b.close()
    root = Path(rc["RCLONE_REMOTE_ROOT"]) / path
    assert (root / "data" / "3f" / pack).read_bytes() == b"data"
    assert (root / "config").read_bytes() == b"{}"
    assert not [p for p in root.rglob(".tmp-*")]


def test_close_stops_the_server_and_credentials_stay_out_of_argv(rc):
    b = open_backend(f"rclone:{rc['RCLONE_REMOTE']}:{_fresh_path()}", _options(rc))
    assert isinstance(b, RcloneBackend)
    proc = b._server.proc
    assert proc is not None and proc.poll() is None
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
    assert b._server.password.encode() not in b"".join(cmdline)
    assert b"127.0.0.1:0" in cmdline
    assert b._server.password not in repr(b) and b._server.password not in b.location
    b.close()
    assert proc.poll() is not None
    b.close()  # idempotent


def test_dropped_backend_stops_its_server(rc):
    b = open_backend(f"rclone:{rc['RCLONE_REMOTE']}:{_fresh_path()}", _options(rc))
    proc = b._server.proc
    del b
    import gc

    gc.collect()
    deadline = time.monotonic() + 10
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is not None


def test_killed_process_leaves_no_server_behind(rc, tmp_path):
    """A tuckbox killed with SIGKILL (or crashing) runs no finalizer: its rclone serve, with the credentials
    in its environment, used to keep running for good, one more for every such run."""
    import signal
    import subprocess
    import sys

    url = f"rclone:{rc['RCLONE_REMOTE']}:{_fresh_path()}"
    script = (
        "import sys, time\n"
        "from tuckbox.backends import open_backend\n"
        f"b = open_backend({url!r}, {_options(rc)!r})\n"
        "print(b._server.proc.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    import tuckbox

    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(tuckbox.__file__))}  # this tuckbox
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        rclone_pid = int(child.stdout.readline())
    finally:
        child.send_signal(signal.SIGKILL)  # our own child, by pid
        child.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{rclone_pid}").exists() and time.monotonic() < deadline:
        try:
            if Path(f"/proc/{rclone_pid}/stat").read_text().split()[2] == "Z":
                break  # ended; a zombie until init reaps it
        except OSError:
            break
        time.sleep(0.05)
    alive = Path(f"/proc/{rclone_pid}/stat").exists() and Path(f"/proc/{rclone_pid}/stat").read_text().split()[2] != "Z"
    if alive:
        os.kill(rclone_pid, signal.SIGTERM)  # the server this test started, by pid
    assert not alive, "rclone serve outlived the killed process"


def test_unknown_remote_is_a_clear_error(rc):
    with pytest.raises(PermanentError) as e:
        open_backend("rclone:nosuchremote:x/y", _options(rc))
    assert "nosuchremote" in str(e.value)


def test_inline_credentials_refused():
    with pytest.raises(UsageError) as e:
        open_backend("rclone::s3,provider=AWS,secret_access_key=hunter2:bucket/x", {})
    assert "hunter2" not in str(e.value)
    assert redact_remote(":s3,secret_access_key=hunter2:b") == ":s3,secret_access_key=<redacted>:b"


def test_split_spec():
    assert split_spec("r:a/b/c") == ("r:a/b", "c")
    assert split_spec("r:a") == ("r:", "a")
    assert split_spec("r:") == ("r:", "")
    assert split_spec("r:/abs/p/") == ("r:/abs", "p")
    assert split_spec(":local:/x/y") == (":local:/x", "y")


def test_missing_binary_is_a_usage_error(rc, tmp_path):
    with pytest.raises(UsageError):
        open_backend(f"rclone:{rc['RCLONE_REMOTE']}:x", {"rclone.binary": str(tmp_path / "nope"), "rclone.config": rc["RCLONE_CONFIG"]})


def test_upload_throughput(fresh_backend):
    if os.environ.get("TUCKBOX_CONFORMANCE_BIG", "1") == "0":
        pytest.skip("big objects disabled")
    blob = os.urandom(16 << 20)
    t0 = time.monotonic()
    for i in range(4):
        fresh_backend.save(ObjectType.PACK, f"{i:02x}" + "e" * 62, blob)
    secs = time.monotonic() - t0
    print(f"\nrclone: (local remote via serve webdav): 64 MiB uploaded in {secs:.1f} s = {64 / secs:.1f} MiB/s")


def test_server_that_died_fails_at_once_and_says_so(rc):
    """rclone serve is tuckbox's own child on this machine: once it has ended (killed, out of memory, crashed)
    no retry brings it back, yet every call was retried for a minute (a backup: 67 s) and then blamed
    'the WebDAV server' the user never configured. Also in a process forked from the opener (a backup's pack
    process, a restore's workers), which cannot wait for the server."""
    import signal

    b = open_backend(f"rclone:{rc['RCLONE_REMOTE']}:{_fresh_path()}", _options(rc))
    try:
        b.create()
        proc = b._server.proc
        proc.send_signal(signal.SIGKILL)  # the server this test started, by its pid
        deadline = time.monotonic() + 10
        while Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # the forked process: report what the call raised, and end
            try:
                b.stat(ObjectType.PACK, NAME)
                os.write(write, b"no error")
            except BaseException as e:  # noqa: BLE001
                os.write(write, f"{type(e).__name__}: {e}".encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as f:
            in_fork = f.read().decode()
        os.waitpid(child, 0)
        assert in_fork.startswith("PermanentError: rclone, which served rclone:"), in_fork
        assert "has stopped (it is gone)" in in_fork
        t0 = time.monotonic()
        with pytest.raises(PermanentError) as e:
            b.load(ObjectType.PACK, NAME)
        assert time.monotonic() - t0 < 5
        assert "has stopped (killed by signal 9)" in str(e.value) and "run the command again" in str(e.value)
        assert b._server.password not in str(e.value)
    finally:
        b.close()


def test_remote_it_cannot_reach_is_named_with_rclones_reason(rc, tmp_path):
    """rclone answers a listing of a remote it cannot reach with 405: the error said only 'the WebDAV server
    at rclone:... answered 405'. rclone's own log line says why."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    conf = tmp_path / "rclone.conf"
    conf.write_text(f"[gone]\ntype = webdav\nurl = http://127.0.0.1:{port}/\nvendor = other\n")
    b = open_backend("rclone:gone:repo", {"rclone.binary": rc["RCLONE_BIN"], "rclone.config": str(conf)})
    try:
        with pytest.raises(TransientError) as e:  # (a server that is down: retried, as SFTP and S3 are)
            b.exists()
        msg = str(e.value)
        assert "rclone cannot reach the remote of rclone:gone:repo" in msg, msg
        assert "connection refused" in msg and f"127.0.0.1:{port}" in msg
        assert "check that the remote's server is up" in msg
    finally:
        b.close()


def test_a_remote_that_went_down_is_neither_not_found_nor_retried_for_minutes(rc, tmp_path):
    """rclone answers 404 to a PUT or GET when it cannot reach its remote: tuckbox said "not found" (a listing
    read as empty), and rclone retried every request 10 times under tuckbox's own retries, so a backup whose
    remote went down gave up only after 5-13 minutes. Now each answer is quick and a retryable failure
    that names rclone's reason."""
    import socket

    remote_root = tmp_path / "remote"
    (remote_root / "repo").mkdir(parents=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # a WebDAV remote served by an rclone of the test's own, then stopped
    remote = subprocess.Popen(
        [rc["RCLONE_BIN"], "serve", "webdav", str(remote_root), "--addr", f"127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    conf = tmp_path / "rclone.conf"
    conf.write_text(f"[far]\ntype = webdav\nurl = http://127.0.0.1:{port}/\nvendor = other\n")
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        b = open_backend("rclone:far:repo", {"rclone.binary": rc["RCLONE_BIN"], "rclone.config": str(conf)})
        try:
            b.create()
            b.save(ObjectType.PACK, NAME, b"stored")
            remote.terminate()
            remote.wait(10)
            calls = {
                "save": lambda: b.save(ObjectType.PACK, "cd" + "1" * 62, b"x" * 1000),
                "load": lambda: b.load(ObjectType.PACK, NAME, 1, 3),
                "list": lambda: list(b.list(ObjectType.SNAPSHOT)),
            }
            for what, call in calls.items():
                started = time.monotonic()
                with pytest.raises(TransientError) as e:
                    call()
                assert time.monotonic() - started < 20, what  # (rclone's own retries took minutes)
                msg = str(e.value)
                assert "rclone cannot reach the remote of rclone:far:repo" in msg, (what, msg)
                assert "connection refused" in msg, (what, msg)
        finally:
            b.close()
    finally:
        if remote.poll() is None:
            remote.kill()
            remote.wait(10)
