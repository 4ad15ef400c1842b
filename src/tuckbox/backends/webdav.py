"""A repository on a WebDAV server: ``webdav+https://host/path`` or ``webdav+http://``.

Credentials come from the options ``webdav.user`` / ``webdav.password`` or the
environment (``TUCKBOX_WEBDAV_USER`` / ``TUCKBOX_WEBDAV_PASSWORD``); a user
name may also be given in the URL, a password never (it would end up in shell
history and process lists). They are sent as HTTP Basic (or Digest, option
``webdav.auth=digest``) authentication and never appear in ``location`` or a
message. Option ``webdav.ca_file`` names a CA bundle for a private TLS CA.

Writes are atomic and never replace: the bytes are PUT to a hidden temporary
name (``.tmp-<random>``) in the object's directory and then MOVEd to the final
name with ``Overwrite: F``, which the server refuses (412) when the name is
taken. A crash leaves at worst a temporary file, which ``list`` ignores.
Directories are created with MKCOL: the top-level ones at ``create()``, the
``data/XX`` ones the first time an object goes there.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import secrets
import ssl
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx

from ..errors import ObjectExists, ObjectNotFound, PermanentError, TransientError, UsageError
from ..redact import redact_url
from .url import has_password, parse_float
from ..types import ObjectInfo, ObjectType
from .layout import object_label, object_path

_NAME = re.compile(r"^[0-9a-f][0-9a-f-]{1,127}$")
_DAV = "{DAV:}"
_PROPFIND_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/><D:getcontentlength/></D:prop></D:propfind>'
)
_TOP_DIRS = [t.value for t in ObjectType if t is not ObjectType.CONFIG]
_LOCKED_RETRY_SECONDS = 30.0


class WebDAVBackend:
    """Objects as files on a WebDAV server (see the module docstring)."""

    def __init__(
        self,
        base_url: str,
        user: str | None = None,
        password: str | None = None,
        *,
        location: str | None = None,
        auth_scheme: str = "basic",
        verify: bool | str = True,
        timeout: float = 300.0,
        list_workers: int = 4,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"not an http(s) WebDAV address: {location or base_url}")
        path = parts.path.rstrip("/") + "/"
        self._base = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
        self._base_path = path
        self.location = location or f"webdav+{self._base}"
        self._user = user
        auth: httpx.Auth | None = None
        if user is not None:
            if auth_scheme == "digest":
                auth = httpx.DigestAuth(user, password or "")
            elif auth_scheme == "basic":
                auth = httpx.BasicAuth(user, password or "")
            else:
                raise UsageError(f"unknown webdav.auth '{auth_scheme}'; use basic or digest")
        self._client_settings: dict[str, Any] = dict(
            auth=auth,
            verify=verify,
            timeout=httpx.Timeout(timeout, connect=30.0),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            follow_redirects=False,
        )
        self._client = httpx.Client(**self._client_settings)
        self._known_dirs: set[str] = set()
        self._dirs_lock = threading.Lock()
        self._list_workers = list_workers
        self._closed = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"

    # ---- construction from a repository URL -------------------------------------------

    @classmethod
    def from_url(cls, url: str, options: dict[str, str]) -> WebDAVBackend:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in ("webdav+http", "webdav+https"):
            raise UsageError(f"not a WebDAV repository address: {url}; use webdav+https://HOST/PATH")
        parts = urlsplit(f"{scheme[len('webdav+'):]}://{rest}")
        shown = redact_url(url)  # (a password with '/', '#' or '?' in it ends the host part early: never shown)
        if has_password(url):
            raise UsageError(
                f"the WebDAV repository address {shown} holds a password; give the user alone "
                "(webdav+https://user@host/path) and the password in TUCKBOX_WEBDAV_PASSWORD"
            )
        if parts.query or parts.fragment:
            raise UsageError(f"a WebDAV repository address takes no '?' or '#' part: {shown}")
        try:
            parts.port
        except ValueError:
            raise UsageError(f"the WebDAV repository address {shown} has no valid port after the host's ':'") from None
        user = options.get("webdav.user") or os.environ.get("TUCKBOX_WEBDAV_USER") or parts.username
        password = options.get("webdav.password") or os.environ.get("TUCKBOX_WEBDAV_PASSWORD")
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
        base = urlunsplit((parts.scheme, netloc, parts.path or "/", "", ""))
        verify: bool | str = options.get("webdav.ca_file") or True
        return cls(
            base,
            user,
            password,
            location=f"{scheme}://{netloc}{parts.path.rstrip('/') or ''}",
            auth_scheme=options.get("webdav.auth", "basic"),
            verify=verify,
            timeout=parse_float(options.get("webdav.timeout"), "webdav.timeout", 300.0),
        )

    # ---- HTTP plumbing --------------------------------------------------------------------

    def _url(self, rel: str) -> str:
        return self._base + quote(rel)

    def _request(self, method: str, rel: str, what: str, **kwargs: object) -> httpx.Response:
        if self._closed:
            raise UsageError(f"the repository connection to {self.location} is closed")
        try:
            return self._client.request(method, self._url(rel), **kwargs)  # type: ignore[arg-type]
        except httpx.TimeoutException:
            raise TransientError(f"timed out talking to the WebDAV server for {what} in {self.location}") from None
        except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError) as e:
            tls = _tls_failure(e)
            if tls is not None:  # a handshake that failed once fails every time: no retries for a minute
                raise PermanentError(f"the TLS handshake with the WebDAV server for {self.location} failed: {tls}") from None
            if isinstance(e, httpx.ConnectError):  # (down, wrong host or port, no network: say where and what to do)
                raise TransientError(
                    f"cannot connect to the WebDAV server at {self.location} for {what} ({_os_reason(e)}); check that "
                    "the server is up and the address in the repository URL is right, then run the command again"
                ) from None
            raise TransientError(
                f"network error talking to the WebDAV server for {what} in {self.location} ({type(e).__name__}); "
                "check the server and the network, then run the command again"
            ) from None
        except httpx.HTTPError as e:
            raise TransientError(
                f"HTTP error talking to the WebDAV server for {what} in {self.location} ({type(e).__name__})"
            ) from None

    def _fail(self, r: httpx.Response, what: str) -> Exception:
        code = r.status_code
        if code == 404:
            return ObjectNotFound(f"{what} not found in repository {self.location}")
        if code == 401:
            who = f" for user '{self._user}'" if self._user else ""
            return PermanentError(
                f"the WebDAV server at {self.location} refused the credentials{who}; "
                "check TUCKBOX_WEBDAV_USER / TUCKBOX_WEBDAV_PASSWORD (or webdav.user / webdav.password)"
            )
        if code == 403:
            return PermanentError(f"the WebDAV server at {self.location} forbids access to {what}; check permissions")
        if code == 507:
            return PermanentError(
                f"the WebDAV server at {self.location} is out of space (507) writing {what}; free space or raise the quota"
            )
        if code == 413:
            return PermanentError(f"the WebDAV server at {self.location} refused {what} as too large (413)")
        if code in (408, 423, 425, 429) or code >= 500:
            return TransientError(f"the WebDAV server at {self.location} answered {code} for {what}; try again later")
        if 300 <= code < 400:
            return PermanentError(
                f"the WebDAV server at {self.location} redirects ({code}) for {what}; use the final address in the URL"
            )
        return PermanentError(f"the WebDAV server at {self.location} answered {code} for {what}")

    # ---- directories ----------------------------------------------------------------------

    def _mkcol(self, rel: str) -> None:
        """Create the collection ``rel`` (relative, no trailing slash) and its parents."""
        if rel in self._known_dirs:
            return
        r = self._mkcol_once(rel)
        if r.status_code in (200, 201, 204, 405):  # 405: it exists already
            self._remember_dir(rel)
            return
        if r.status_code == 409 and rel:  # a parent is missing
            parent = posixpath.dirname(rel)
            if parent != rel:
                self._mkcol(parent)
                r = self._mkcol_once(rel)
                if r.status_code in (200, 201, 204, 405):
                    self._remember_dir(rel)
                    return
        raise self._fail(r, f"directory {rel or '/'}")

    def _mkcol_once(self, rel: str) -> Any:
        """One MKCOL, asked again while the server answers 423: another writer is creating the same
        directory right now (rclone's server locks the name while it does; seen with concurrent saves)."""
        deadline = time.monotonic() + _LOCKED_RETRY_SECONDS
        delay = 0.05
        while True:
            r = self._request("MKCOL", rel + "/", f"directory {rel or '/'}")
            if r.status_code != 423 or time.monotonic() >= deadline:
                return r
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _remember_dir(self, rel: str) -> None:
        with self._dirs_lock:
            self._known_dirs.add(rel)

    def _propfind(self, rel: str, depth: str, what: str) -> list[tuple[str, bool, int]]:
        """(decoded href path, is_collection, size) for each response of a PROPFIND."""
        r = self._request(
            "PROPFIND",
            rel,
            what,
            content=_PROPFIND_BODY,
            headers={"Depth": depth, "Content-Type": "application/xml; charset=utf-8"},
        )
        if r.status_code != 207:
            raise self._fail(r, what)
        try:
            root = ET.fromstring(r.content)
        except ET.ParseError:
            raise TransientError(f"the WebDAV server at {self.location} sent an unreadable listing for {what}") from None
        out = []
        for resp in root.iter(f"{_DAV}response"):
            href = resp.findtext(f"{_DAV}href") or ""
            is_dir = False
            size = 0
            found = False
            for ps in resp.iter(f"{_DAV}propstat"):
                status = ps.findtext(f"{_DAV}status") or ""
                if " 200" not in status:
                    continue
                prop = ps.find(f"{_DAV}prop")
                if prop is None:
                    continue
                found = True
                rt = prop.find(f"{_DAV}resourcetype")
                if rt is not None and rt.find(f"{_DAV}collection") is not None:
                    is_dir = True
                cl = prop.findtext(f"{_DAV}getcontentlength")
                if cl and cl.strip().isdigit():
                    size = int(cl.strip())
            if found:
                out.append((unquote(urlsplit(href).path), is_dir, size))
        return out

    # ---- Backend protocol -----------------------------------------------------------------

    def exists(self) -> bool:
        r = self._request(
            "PROPFIND",
            "",
            "the repository directory",
            content=_PROPFIND_BODY,
            headers={"Depth": "0", "Content-Type": "application/xml; charset=utf-8"},
        )
        if r.status_code == 207:
            return True
        if r.status_code == 404:
            return False
        raise self._fail(r, "the repository directory")

    def create(self) -> None:
        self._mkcol_base()
        for d in _TOP_DIRS:
            self._mkcol(d)

    def _mkcol_base(self) -> None:
        """Create the repository directory itself, with any missing parents."""
        r = self._request("MKCOL", "", "the repository directory")
        if r.status_code == 409:  # parents missing: create them from the top down
            segments = [s for s in self._base_path.split("/") if s]
            scheme, netloc = urlsplit(self._base)[:2]
            for i in range(1, len(segments)):
                url = urlunsplit((scheme, netloc, "/" + "/".join(segments[:i]) + "/", "", ""))
                try:
                    parent = self._client.request("MKCOL", url)
                except httpx.HTTPError:
                    break
                if parent.status_code == 401:
                    raise self._fail(parent, "the repository directory")
            r = self._request("MKCOL", "", "the repository directory")
        if r.status_code not in (200, 201, 204, 405):
            raise self._fail(r, "the repository directory")
        self._remember_dir("")

    def save(self, type: ObjectType, name: str, data: bytes | memoryview) -> None:
        path = object_path(type, name)
        what = object_label(type, name)
        parent = posixpath.dirname(path)
        tmp = posixpath.join(parent, f".tmp-{secrets.token_hex(8)}")
        try:
            r = self._request("PUT", tmp, what, content=bytes(data))
            failed = r.status_code in (404, 409) and self._put_failed(r)
            if r.status_code in (404, 409) and parent and not failed:  # the directory is missing: make it, once
                self._mkcol(parent)
                r = self._request("PUT", tmp, what, content=bytes(data))
        except BaseException:
            self._discard(tmp)
            raise
        if failed:
            raise self._fail(r, what)  # (no temporary file was made: nothing to discard)
        if r.status_code not in (200, 201, 204):
            self._discard(tmp)
            raise self._fail(r, what)
        if parent:
            self._remember_dir(parent)
        try:
            self._move_into_place(tmp, path, what)
        except BaseException:
            self._discard(tmp)
            raise

    def _put_failed(self, r: httpx.Response) -> bool:
        """Whether a PUT answered 404/409 for another reason than a missing directory (rclone's server)."""
        return False

    def _move_into_place(self, tmp: str, path: str, what: str) -> None:
        headers = {"Destination": self._url(path), "Overwrite": "F"}
        deadline = time.monotonic() + _LOCKED_RETRY_SECONDS
        delay = 0.05
        while True:
            r = self._request("MOVE", tmp, what, headers=headers)
            if r.status_code in (200, 201, 204):
                return
            if r.status_code == 412:
                raise ObjectExists(f"{what} already exists in {self.location}")
            # 423: another request holds the name right now (e.g. a racing writer): ask again
            if r.status_code == 423 and time.monotonic() < deadline:
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            raise self._fail(r, what)

    def _discard(self, tmp: str) -> None:
        with contextlib.suppress(Exception):  # best effort: list() ignores leftovers
            self._client.request("DELETE", self._url(tmp), timeout=30.0)

    def load(self, type: ObjectType, name: str, offset: int = 0, length: int | None = None) -> bytes:
        path = object_path(type, name)
        what = object_label(type, name)
        if offset < 0 or (length is not None and length < 0):
            raise UsageError(f"invalid range {offset}+{length} for {what}")
        if length == 0:
            self.stat(type, name)
            return b""
        headers = {}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            headers["Range"] = f"bytes={offset}-{end}"
        r = self._request("GET", path, what, headers=headers)
        if r.status_code == 206:
            return r.content if length is None else r.content[:length]
        if r.status_code == 200:  # the server ignored the Range header
            body = r.content
            return body[offset:] if length is None else body[offset : offset + length]
        if r.status_code == 416:  # offset at or past the end
            self.stat(type, name)
            return b""
        raise self._fail(r, what)

    def stat(self, type: ObjectType, name: str) -> ObjectInfo:
        path = object_path(type, name)
        what = object_label(type, name)
        for _href, is_dir, size in self._propfind(path, "0", what):
            if is_dir:
                break
            return ObjectInfo(type, name, size)
        raise ObjectNotFound(f"{what} not found in repository {self.location}")

    def _list_dir(self, rel: str) -> list[tuple[str, bool, int]]:
        """(name, is_dir, size) of the entries of directory ``rel``; empty when it is missing."""
        try:
            entries = self._propfind(rel + "/", "1", f"directory {rel}")
        except ObjectNotFound:
            return []
        self._remember_dir(rel)
        own = posixpath.normpath(unquote(self._base_path) + rel)
        out = []
        for href, is_dir, size in entries:
            href_norm = posixpath.normpath(href) if href else own
            if href_norm == own:
                continue
            out.append((posixpath.basename(href_norm), is_dir, size))
        return out

    def list(self, type: ObjectType) -> Iterator[ObjectInfo]:
        if type is ObjectType.CONFIG:
            try:
                yield self.stat(type, "config")
            except ObjectNotFound:
                pass
            return
        if type is ObjectType.PACK:
            subdirs = [f"data/{n}" for n, is_dir, _ in self._list_dir("data") if is_dir and re.fullmatch("[0-9a-f]{2}", n)]
            with ThreadPoolExecutor(max_workers=self._list_workers) as pool:
                for entries in pool.map(self._list_dir, subdirs):
                    for n, is_dir, size in entries:
                        if not is_dir and _NAME.match(n):
                            yield ObjectInfo(type, n, size)
            return
        for n, is_dir, size in self._list_dir(type.value):
            if not is_dir and _NAME.match(n):
                yield ObjectInfo(type, n, size)

    def remove(self, type: ObjectType, name: str) -> None:
        path = object_path(type, name)
        what = object_label(type, name)
        r = self._request("DELETE", path, what)
        if r.status_code not in (200, 202, 204):
            raise self._fail(r, what)

    def suspend(self) -> None:
        """Close the pooled connections (before the process forks); later requests use a fresh pool."""
        if not self._closed:
            self._client.close()
            self._client = httpx.Client(**self._client_settings)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()


def _tls_failure(e: BaseException) -> str | None:
    """What went wrong in a failed TLS handshake behind ``e``, with what to do; None if it was not one."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLCertVerificationError):
            return f"its certificate is not trusted ({cur.verify_message}); check the host name, or the certificate"
        if isinstance(cur, ssl.SSLError):
            reason = cur.reason or type(cur).__name__
            if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST"):
                return f"{reason}: the server does not speak TLS there (plain http? then use webdav+http://)"
            return f"{reason}"
        cur = cur.__cause__ or cur.__context__
    return None


def _os_reason(e: BaseException) -> str:
    """The system's words for a failed connection behind ``e`` ('Connection refused'), else its type's name."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.strerror:
            return cur.strerror
        cur = cur.__cause__ or cur.__context__
    return type(e).__name__
