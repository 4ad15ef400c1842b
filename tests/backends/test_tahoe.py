"""The Tahoe-LAFS backend against a real local grid (scripts/servers/tahoe.sh: 1 introducer,
3 storage nodes, 1 client node, 2-of-3 encoding)."""

from __future__ import annotations

import os
import time
import uuid

import httpx
import pytest

from tuckbox.backends import open_backend
from tuckbox.backends.tahoe import TahoeBackend, redact_caps
from tuckbox.errors import ObjectExists, ObjectNotFound, TransientError, UsageError
from tuckbox.testing.conformance import CONFORMANCE_CHECKS
from tuckbox.testing.servers import server_env
from tuckbox.types import ObjectType

pytestmark = pytest.mark.servers

NAME = "ab" + "0" * 62


@pytest.fixture
def grid() -> dict[str, str]:
    return server_env("tahoe")


def _url(grid: dict[str, str], path: str | None = None, with_cap: bool = True) -> str:
    host = grid["TAHOE_URL"].removeprefix("http://").rstrip("/")
    path = path or f"t-{uuid.uuid4().hex}/repo"
    cap = f"{grid['TAHOE_DIRCAP']}/" if with_cap else ""
    return f"tahoe://{host}/{cap}{path}"


def _secret_parts(cap: str) -> list[str]:
    # every part of the cap after "URI:DIR2:" is secret
    return [p for p in cap.split(":")[2:] if p]


def _assert_no_cap(text: str, grid: dict[str, str]) -> None:
    for part in _secret_parts(grid["TAHOE_DIRCAP"]):
        assert part not in text, text


@pytest.fixture
def fresh_backend(grid):
    b = open_backend(_url(grid), {})
    assert isinstance(b, TahoeBackend)
    assert not b.exists()
    b.create()
    assert b.exists()
    yield b
    b.close()


@pytest.mark.parametrize("check", CONFORMANCE_CHECKS, ids=lambda c: c.__name__)
def test_conformance(check, fresh_backend):
    t0 = time.monotonic()
    check(fresh_backend)
    print(f"\nTahoe {check.__name__}: {time.monotonic() - t0:.1f} s")


def test_cap_never_in_location_repr_or_errors(grid):
    url = _url(grid, "t-" + uuid.uuid4().hex + "/laptop")
    b = open_backend(url, {})
    try:
        assert b.location.startswith("tahoe://127.0.0.1:")
        assert "URI:DIR2:<redacted>/" in b.location and b.location.endswith("/laptop")
        texts = [b.location, str(b.location), repr(b)]
        for call in (
            lambda: b.load(ObjectType.PACK, NAME),
            lambda: b.stat(ObjectType.INDEX, NAME),
            lambda: b.remove(ObjectType.SNAPSHOT, NAME),
        ):
            with pytest.raises(ObjectNotFound) as e:
                call()
            texts.append(str(e.value))
        b.create()
        b.save(ObjectType.INDEX, NAME, b"x" * 100)
        with pytest.raises(ObjectExists) as e2:
            b.save(ObjectType.INDEX, NAME, b"y" * 100)
        texts.append(str(e2.value))
        for t in texts:
            _assert_no_cap(t, grid)
    finally:
        b.close()
    with pytest.raises(UsageError) as e3:
        open_backend(url + "?x=1", {})
    _assert_no_cap(str(e3.value), grid)


def test_cap_from_environment_and_option(grid, monkeypatch):
    path = f"t-{uuid.uuid4().hex}/repo"
    monkeypatch.setenv("TUCKBOX_TAHOE_CAP", grid["TAHOE_DIRCAP"])
    b = open_backend(_url(grid, path, with_cap=False), {})
    try:
        b.create()
        b.save(ObjectType.KEY, NAME, b"key material" * 10)
        _assert_no_cap(b.location + repr(b), grid)
    finally:
        b.close()
    monkeypatch.delenv("TUCKBOX_TAHOE_CAP")
    with pytest.raises(UsageError) as e:
        open_backend(_url(grid, path, with_cap=False), {})
    assert "TUCKBOX_TAHOE_CAP" in str(e.value)
    b = open_backend(_url(grid, path, with_cap=False), {"tahoe.cap": grid["TAHOE_DIRCAP"]})
    try:
        assert b.load(ObjectType.KEY, NAME) == b"key material" * 10
    finally:
        b.close()


