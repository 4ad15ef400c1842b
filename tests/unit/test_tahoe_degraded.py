"""The Tahoe-LAFS backend when the grid is degraded (a storage server down), against a stand-in client node:
the real grid's nodes are shared by every test and cannot be stopped for one."""

from __future__ import annotations

import httpx
import pytest

from tuckbox.backends.tahoe import TahoeBackend
from tuckbox.errors import TransientError
from tuckbox.types import ObjectType

ROOT = "URI:DIR2:rootsecretpart:rootfingerprint"
UNHAPPY = (
    '<html><body><div class="error"><span>allmydata.interfaces.UploadUnhappinessError</span>: <span>server '
    "selection failed for &lt;Tahoe2ServerSelector for upload b'coaxb'&gt;: shares could be placed on only 2 "
    "server(s) such that any 2 of them have enough shares to recover the file, but we were asked to place "
    "shares on at least 3 such servers. (placed all 3 shares)</span></div></body></html>"
)


def _degraded_node(seen: list[tuple[str, str]]) -> TahoeBackend:
    """A backend whose node refuses every immutable (CHK) upload as unhappy and takes mutable ones."""

    def handle(request: httpx.Request) -> httpx.Response:
        fmt = request.url.params.get("format", "")
        seen.append((request.method, fmt))
        if request.method == "PUT" and fmt == "CHK":
            return httpx.Response(500, text=UNHAPPY, headers={"content-type": "text/html"})
        if request.method == "PUT" and fmt == "SDMF":
            return httpx.Response(201, text="URI:SSK:mutablewrite:mutablefingerprint")
        return httpx.Response(404, text="not here")

    b = TahoeBackend("http://127.0.0.1:3456", ROOT, "repo")
    b._client.close()
    b._client = httpx.Client(transport=httpx.MockTransport(handle))
    for shard in ("locks/a", "data/ab"):
        b._dircaps[f"repo/{shard}"] = f"URI:DIR2:{shard.replace('/', '')}secret:fp"
    return b


def test_lock_is_stored_while_a_storage_server_is_down() -> None:
    """With 2-of-3 encoding and shares.happy=3, one storage server down leaves every file readable, but no
    immutable upload succeeds; a restore or check needs only its lock written, so it must still run."""
    seen: list[tuple[str, str]] = []
    b = _degraded_node(seen)
    try:
        b.save(ObjectType.LOCK, "a" + "0" * 31, b'{"lock": "sealed bytes"}' * 8)
        assert seen == [("PUT", "CHK"), ("PUT", "SDMF")]
    finally:
        b.close()


def test_unhappy_pack_upload_says_how_many_servers_took_it() -> None:
    """Data is never stored less redundantly than the grid asks: a pack fails (retried as transient), and the
    message gives Tahoe's counts, says what to check, and never shows a cap."""
    seen: list[tuple[str, str]] = []
    b = _degraded_node(seen)
    try:
        with pytest.raises(TransientError) as e:
            b.save(ObjectType.PACK, "ab" + "0" * 62, b"x" * 1000)
        assert seen == [("PUT", "CHK")]
        msg = str(e.value)
        assert "placed on 2 of the 3 that shares.happy asks for" in msg
        assert "storage servers are up" in msg
        assert "rootsecretpart" not in msg and "abshardsecret" not in msg
    finally:
        b.close()
