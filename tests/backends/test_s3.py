"""The S3 backend against real S3 servers: SeaweedFS and rclone serve s3."""

from __future__ import annotations

import hashlib
import os
import time
import uuid

import boto3
import pytest
from botocore.config import Config

from tuckbox.backends import open_backend
from tuckbox.backends.s3 import S3Backend, _Body
from tuckbox.errors import ObjectExists, ObjectNotFound, PermanentError, TransientError, UsageError
from tuckbox.testing.conformance import CONFORMANCE_CHECKS
from tuckbox.testing.servers import server_env
from tuckbox.types import ObjectType

pytestmark = pytest.mark.servers

SERVERS = ["seaweedfs", "rclone-s3"]


@pytest.fixture(params=SERVERS)
def s3env(request, monkeypatch) -> dict[str, str]:
    env = server_env(request.param)
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.setenv(k, env[k])
    for k in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    return env


def _open(env: dict[str, str], **extra: str) -> S3Backend:
    opts = {"s3.endpoint": env["S3_ENDPOINT"]}
    opts.update(extra)
    b = open_backend(f"s3://{env['S3_BUCKET']}/t-{uuid.uuid4().hex}", opts)
    assert isinstance(b, S3Backend)
    return b


def _raw_client(env: dict[str, str]):
    return boto3.client(
        "s3", endpoint_url=env["S3_ENDPOINT"], region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required"),
    )


def _purge(env: dict[str, str], prefix: str) -> None:
    """Delete a test's objects so repeated runs do not fill the server's disk."""
    raw = _raw_client(env)
    try:
        for page in raw.get_paginator("list_objects_v2").paginate(Bucket=env["S3_BUCKET"], Prefix=prefix + "/"):
            keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if keys:
                raw.delete_objects(Bucket=env["S3_BUCKET"], Delete={"Objects": keys, "Quiet": True})
    finally:
        raw.close()


@pytest.fixture
def fresh_backend(s3env):
    b = _open(s3env)
    b.create()
    yield b
    b.close()
    _purge(s3env, b.prefix)


@pytest.mark.parametrize("check", CONFORMANCE_CHECKS, ids=lambda c: c.__name__)
def test_conformance(check, fresh_backend):
    check(fresh_backend)


@pytest.mark.parametrize("mode", ["multipart", "no-conditional", "multipart-no-conditional"])
def test_conformance_variants(s3env, mode):
    """Multipart uploads and the HEAD-then-PUT fallback, through the core checks."""
    extra: dict[str, str] = {}
    if "multipart" in mode:
        extra.update({"s3.multipart-threshold": "6MiB", "s3.part-size": "5MiB"})
    if "no-conditional" in mode:
        extra["s3.conditional-write"] = "false"
    b = _open(s3env, **extra)
    try:
        b.create()
        data = os.urandom(1 << 20) * 13 + b"tail"  # 13 MiB + 4: three parts
        name = hashlib.sha256(data).hexdigest()
        b.save(ObjectType.PACK, name, data)
        assert b.stat(ObjectType.PACK, name).size == len(data)
        assert hashlib.sha256(b.load(ObjectType.PACK, name)).digest() == hashlib.sha256(data).digest()
        assert b.load(ObjectType.PACK, name, (5 << 20) - 3, 10) == data[(5 << 20) - 3 : (5 << 20) + 7]
        with pytest.raises(ObjectExists):
            b.save(ObjectType.PACK, name, b"x" * len(data))
        with pytest.raises(ObjectExists):
            b.save(ObjectType.PACK, name, b"small")
        assert b.load(ObjectType.PACK, name, len(data) - 4) == b"tail"
        for check in CONFORMANCE_CHECKS:
            if check.__name__ in ("check_big_object", "check_list_many"):
                continue
            sub = _open(s3env, **extra)
            sub.create()
            check(sub)
            sub.close()
            _purge(s3env, sub.prefix)
    finally:
        b.close()
        _purge(s3env, b.prefix)


def test_conditional_write_detected(fresh_backend):
    fresh_backend.save(ObjectType.LOCK, "ab" * 32, b"x")
    assert fresh_backend._conditional in (True, False)
    # the probe object is gone and never listed
    assert [i.name for i in fresh_backend.list(ObjectType.LOCK)] == ["ab" * 32]


