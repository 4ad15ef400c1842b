"""A repository in a Tahoe-LAFS grid, through a client node's web API.

Address: ``tahoe://HOST:PORT/URI:DIR2:.../sub/path`` — the web API of a
Tahoe-LAFS client node (usually ``tahoe://127.0.0.1:3456``), a directory
write-cap, and an optional path below it. The cap is a SECRET (whoever holds
it can read and change everything under it), so it can also come from the
environment (``TUCKBOX_TAHOE_CAP``) or the option ``tahoe.cap``, leaving a
cap-free address ``tahoe://HOST:PORT/sub/path``. ``location``, ``repr()`` and
every message show it as ``URI:DIR2:<redacted>``.

Storage: each object is an immutable (CHK) file — Tahoe encrypts, erasure-codes
and spreads it over the storage servers — linked under its name into the
repository's directories with ``replace=false``, which the node refuses (409)
if the name is taken. The upload completes before the link is made, so a name
shows either the whole object or nothing. Reads use HTTP Range requests on the
file's cap (cached from listings, so repeated reads of a pack do not walk
directories again). A lock that the grid cannot place as happily as its
``shares.happy`` asks (a storage server is down) is stored as a mutable (SDMF)
file instead, which Tahoe places on the servers there are: a restore or check
of a grid that can still be read is never stopped by its lock.

Layout: ``config`` at the top, ``data/XX/NAME`` as in every backend, and,
unlike the other backends, ``keys|index|snapshots|locks/X/NAME`` split on the
first hex digit. Tahoe directories are mutable files that are rewritten whole
on every link, so linking into a directory of N entries costs O(N): on a
2-core machine about 0.13 s per link into a small directory but about 0.5 s at
1000 entries and more beyond. Sixteen sub-directories keep thousands of
snapshots or indexes cheap while listing a type stays 17 requests. ``create()``
makes the repository directory and the five type directories; each shard
directory is made when the first object goes there (making a directory costs
an RSA key generation, about 0.2 s).

Deleting only unlinks: ``remove`` takes the name out of its directory, but
the shares stay on the storage servers until their leases expire (when the
servers run lease expiry), and anyone still holding the file's cap can read
it (this client's cache of file caps can also still read it until the
process ends; locks are never cached). Leases must be renewed for everything that should stay: ``renew_leases()``
runs a deep check with ``add-lease=true`` over the repository (``check``
should call it), optionally repairing files that lost shares.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx

from ..errors import ObjectExists, ObjectNotFound, PermanentError, TransientError, UsageError
from ..redact import CAPABILITY, redact_caps
from ..types import ObjectInfo, ObjectType
from .layout import check_name, object_label
from .url import parse_bool, parse_float

_NAME = re.compile(r"^[0-9a-f][0-9a-f-]{1,127}$")
_SHARD1 = re.compile(r"^[0-9a-f]$")
_SHARD2 = re.compile(r"^[0-9a-f]{2}$")
_TOP_DIRS = [t.value for t in ObjectType if t is not ObjectType.CONFIG]
_CACHED_TYPES = {ObjectType.PACK, ObjectType.INDEX, ObjectType.SNAPSHOT, ObjectType.KEY}
_FILECAP_CACHE_SIZE = 200_000
# Tahoe's UploadUnhappinessError: "shares could be placed on only 2 server(s) such that ... at least 3 such servers"
_UNHAPPY = re.compile(r"placed on only (\d+) server\(s\).*?at least (\d+) such servers", re.DOTALL)


def _cap_kind(cap: str) -> str:
    m = CAPABILITY.match(cap)
    return m.group(1) if m else "URI"


@dataclass(frozen=True)
class LeaseRenewal:
    """What ``renew_leases`` saw: objects walked, those unhealthy, repairs done."""

    objects: int
    unhealthy: int
    repaired: int
    unrecoverable: int


class TahoeBackend:
    """Objects as immutable files in a Tahoe-LAFS grid (see the module docstring)."""

    def __init__(
        self,
        node_url: str,
        dircap: str,
        path: str = "",
        *,
        timeout: float = 600.0,
        list_workers: int = 4,
    ) -> None:
        if not dircap.startswith("URI:DIR2"):
            raise UsageError(
                f"the Tahoe-LAFS capability for {node_url} is not a directory cap ({_cap_kind(dircap)}:...); "
                "use a URI:DIR2:... write-cap"
            )
        self._node = node_url.rstrip("/")
        self._rootcap = dircap
        self._path = "/".join(p for p in path.split("/") if p)
        sub = f"/{self._path}" if self._path else ""
        self.location = f"tahoe://{urlsplit(self._node).netloc}/{_cap_kind(dircap)}:<redacted>{sub}"
        self._client_settings: dict[str, Any] = dict(
            timeout=httpx.Timeout(timeout, connect=30.0),
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
        )
        self._client = httpx.Client(**self._client_settings)
        self._lock = threading.Lock()
        self._mkdir_lock = threading.Lock()
        self._dircaps: dict[str, str] = {}
        self._filecaps: OrderedDict[tuple[ObjectType, str], str] = OrderedDict()
        self._list_workers = list_workers
        self._closed = False

    def __repr__(self) -> str:
        return f"TahoeBackend({self.location!r})"

    @classmethod
    def from_url(cls, url: str, options: dict[str, str]) -> TahoeBackend:
        parts = urlsplit(url)
        if parts.scheme != "tahoe" or not parts.hostname:
            raise UsageError(f"not a Tahoe-LAFS address: {redact_caps(url)}; use tahoe://HOST:PORT/URI:DIR2:.../PATH")
        if parts.query or parts.fragment:
            raise UsageError(f"a Tahoe-LAFS repository address takes no '?' or '#' part: {redact_caps(url)}")
        try:
            port = parts.port or 3456
        except ValueError:
            raise UsageError(f"bad port in {redact_caps(url)}") from None
        segments = [unquote(s) for s in parts.path.split("/") if s]
        cap = None
        if segments and segments[0][:4].upper() == "URI:":  # (a cap typed in lower case is one too: never shown)
            cap = segments.pop(0)
        cap = cap or options.get("tahoe.cap") or os.environ.get("TUCKBOX_TAHOE_CAP")
        host = parts.hostname
        if not cap:
            raise UsageError(
                f"no Tahoe-LAFS directory cap for tahoe://{host}:{port}/{'/'.join(segments)}; "
                "set TUCKBOX_TAHOE_CAP (or the option tahoe.cap) to a URI:DIR2:... write-cap"
            )
        scheme = "https" if parse_bool(options.get("tahoe.https"), "tahoe.https") else "http"
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return cls(
            f"{scheme}://{netloc}",
            cap.strip(),
            "/".join(segments),
            timeout=parse_float(options.get("tahoe.timeout"), "tahoe.timeout", 600.0),
        )

    # ---- HTTP plumbing ------------------------------------------------------------------

    def _u(self, cap: str, *names: str) -> str:
        tail = "".join("/" + quote(n, safe="") for n in names)
        return f"{self._node}/uri/{quote(cap, safe=':')}{tail}"

    def _request(self, method: str, url: str, what: str, **kwargs: Any) -> httpx.Response:
        if self._closed:
            raise UsageError(f"the repository connection to {self.location} is closed")
        try:
            return self._client.request(method, url, **kwargs)
        except httpx.TimeoutException:
            raise TransientError(f"timed out waiting for the Tahoe-LAFS node for {what} in {self.location}") from None
        except httpx.ConnectError:
            raise TransientError(
                f"cannot reach the Tahoe-LAFS client node for {self.location}; is it running?"
            ) from None
        except httpx.HTTPError as e:
            raise TransientError(
                f"network error talking to the Tahoe-LAFS node for {what} in {self.location} ({type(e).__name__})"
            ) from None

    def _fail(self, r: httpx.Response, what: str) -> Exception:
        code = r.status_code
        detail = ""
        if "html" not in r.headers.get("content-type", ""):
            lines = [ln.strip() for ln in r.text.strip().splitlines() if ln.strip()]
            if lines:
                detail = f": {redact_caps(lines[-1])[:200]}"
        if "NotWriteableError" in r.text:
            return PermanentError(f"cannot change {what} in {self.location}: the cap is read-only; use a write-cap")
        if "UploadUnhappinessError" in r.text:
            m = _UNHAPPY.search(r.text)
            counts = f" (placed on {m.group(1)} of the {m.group(2)} that shares.happy asks for)" if m else ""
            return TransientError(
                f"too few Tahoe-LAFS storage servers accepted the shares of {what} in {self.location}{counts}; "
                "check that enough storage servers are up, connected to the client node and not full (an upload "
                "of the same object cut off less than 30 minutes ago, say by a restart of the client node, also "
                "holds them back: run the command again later)"
            )
        if code == 404:
            return ObjectNotFound(f"{what} not found in repository {self.location}")
        if code == 409:
            return ObjectExists(f"{what} already exists in {self.location}")
        if code == 410:
            return TransientError(
                f"Tahoe-LAFS cannot find enough shares of {what} in {self.location}; "
                f"are enough storage servers connected?{detail}"
            )
        if code >= 500 or code in (408, 429):
            return TransientError(f"the Tahoe-LAFS node answered {code} for {what} in {self.location}{detail}")
        if code in (401, 403):
            return PermanentError(f"the Tahoe-LAFS node refused access to {what} in {self.location}{detail}")
        return PermanentError(f"the Tahoe-LAFS node answered {code} for {what} in {self.location}{detail}")

    def _json(self, url: str, what: str) -> Any:
        r = self._request("GET", url, what, params={"t": "json"})
        if r.status_code != 200:
            raise self._fail(r, what)
        try:
            return r.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise TransientError(f"the Tahoe-LAFS node sent unreadable JSON for {what} in {self.location}") from None

    # ---- directories --------------------------------------------------------------------

    def _rel(self, rel: str) -> str:
        """A repository-relative path made relative to the root cap."""
        return "/".join(p for p in (self._path, rel) if p)

    def _check_writable(self, what: str) -> None:
        if "-RO" in _cap_kind(self._rootcap):
            raise PermanentError(f"cannot change {what} in {self.location}: the cap is read-only; use a write-cap")

    def _dircap(self, rel: str, create: bool) -> str | None:
        """The cap of directory ``rel`` (relative to the root cap); None if missing and not ``create``."""
        if not rel:
            return self._rootcap
        with self._lock:
            cap = self._dircaps.get(rel)
        if cap:
            return cap
        parent, _, name = rel.rpartition("/")
        parent_cap = self._dircap(parent, create)
        if parent_cap is None:
            return None
        cap = self._lookup_child_dir(parent, parent_cap, name)
        if cap or not create:
            return cap
        self._check_writable(f"directory {rel}")
        with self._mkdir_lock:
            cap = self._lookup_child_dir(parent, parent_cap, name)
            if cap:
                return cap
            what = f"directory {rel}"
            r = self._request(
                "POST", self._u(parent_cap), what, params={"t": "mkdir", "name": name, "replace": "false"}
            )
            if r.status_code == 200:
                cap = r.text.strip()
            elif r.status_code == 409:  # someone else made it meanwhile
                cap = self._lookup_child_dir(parent, parent_cap, name)
            else:
                raise self._fail(r, what)
            if not cap:
                raise PermanentError(f"{rel} in {self.location} is not a directory; the repository is damaged")
            with self._lock:
                self._dircaps[rel] = cap
            return cap

    def _lookup_child_dir(self, parent: str, parent_cap: str, name: str) -> str | None:
        """Read directory ``parent`` once and remember the caps of all its sub-directories."""
        what = f"directory {parent or '/'}"
        try:
            node = self._json(self._u(parent_cap), what)
        except ObjectNotFound:
            return None
        kids = node[1].get("children", {}) if node and node[0] == "dirnode" else {}
        found = {}
        for kid, (kind, info) in kids.items():
            if kind == "dirnode":
                cap = info.get("rw_uri") or info.get("ro_uri")
                if cap:
                    found["/".join(p for p in (parent, kid) if p)] = cap
        with self._lock:
            self._dircaps.update(found)
        return found.get("/".join(p for p in (parent, name) if p))

    def _shard(self, type: ObjectType, name: str) -> str:
        """The repository-relative directory holding an object."""
        check_name(type, name)
        if type is ObjectType.CONFIG:
            return ""
        if type is ObjectType.PACK:
            return f"data/{name[:2]}"
        return f"{type.value}/{name[0]}"

    def _remember(self, type: ObjectType, name: str, filecap: str) -> None:
        if type not in _CACHED_TYPES or not filecap.startswith("URI:"):
            return
        with self._lock:
            self._filecaps[(type, name)] = filecap
            self._filecaps.move_to_end((type, name))
            while len(self._filecaps) > _FILECAP_CACHE_SIZE:
                self._filecaps.popitem(last=False)

    def _forget(self, type: ObjectType, name: str) -> None:
        with self._lock:
            self._filecaps.pop((type, name), None)

    # ---- Backend protocol ---------------------------------------------------------------

    def exists(self) -> bool:
        try:
            return self._dircap(self._rel(""), create=False) is not None
        except ObjectNotFound:
            return False

    def create(self) -> None:
        self._dircap(self._rel(""), create=True)
        for top in _TOP_DIRS:
            self._dircap(self._rel(top), create=True)

    def save(self, type: ObjectType, name: str, data: bytes | memoryview) -> None:
        what = object_label(type, name)
        self._check_writable(what)
        cap = self._dircap(self._rel(self._shard(type, name)), create=True)
        assert cap is not None
        r = self._request(
            "PUT", self._u(cap, name), what, params={"replace": "false", "format": "CHK"}, content=bytes(data)
        )
        if r.status_code not in (200, 201) and type is ObjectType.LOCK and "UploadUnhappinessError" in r.text:
            # A grid with a storage server down cannot place an immutable file as happily as shares.happy asks,
            # and without its lock a restore or check could not run at all, though every file can still be
            # read (2 of 3 shares are enough). A lock is small and short-lived: it goes into a mutable file,
            # which Tahoe places on the servers there are (reads, listings and unlinking treat it alike).
            r = self._request(
                "PUT", self._u(cap, name), what, params={"replace": "false", "format": "SDMF"}, content=bytes(data)
            )
        if r.status_code not in (200, 201):
            raise self._fail(r, what)
        self._remember(type, name, r.text.strip())

    def _filecap(self, type: ObjectType, name: str) -> tuple[str, int | None]:
        with self._lock:
            cached = self._filecaps.get((type, name))
        if cached:
            return cached, None
        info = self._stat_json(type, name)
        cap = info.get("ro_uri") or info.get("rw_uri")
        if not cap:
            raise PermanentError(f"{type.value}/{name} in {self.location} has no readable cap; the repository is damaged")
        self._remember(type, name, cap)
        return cap, int(info.get("size") or 0)

    def _stat_json(self, type: ObjectType, name: str) -> dict[str, Any]:
        what = object_label(type, name)
        cap = self._dircap(self._rel(self._shard(type, name)), create=False)
        if cap is None:
            raise ObjectNotFound(f"{what} not found in repository {self.location}")
        node = self._json(self._u(cap, name), what)
        if not node or node[0] != "filenode":
            raise ObjectNotFound(f"{what} not found in repository {self.location}")
        info: dict[str, Any] = node[1]
        return info

    def load(self, type: ObjectType, name: str, offset: int = 0, length: int | None = None) -> bytes:
        what = object_label(type, name)
        if offset < 0 or (length is not None and length < 0):
            raise UsageError(f"invalid range {offset}+{length} for {what}")
        filecap, size = self._filecap(type, name)
        if length == 0 or (size is not None and offset >= size):
            return b""
        headers = {}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            headers["Range"] = f"bytes={offset}-{end}"
        r = self._request("GET", f"{self._node}/uri/{quote(filecap, safe=':')}", what, headers=headers)
        if r.status_code == 206:
            return r.content if length is None else r.content[:length]
        if r.status_code == 200:
            body = r.content
            return body[offset:] if length is None else body[offset : offset + length]
        if r.status_code == 416:
            return b""
        raise self._fail(r, what)

    def stat(self, type: ObjectType, name: str) -> ObjectInfo:
        info = self._stat_json(type, name)
        cap = info.get("ro_uri")
        if cap:
            self._remember(type, name, cap)
        return ObjectInfo(type, name, int(info.get("size") or 0))

    def _list_dir(self, rel: str) -> list[tuple[str, str, dict[str, Any]]]:
        """(name, kind, info) of each entry of repository directory ``rel``; [] when missing."""
        cap = self._dircap(self._rel(rel), create=False)
        if cap is None:
            return []
        try:
            node = self._json(self._u(cap), f"directory {rel or '/'}")
        except ObjectNotFound:
            return []
        kids = node[1].get("children", {}) if node and node[0] == "dirnode" else {}
        out = []
        found = {}
        for kid, (kind, info) in kids.items():
            out.append((kid, kind, info))
            if kind == "dirnode" and (info.get("rw_uri") or info.get("ro_uri")):
                found[self._rel(f"{rel}/{kid}" if rel else kid)] = info.get("rw_uri") or info.get("ro_uri")
        with self._lock:
            self._dircaps.update(found)
        return out

    def _files_in(self, type: ObjectType, entries: list[tuple[str, str, dict[str, Any]]]) -> Iterator[ObjectInfo]:
        for kid, kind, info in entries:
            if kind == "filenode" and _NAME.match(kid):
                if info.get("ro_uri"):
                    self._remember(type, kid, info["ro_uri"])
                yield ObjectInfo(type, kid, int(info.get("size") or 0))

    def list(self, type: ObjectType) -> Iterator[ObjectInfo]:
        if type is ObjectType.CONFIG:
            try:
                yield self.stat(type, "config")
            except ObjectNotFound:
                pass
            return
        shard = _SHARD2 if type is ObjectType.PACK else _SHARD1
        subdirs = [f"{type.value}/{kid}" for kid, kind, _ in self._list_dir(type.value) if kind == "dirnode" and shard.match(kid)]
        with ThreadPoolExecutor(max_workers=self._list_workers) as pool:
            for entries in pool.map(self._list_dir, subdirs):
                yield from self._files_in(type, entries)

    def remove(self, type: ObjectType, name: str) -> None:
        what = object_label(type, name)
        self._check_writable(what)
        cap = self._dircap(self._rel(self._shard(type, name)), create=False)
        if cap is None:
            raise ObjectNotFound(f"{what} not found in repository {self.location}")
        self._forget(type, name)
        r = self._request("DELETE", self._u(cap, name), what)
        if r.status_code not in (200, 204):
            raise self._fail(r, what)

    def renew_leases(self, repair: bool = False) -> LeaseRenewal:
        """Add a lease on every share of every object and directory of the repository.

        Runs the node's deep check with ``add-lease=true`` (and ``repair=true``
        when asked) over the repository directory; takes roughly a second per
        few objects on a small grid. Small objects stored inside their cap
        (LIT files) have no shares and need no lease.
        """
        cap = self._dircap(self._rel(""), create=False)
        if cap is None:
            raise ObjectNotFound(f"no repository at {self.location}")
        params = {"t": "stream-deep-check", "add-lease": "true", "output": "json"}
        if repair:
            params["repair"] = "true"
        objects = unhealthy = repaired = unrecoverable = 0
        what = "the lease renewal"
        try:
            with self._client.stream("POST", self._u(cap), params=params) as r:
                if r.status_code != 200:
                    r.read()
                    raise self._fail(r, what)
                for line in r.iter_lines():
                    if not line.strip():
                        continue
                    if line.startswith("ERROR:"):
                        raise TransientError(
                            f"the lease renewal in {self.location} stopped at an unreadable directory: "
                            f"{redact_caps(line[6:].strip())[:200]}"
                        )
                    unit = json.loads(line)
                    if unit.get("type") not in ("file", "directory"):
                        continue
                    objects += 1
                    if repair:
                        res = unit.get("check-and-repair-results") or {}
                        pre = res.get("pre-repair-results") or {}
                        post = res.get("post-repair-results") or {}
                        healthy_before = (pre.get("results") or {}).get("healthy", True)
                        if not healthy_before:
                            unhealthy += 1
                        if res.get("repair-successful"):
                            repaired += 1
                        if not (post.get("results") or {}).get("recoverable", True):
                            unrecoverable += 1
                    else:
                        results = (unit.get("check-results") or {}).get("results") or {}
                        if not results.get("healthy", True):
                            unhealthy += 1
                        if not results.get("recoverable", True):
                            unrecoverable += 1
        except httpx.TimeoutException:
            raise TransientError(f"timed out renewing leases in {self.location}") from None
        except httpx.HTTPError as e:
            raise TransientError(f"network error renewing leases in {self.location} ({type(e).__name__})") from None
        except json.JSONDecodeError:
            raise TransientError(f"the Tahoe-LAFS node sent unreadable deep-check output for {self.location}") from None
        return LeaseRenewal(objects, unhealthy, repaired, unrecoverable)

    def suspend(self) -> None:
        """Close the pooled connections (before the process forks); later requests use a fresh pool."""
        if not self._closed:
            self._client.close()
            self._client = httpx.Client(**self._client_settings)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()

