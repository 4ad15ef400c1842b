"""The WebDAV backend against a real WebDAV server (rclone serve webdav, scripts/servers/rclone.sh)."""

from __future__ import annotations

import os
import uuid

import httpx
import pytest

from tuckbox.backends import open_backend
from tuckbox.backends.webdav import WebDAVBackend
from tuckbox.errors import ObjectExists, ObjectNotFound, PermanentError, TransientError, UsageError
from tuckbox.testing.conformance import CONFORMANCE_CHECKS
from tuckbox.testing.servers import server_env
from tuckbox.types import ObjectType

pytestmark = pytest.mark.servers

NAME = "ab" + "0" * 62


@pytest.fixture
def dav() -> dict[str, str]:
    return server_env("rclone-webdav")


def _repo_url(dav: dict[str, str]) -> str:
    base = dav["WEBDAV_URL"].rstrip("/")
    return f"webdav+{base}/t-{uuid.uuid4().hex}/repo"


def _open(dav: dict[str, str], url: str | None = None, password: str | None = None) -> WebDAVBackend:
    b = open_backend(
        url or _repo_url(dav),
        {"webdav.user": dav["WEBDAV_USER"], "webdav.password": password or dav["WEBDAV_PASSWORD"]},
    )
    assert isinstance(b, WebDAVBackend)
    return b


@pytest.fixture
def fresh_backend(dav):
    b = _open(dav)
    assert not b.exists()
    b.create()
    assert b.exists()
    yield b
    b.close()


@pytest.mark.parametrize("check", CONFORMANCE_CHECKS, ids=lambda c: c.__name__)
def test_conformance(check, fresh_backend):
    check(fresh_backend)


def test_wrong_password_is_permanent_and_secret_free(dav):
    b = _open(dav, password="not-the-password")
    try:
        with pytest.raises(PermanentError) as e:
            b.exists()
        assert "not-the-password" not in str(e.value)
        assert dav["WEBDAV_PASSWORD"] not in str(e.value)
        with pytest.raises(PermanentError):
            b.save(ObjectType.INDEX, NAME, b"x")
    finally:
        b.close()


def test_credentials_from_environment(dav, monkeypatch):
    monkeypatch.setenv("TUCKBOX_WEBDAV_USER", dav["WEBDAV_USER"])
    monkeypatch.setenv("TUCKBOX_WEBDAV_PASSWORD", dav["WEBDAV_PASSWORD"])
    b = open_backend(_repo_url(dav), {})
    try:
        b.create()
        b.save(ObjectType.KEY, NAME, b"k")
        assert b.load(ObjectType.KEY, NAME) == b"k"
    finally:
        b.close()


def test_secrets_never_in_location_or_repr(dav):
    b = _open(dav)
    try:
        for text in (b.location, str(b.location), repr(b)):
            assert dav["WEBDAV_PASSWORD"] not in text
        assert b.location.startswith("webdav+http://127.0.0.1:")
    finally:
        b.close()


def test_password_in_url_refused(dav):
    base = dav["WEBDAV_URL"].replace("http://", "")
    with pytest.raises(UsageError) as e:
        open_backend(f"webdav+http://user:hunter2@{base}repo", {})
    assert "hunter2" not in str(e.value)


def test_objects_are_plain_files_and_no_temporaries_remain(dav, fresh_backend):
    b = fresh_backend
    pack = "3f" + "1" * 62
    b.save(ObjectType.PACK, pack, b"data")
    with pytest.raises(ObjectExists):
        b.save(ObjectType.PACK, pack, b"other")
    # read it back over plain HTTP at the documented layout path
    url = b.location.replace("webdav+", "") + f"/data/3f/{pack}"
    r = httpx.get(url, auth=(dav["WEBDAV_USER"], dav["WEBDAV_PASSWORD"]))
    assert r.status_code == 200 and r.content == b"data"
    r = httpx.request(
        "PROPFIND", url.rsplit("/", 1)[0] + "/", headers={"Depth": "1"}, auth=(dav["WEBDAV_USER"], dav["WEBDAV_PASSWORD"])
    )
    assert ".tmp-" not in r.text