def test_exists_and_create(s3env):
    b = _open(s3env)
    try:
        assert not b.exists()
        b.create()
        b.save(ObjectType.CONFIG, "config", b"{}")
        assert b.exists()
    finally:
        b.close()
        _purge(s3env, b.prefix)


def test_missing_bucket(s3env):
    b = S3Backend(f"no-such-bucket-{uuid.uuid4().hex[:12]}", "x", endpoint=s3env["S3_ENDPOINT"])
    try:
        assert not b.exists()
        with pytest.raises((PermanentError, ObjectNotFound)):
            b.load(ObjectType.CONFIG, "config")
    finally:
        b.close()


def test_wrong_credentials_fail_fast(s3env, monkeypatch):
    secret = "wrong-secret-" + uuid.uuid4().hex
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    b = _open(s3env)
    t0 = time.monotonic()
    try:
        for call in (
            lambda: b.load(ObjectType.CONFIG, "config"),
            lambda: b.save(ObjectType.INDEX, "cd" * 32, b"data"),
            lambda: list(b.list(ObjectType.SNAPSHOT)),
            lambda: b.stat(ObjectType.INDEX, "cd" * 32),
        ):
            with pytest.raises(PermanentError) as info:
                call()
            msg = str(info.value)
            assert secret not in msg and s3env["AWS_SECRET_ACCESS_KEY"] not in msg
            assert "denied" in msg and "\n" not in msg
    finally:
        b.close()
    assert time.monotonic() - t0 < 15
    assert secret not in repr(b)


def test_unknown_access_key_fails_fast(s3env, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "NOSUCHKEY" + uuid.uuid4().hex[:8].upper())
    b = _open(s3env)
    try:
        with pytest.raises(PermanentError):
            b.save(ObjectType.INDEX, "cd" * 32, b"data")
    finally:
        b.close()


def test_no_secret_in_repr_or_messages(fresh_backend, s3env):
    secret = s3env["AWS_SECRET_ACCESS_KEY"]
    assert secret not in repr(fresh_backend) and secret not in fresh_backend.location
    with pytest.raises(ObjectNotFound) as info:
        fresh_backend.load(ObjectType.PACK, "ee" * 32)
    assert secret not in str(info.value)