def test_layout_in_the_grid(grid, fresh_backend):
    b = fresh_backend
    pack = "3f" + "1" * 62
    b.save(ObjectType.PACK, pack, os.urandom(5000))
    b.save(ObjectType.SNAPSHOT, NAME, b"s" * 80)
    b.save(ObjectType.CONFIG, "config", b"{}")
    root = b.location.split("<redacted>/", 1)[1]
    base = f"{grid['TAHOE_URL']}/uri/{grid['TAHOE_DIRCAP']}/{root}"
    top = httpx.get(base, params={"t": "json"}).json()
    assert set(top[1]["children"]) == {"config", "data", "index", "keys", "locks", "snapshots"}
    f = httpx.get(f"{base}/data/3f/{pack}", params={"t": "json"}).json()
    assert f[0] == "filenode" and f[1]["format"] == "CHK" and f[1]["mutable"] is False
    assert httpx.get(f"{base}/snapshots/a/{NAME}", params={"t": "json"}).status_code == 200


def test_multi_segment_ranged_reads_without_cached_caps(fresh_backend):
    """A file of several segments reads back through ranged reads, also by a fresh client."""
    data = os.urandom(3 << 20)
    fresh_backend.save(ObjectType.PACK, NAME, data)
    assert fresh_backend.load(ObjectType.PACK, NAME, (1 << 20) - 5, 10) == data[(1 << 20) - 5 : (1 << 20) + 5]
    # a fresh backend (no cached caps) finds it by walking the directories
    b2 = TahoeBackend(fresh_backend._node, fresh_backend._rootcap, fresh_backend._path)
    try:
        assert b2.load(ObjectType.PACK, NAME, len(data) - 3) == data[-3:]
        assert b2.stat(ObjectType.PACK, NAME).size == len(data)
    finally:
        b2.close()


def test_renew_leases(fresh_backend):
    b = fresh_backend
    b.save(ObjectType.PACK, NAME, os.urandom(10_000))
    b.save(ObjectType.INDEX, NAME, os.urandom(2_000))
    b.save(ObjectType.LOCK, NAME, b"tiny")  # a LIT file: no shares, no lease
    report = b.renew_leases()
    # repo dir + 5 type dirs + 3 shard dirs + 3 files
    assert report.objects == 12
    assert report.unhealthy == 0 and report.unrecoverable == 0
    report = b.renew_leases(repair=True)
    assert report.objects == 12 and report.unrecoverable == 0


def test_node_down_is_transient(grid):
    b = TahoeBackend("http://127.0.0.1:9", grid["TAHOE_DIRCAP"], "x")
    try:
        with pytest.raises(TransientError) as e:
            b.exists()
        _assert_no_cap(str(e.value), grid)
    finally:
        b.close()


def test_redact_caps():
    text = "got URI:CHK:abc:def:2:3:100 and URI:DIR2:xyz:uvw/sub"
    assert redact_caps(text) == "got URI:CHK:<redacted> and URI:DIR2:<redacted>/sub"


def test_not_a_dircap_refused(grid):
    with pytest.raises(UsageError) as e:
        TahoeBackend(grid["TAHOE_URL"], "URI:CHK:secretpart:other:2:3:100")
    assert "secretpart" not in str(e.value)


def test_upload_throughput(fresh_backend):
    if os.environ.get("TUCKBOX_CONFORMANCE_BIG", "1") == "0":
        pytest.skip("big objects disabled")
    blob = os.urandom(16 << 20)
    t0 = time.monotonic()
    for i in range(4):
        fresh_backend.save(ObjectType.PACK, f"{i:02x}" + "e" * 62, blob)
    secs = time.monotonic() - t0
    print(f"\nTahoe-LAFS (2-of-3, 3 local storage nodes): 64 MiB uploaded in {secs:.1f} s = {64 / secs:.1f} MiB/s")


def test_read_only_cap_reads_but_refuses_writes(grid, fresh_backend):
    from tuckbox.errors import PermanentError

    fresh_backend.save(ObjectType.INDEX, NAME, b"i" * 100)
    root = fresh_backend.location.split("<redacted>/", 1)[1]
    info = httpx.get(f"{grid['TAHOE_URL']}/uri/{grid['TAHOE_DIRCAP']}/{root}", params={"t": "json"}).json()
    ro = TahoeBackend(grid["TAHOE_URL"], info[1]["ro_uri"])
    try:
        assert "URI:DIR2-RO:<redacted>" in ro.location
        assert ro.exists()
        assert ro.load(ObjectType.INDEX, NAME) == b"i" * 100
        assert [i.name for i in ro.list(ObjectType.INDEX)] == [NAME]
        for call in (
            lambda: ro.save(ObjectType.INDEX, "cd" + "0" * 62, b"x"),
            lambda: ro.remove(ObjectType.INDEX, NAME),
        ):
            with pytest.raises(PermanentError) as e:
                call()
            assert "read-only" in str(e.value)
            _assert_no_cap(str(e.value), grid)
    finally:
        ro.close()