def test_load_past_end_and_zero_length(fresh_backend):
    b = fresh_backend
    b.save(ObjectType.INDEX, NAME, b"0123456789")
    assert b.load(ObjectType.INDEX, NAME, 10) == b""
    assert b.load(ObjectType.INDEX, NAME, 4, 0) == b""
    assert b.load(ObjectType.INDEX, NAME, 8, 100) == b"89"
    with pytest.raises(ObjectNotFound):
        b.load(ObjectType.INDEX, "cd" + "0" * 62, 4, 0)


def test_unreachable_server_is_transient(dav):
    b = open_backend("webdav+http://127.0.0.1:9/repo", {})
    try:
        with pytest.raises(TransientError):
            b.exists()
    finally:
        b.close()


def test_a_server_that_is_down_is_named_with_what_to_do():
    """A WebDAV server that is down: the error said 'network error talking to the WebDAV server ...
    (ConnectError)', naming no action. It names the address (never the user or password), the reason and what
    to check."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    b = open_backend(f"webdav+http://ann@127.0.0.1:{port}/repo", {"webdav.password": "hunter2-secret"})
    try:
        with pytest.raises(TransientError) as info:
            b.exists()
    finally:
        b.close()
    msg = str(info.value)
    assert f"cannot connect to the WebDAV server at webdav+http://127.0.0.1:{port}/repo" in msg, msg
    assert "Connection refused" in msg and "check that the server is up" in msg, msg
    assert "hunter2" not in msg and "ann@" not in msg


def test_https_to_a_plain_http_server_is_permanent_and_says_why(dav):
    """webdav+https:// to a server that speaks plain HTTP: every attempt fails the same handshake; it was
    retried for a minute and reported as "network error ... (ConnectError)"."""
    host = dav["WEBDAV_URL"].split("://", 1)[1].rstrip("/")
    b = open_backend(f"webdav+https://{host}/nothing", {"webdav.user": dav["WEBDAV_USER"], "webdav.password": "x"})
    try:
        with pytest.raises(PermanentError, match="webdav[+]http://") as info:
            b.exists()
    finally:
        b.close()
    assert "TLS" in str(info.value)


def test_upload_throughput(fresh_backend, record_property):
    """64 MiB as four 16 MiB objects; the rate is printed for the report."""
    import time

    if os.environ.get("TUCKBOX_CONFORMANCE_BIG", "1") == "0":
        pytest.skip("big objects disabled")
    blob = os.urandom(16 << 20)
    t0 = time.monotonic()
    for i in range(4):
        fresh_backend.save(ObjectType.PACK, f"{i:02x}" + "e" * 62, blob)
    secs = time.monotonic() - t0
    record_property("webdav_upload_mib_per_s", round(64 / secs, 1))
    print(f"\nWebDAV (rclone serve webdav): 64 MiB uploaded in {secs:.1f} s = {64 / secs:.1f} MiB/s")


def test_writers_racing_to_create_one_directory(dav):
    """Several clients save packs into the same new shard directory at the same instant: each sends MKCOL
    for it, and rclone's server answers 423 (Locked) to some while another one creates it; every save must
    still succeed (seen as a rare failure of the concurrent-writers conformance check in CI)."""
    import threading

    url = _repo_url(dav)
    setup = _open(dav, url)
    setup.create()
    clients = [_open(dav, url) for _ in range(6)]
    try:
        for rnd in range(20):
            shard = f"{rnd:02x}"
            names = [shard + f"{rnd:02x}{k:02x}" + "0" * 58 for k in range(len(clients))]
            barrier = threading.Barrier(len(clients))
            errors: list[BaseException] = []

            def save(client: WebDAVBackend, name: str) -> None:
                try:
                    barrier.wait()
                    client.save(ObjectType.PACK, name, b"x" * 1000)
                except BaseException as e:  # noqa: BLE001 - reported below
                    errors.append(e)

            threads = [threading.Thread(target=save, args=(c, n)) for c, n in zip(clients, names)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not errors, (rnd, errors)
            assert {i.name for i in setup.list(ObjectType.PACK) if i.name[:2] == shard} == set(names)
    finally:
        for c in clients + [setup]:
            c.close()