def _flip_a_byte_after_signing(backend: S3Backend, operation: str, seen: list[dict[str, object]]) -> None:
    """Corrupt every upload body of ``operation`` on its way out, after botocore has signed it."""

    def tamper(request, **_):
        body = request.body
        raw = body.read() if hasattr(body, "read") else body
        if hasattr(body, "seek"):
            body.seek(0)
        if not raw or len(raw) < 1024:  # (the conditional-write probe)
            return
        seen.append(dict(request.headers))
        flipped = bytearray(raw)
        flipped[len(flipped) // 2] ^= 0x01
        request.body = bytes(flipped)

    backend._s3.meta.events.register(f"before-send.s3.{operation}", tamper)


# what the servers verify (measured; a change shows up here): SeaweedFS checks x-amz-checksum-crc32, rclone does not
VERIFIES_CRC32 = {"seaweedfs": True, "rclone-s3": False}


@pytest.mark.parametrize("checksum", ["auto", "md5"])
@pytest.mark.parametrize("multipart", [False, True], ids=["single", "multipart"])
def test_body_damaged_in_transit_is_refused(s3env, multipart, checksum, request):
    """Each upload carries a checksum the server verifies: neither SeaweedFS nor rclone checks the SHA-256
    that SigV4 signs over plain http (measured), so that one does not count."""
    server = request.node.callspec.params["s3env"]
    extra = {"s3.checksum": checksum}
    if multipart:
        extra.update({"s3.multipart-threshold": str(5 << 20), "s3.part-size": str(5 << 20)})
    b = _open(s3env, **extra)
    b.create()
    try:
        seen: list[dict[str, object]] = []
        _flip_a_byte_after_signing(b, "UploadPart" if multipart else "PutObject", seen)
        data = os.urandom((6 << 20) if multipart else 4096)
        name = hashlib.sha256(data).hexdigest()
        with pytest.raises(PermanentError):
            b.save(ObjectType.PACK, name, data)
        crc32 = not multipart and checksum == "auto" and VERIFIES_CRC32[server]
        assert seen and all(("x-amz-checksum-crc32" in h) == crc32 for h in seen)
        assert all(("Content-MD5" in h) != crc32 for h in seen)
        with pytest.raises(ObjectNotFound):
            b.load(ObjectType.PACK, name)
    finally:
        b.close()
        _purge(s3env, b.prefix)


def test_crc32_only_where_the_server_checks_it(fresh_backend, s3env, request):
    """The probe: the right CRC32 accepted and a wrong one refused, or Content-MD5; it leaves nothing behind."""
    server = request.node.callspec.params["s3env"]
    assert fresh_backend._server()[1] is VERIFIES_CRC32[server]
    data = os.urandom(100_000)
    name = hashlib.sha256(data).hexdigest()
    fresh_backend.save(ObjectType.PACK, name, data)
    assert fresh_backend.load(ObjectType.PACK, name) == data
    raw = _raw_client(s3env)
    try:
        listed = raw.list_objects_v2(Bucket=s3env["S3_BUCKET"], Prefix=fresh_backend.prefix + "/")
        keys = [o["Key"] for o in listed.get("Contents", [])]
    finally:
        raw.close()
    assert [k for k in keys if "probe" in k] == [] and len(keys) == 1


def test_probes_start_early_run_at_once_and_end_before_a_fork(fresh_backend):
    """prepare_writes starts both probes in the background (a repository opened for writing calls it before
    its key derivation); the first save then waits for their answers and probes nothing more; closing
    (as before a fork) leaves no probe thread running."""
    import threading

    puts: list[str] = []
    fresh_backend._s3.meta.events.register(
        "before-send.s3.PutObject", lambda request, **_: puts.append(request.url.rsplit("/", 1)[-1])
    )
    fresh_backend.prepare_writes()
    fresh_backend.prepare_writes()  # (a second call starts nothing more)
    assert fresh_backend._server() in {(c, k) for c in (True, False) for k in (True, False)}
    probes = [p for p in puts if p.startswith(".tuckbox-probe-")]
    assert len(probes) == 4 and len(set(probes)) == 3  # conditional write: one name twice; checksum: two names
    fresh_backend.save(ObjectType.LOCK, "cd" * 32, b"x")
    assert puts[len(probes):] == ["cd" * 32]  # the save itself, and no probe again
    fresh_backend.prepare_writes()  # answered: nothing to start
    fresh_backend.close()
    assert not [t for t in threading.enumerate() if t.name == "tuckbox-s3-probe"]
    assert [i.name for i in fresh_backend.list(ObjectType.LOCK)] == ["cd" * 32]


def test_closing_does_not_wait_long_for_a_stalled_probe(fresh_backend, monkeypatch):
    """Closing (or suspending before a fork) waits for the probes only a few seconds: on a stalled link
    one still running is left to its timeouts; its answer is taken when a save needs it."""
    import threading

    from tuckbox.backends import s3 as s3_module

    monkeypatch.setattr(s3_module, "PROBE_WAIT", 0.2)
    release = threading.Event()

    def stall(request, **_):
        if ".tuckbox-probe-" in request.url:
            release.wait(10)

    fresh_backend._s3.meta.events.register("before-send.s3.PutObject", stall)
    fresh_backend.prepare_writes()
    t0 = time.monotonic()
    fresh_backend.suspend()
    assert time.monotonic() - t0 < 2
    assert len(fresh_backend._probes) == 2
    release.set()
    fresh_backend.save(ObjectType.LOCK, "ab" * 32, b"x")
    assert fresh_backend._probes == [] and None not in (fresh_backend._conditional, fresh_backend._crc32)
    assert fresh_backend.load(ObjectType.LOCK, "ab" * 32) == b"x"


def test_probes_under_way_at_exit_still_remove_their_objects(fresh_backend, s3env):
    """A command that fails right after opening its repository (a wrong passphrase) exits while its probes
    may still be under way: at exit they are waited for (briefly), so no probe object is left behind."""
    import subprocess
    import sys

    script = f"""
import time
from tuckbox.backends import open_backend
b = open_backend({f"s3://{s3env['S3_BUCKET']}/{fresh_backend.prefix}"!r}, {{"s3.endpoint": {s3env["S3_ENDPOINT"]!r}}})
b._s3.meta.events.register("before-send.s3.DeleteObject", lambda request, **_: time.sleep(1))
b.prepare_writes()
time.sleep(0.5)  # the probe objects are written; their removal is slow
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    raw = _raw_client(s3env)
    try:
        listed = raw.list_objects_v2(Bucket=s3env["S3_BUCKET"], Prefix=fresh_backend.prefix + "/")
    finally:
        raw.close()
    assert [o["Key"] for o in listed.get("Contents", [])] == []


def test_a_failed_background_probe_fails_the_save_then_is_asked_again(fresh_backend):
    """A probe that meets an error reports it at the first save that needs its answer (here a dropped
    connection, every attempt of it), and the next save probes again."""
    from botocore.exceptions import ConnectionClosedError

    def drop_probes(request, **_):
        if ".tuckbox-probe-" in request.url:
            raise ConnectionClosedError(endpoint_url=request.url)

    fresh_backend._s3.meta.events.register("before-send.s3.PutObject", drop_probes)
    fresh_backend.prepare_writes()
    with pytest.raises(TransientError):
        fresh_backend.save(ObjectType.LOCK, "ef" * 32, b"x")
    assert fresh_backend._probes == [] and None in (fresh_backend._conditional, fresh_backend._crc32)
    with pytest.raises(ObjectNotFound):
        fresh_backend.stat(ObjectType.LOCK, "ef" * 32)
    fresh_backend._s3.meta.events.unregister("before-send.s3.PutObject", drop_probes)
    fresh_backend.save(ObjectType.LOCK, "ef" * 32, b"x")
    assert fresh_backend._conditional is not None and fresh_backend._crc32 is not None
    assert fresh_backend.load(ObjectType.LOCK, "ef" * 32) == b"x"


@pytest.mark.parametrize("sign", [None, "true"], ids=["default", "signed"])
@pytest.mark.parametrize("multipart", [False, True], ids=["single", "multipart"])
def test_bodies_unsigned_unless_asked(s3env, sign, multipart):
    """By default no SHA-256 of the body goes into the signature (UNSIGNED-PAYLOAD), and both servers take
    the upload; with s3.sign-payload=true the header is the body's SHA-256."""
    extra = {"s3.sign-payload": sign} if sign else {}
    if multipart:
        extra.update({"s3.multipart-threshold": str(5 << 20), "s3.part-size": str(5 << 20)})
    b = _open(s3env, **extra)
    b.create()
    sent: list[tuple[object, bytes]] = []

    def record(request, **kwargs):
        body = request.body
        if hasattr(body, "read"):  # a file-like object (the backend's own, or botocore's BytesIO)
            pos = body.tell()
            body, _ = bytes(body.read()), body.seek(pos)
        sent.append((request.headers.get("X-Amz-Content-SHA256"), bytes(body or b"")))

    operation = "UploadPart" if multipart else "PutObject"
    b._s3.meta.events.register(f"before-send.s3.{operation}", record)
    try:
        data = os.urandom((6 << 20) if multipart else 100_000)
        name = hashlib.sha256(data).hexdigest()
        b.save(ObjectType.PACK, name, data)
        assert b.load(ObjectType.PACK, name) == data
        mine = [(h.decode() if isinstance(h, bytes) else h, body) for h, body in sent if len(body) > 1000 and body in data]
        assert len(mine) == (2 if multipart else 1)
        for header, body in mine:
            assert header == (hashlib.sha256(body).hexdigest() if sign else "UNSIGNED-PAYLOAD")
    finally:
        b.close()
        _purge(s3env, b.prefix)
    with pytest.raises(UsageError, match="s3.sign-payload"):
        _open(s3env, **{"s3.sign-payload": "maybe"})


def test_upload_retried_after_a_dropped_connection(fresh_backend):
    """A body read part-way by an attempt whose connection drops is sent again whole: botocore rewinds
    the backend's zero-copy body (``_Body``) before retrying."""
    from botocore.exceptions import ConnectionClosedError

    attempts: list[int] = []

    def drop_first(request, **_):
        if not isinstance(request.body, _Body) or len(request.body) != len(data):
            return  # the backend's probes
        attempts.append(request.body.tell())
        if len(attempts) == 1:
            request.body.read(len(request.body) // 2)  # half of it went out, then the connection broke
            raise ConnectionClosedError(endpoint_url=request.url)

    fresh_backend._s3.meta.events.register("before-send.s3.PutObject", drop_first)
    data = os.urandom(3 << 20)
    name = hashlib.sha256(data).hexdigest()
    fresh_backend.save(ObjectType.PACK, name, memoryview(data))
    assert attempts == [0, 0]
    assert fresh_backend.load(ObjectType.PACK, name) == data


def test_checksum_option_is_checked(s3env):
    with pytest.raises(UsageError, match="s3.checksum"):
        _open(s3env, **{"s3.checksum": "sha1"})


def test_unreachable_endpoint_is_transient(s3env):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    b = S3Backend(s3env["S3_BUCKET"], "x", endpoint=f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(TransientError):
            b.stat(ObjectType.INDEX, "cd" * 32)
    finally:
        b.close()


def test_listing_ignores_foreign_keys(fresh_backend, s3env):
    raw = _raw_client(s3env)
    base = fresh_backend._base
    for key in ("data/ab/not-hex!", "data/zz", "data/ab/" + "cd" * 32, "index/sub/" + "aa" * 32, "index/.tmp-x"):
        raw.put_object(Bucket=s3env["S3_BUCKET"], Key=base + key, Body=b"junk")
    fresh_backend.save(ObjectType.PACK, "ab" * 32, b"ok")
    fresh_backend.save(ObjectType.INDEX, "ab" * 32, b"ok")
    assert [i.name for i in fresh_backend.list(ObjectType.PACK)] == ["ab" * 32]
    assert [i.name for i in fresh_backend.list(ObjectType.INDEX)] == ["ab" * 32]


def test_url_parsing():
    with pytest.raises(UsageError):
        open_backend("s3://", {})
    with pytest.raises(UsageError) as info:
        open_backend("s3://key:secretvalue@bucket/x", {})
    assert "secretvalue" not in str(info.value)
    # named at once, not sent to the server to come back as "bad S3 request ... ParamValidationError" (exit 1)
    with pytest.raises(UsageError, match="'Bad_Bucket!' is not an S3 bucket name"):
        open_backend("s3://Bad_Bucket!/x", {})
    with pytest.raises(UsageError, match="'[?]' or '#'"):
        open_backend("s3://bucket/a?b", {})
    b = open_backend("s3://bucket/some/prefix/", {"s3.endpoint": "http://127.0.0.1:1", "s3.region": "eu-west-1"})
    assert b.location == "s3://bucket/some/prefix"
    assert b._key(ObjectType.PACK, "ab" * 32) == "some/prefix/data/ab/" + "ab" * 32
    b.close()


@pytest.mark.parametrize(
    "status, content_range, body, offset, length, expected",
    [
        (200, None, b"0123456789", 3, 4, b"3456"),  # Range ignored: whole object, slice locally
        (200, None, b"0123456789", 7, None, b"789"),
        (200, "bytes 3-6/10", b"3456", 3, 4, b"3456"),  # rclone: 200 with the range and Content-Range
        (206, "bytes 3-6/10", b"3456", 3, 4, b"3456"),
        (206, "bytes 2-6/10", b"23456", 3, 4, b"3456"),  # a wider range than asked for
    ],
)
def test_ranged_get_answers(status, content_range, body, offset, length, expected):
    """How range answers are interpreted (the real servers above cover 206 and rclone's 200)."""
    import io

    from botocore.response import StreamingBody
    from botocore.stub import Stubber

    b = S3Backend("bucket", "p", endpoint="http://127.0.0.1:1")
    resp = {
        "Body": StreamingBody(io.BytesIO(body), len(body)),
        "ContentLength": len(body),
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    if content_range:
        resp["ContentRange"] = content_range
    with Stubber(b._s3) as stub:
        stub.add_response("get_object", resp)
        assert b.load(ObjectType.PACK, "ab" * 32, offset, length) == expected
