"""A repository on an SFTP server, via asyncssh.

URL: ``sftp://[user@]host[:port]/path``. ``/path`` is absolute on the server;
``/~/path`` is relative to the login directory. Host aliases, users, ports,
keys, the agent and known_hosts come from the OpenSSH client configuration
(``~/.ssh/config``) as with ``ssh``. Options (``-o``) and environment variables:

    sftp.identity=PATH      TUCKBOX_SFTP_IDENTITY     private key to log in with
    sftp.known_hosts=PATH   TUCKBOX_SFTP_KNOWN_HOSTS  known_hosts file to verify the host key
    sftp.config=PATH        TUCKBOX_SFTP_CONFIG       ssh_config file instead of ~/.ssh/config
    sftp.connect-timeout=S                            seconds (default 30)
    (environment only)      TUCKBOX_SFTP_PASSWORD     password, for servers without keys
    (environment only)      TUCKBOX_SFTP_PASSPHRASE   passphrase of an encrypted identity

A host key that no known_hosts file vouches for is refused, never trusted.

asyncssh is asynchronous; this class is a thread-safe synchronous facade: one
event loop runs in a background thread and owns the single SSH connection and
SFTP session, and every method submits a coroutine to it. SFTP requests are
pipelined, so concurrent callers share the connection efficiently, and large
reads and writes are split into parallel block requests by asyncssh. A lost
connection fails the operations in flight with TransientError and is
re-established by the next operation.

Atomic, non-replacing writes: the bytes go to ``.tmp-<random>`` in the target
directory (opened with O_EXCL, fsynced via fsync@openssh.com when offered),
then the temporary name is renamed to the final one. SFTP v3 rename never
replaces an existing file, and OpenSSH's sftp-server implements it with
link()+unlink(), so the final name appears whole or not at all and a racing
second writer gets ObjectExists. For servers that are not OpenSSH the target is
also checked before the rename (a narrow race remains there if the server's
rename replaces). The posix-rename extension is never used: it replaces.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import secrets
import socket
import stat as statmod
import threading
from typing import Any, Awaitable, Callable, Iterator, TypeVar

import asyncssh

from ..errors import NoSpace, ObjectExists, ObjectNotFound, PermanentError, TransientError, TuckboxError, UsageError
from ..types import ObjectInfo, ObjectType
from .layout import check_name, directories, object_path
from .url import RemoteURL, option, parse_float, parse_remote_url

T = TypeVar("T")

_BLOCK = -1  # bytes per SFTP read/write request: asyncssh's default, capped by the server's limits
_MAX_REQUESTS = 16  # parallel requests per transfer: 16 x the server's block (OpenSSH: 255 KiB) = 4 MiB in flight
_LIST_PARALLEL = 32  # concurrent directory reads when listing data/
_SMALL_OP_TIMEOUT = 120.0
_FULL_MARGIN = 1 << 20  # a write that failed with less than this beyond its size free: the disk is full
_DEFAULT_CIPHERS = [
    b"chacha20-poly1305@openssh.com", b"aes256-gcm@openssh.com", b"aes128-gcm@openssh.com",
    b"aes256-ctr", b"aes192-ctr", b"aes128-ctr",
]
_FAST_CIPHERS = [
    "aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
    "aes256-ctr", "aes192-ctr", "aes128-ctr",
]


async def _read_range(f: asyncssh.SFTPClientFile, offset: int, n: int) -> bytes:
    """``n`` bytes at ``offset`` (fewer at the end of the file).

    asyncssh's ``read`` reassembles its parallel requests into a bytearray that grows block by block
    (zero-padding the gaps of blocks that arrive early) and then copies it into bytes: three passes over
    fresh memory for every pack range. ``read_parallel`` hands over the blocks as they arrive (a short
    reply is completed by a further request); they are joined once, in order, up to the first gap (the
    end of the file).
    """
    blocks: dict[int, bytes] = {}
    async for at, data in await f.read_parallel(n, offset):
        if data:
            blocks[at] = data
    out: list[bytes] = []
    end = offset
    for at in sorted(blocks):
        if at != end:
            break
        out.append(blocks[at])
        end += len(blocks[at])
    if len(out) == 1:
        return out[0]
    return b"".join(out)


class _LoopThread:
    """An asyncio event loop running forever in a daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Awaitable[T]) -> T:
        if threading.current_thread() is self._thread:
            raise RuntimeError("SFTPBackend called from its own event loop thread")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()  # type: ignore[arg-type]

    def start(self, coro: Awaitable[Any]) -> None:
        """Run ``coro`` without waiting for it; its outcome is dropped."""
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # (retrieved: never logged)

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


class SFTPBackend:
    checks_whole_loads = True  # a whole load shorter than the size the open file reports is a TransientError

    def __init__(
        self,
        host: str,
        path: str,
        *,
        port: int | None = None,
        username: str | None = None,
        identity: str | None = None,
        known_hosts: str | None = None,
        config: str | None = None,
        connect_timeout: float = 30.0,
        display: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.root = path.rstrip("/") or "/"
        self._identity = os.path.expanduser(identity) if identity else None
        self._known_hosts = os.path.expanduser(known_hosts) if known_hosts else None
        self._config = os.path.expanduser(config) if config else None
        self._connect_timeout = connect_timeout
        self.location = display or RemoteURL("sftp", username, host, port, path).display()
        self._loop_thread: _LoopThread | None = None  # started by the first operation (and again after suspend)
        self._loop_lock = threading.Lock()
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._connect_lock: asyncio.Lock | None = None
        self._openssh = False
        self._fsync = True
        self._closed = False

    @classmethod
    def from_url(cls, url: str, options: dict[str, str]) -> "SFTPBackend":
        u = parse_remote_url(url, "sftp")
        path = u.path
        if path in ("/~", "/~/") or path == "":
            path = "."
        elif path.startswith("/~/"):
            path = path[3:]
        return cls(
            u.host,
            path,
            port=u.port,
            username=u.user,
            identity=option(options, "sftp.identity", "TUCKBOX_SFTP_IDENTITY"),
            known_hosts=option(options, "sftp.known_hosts", "TUCKBOX_SFTP_KNOWN_HOSTS"),
            config=option(options, "sftp.config", "TUCKBOX_SFTP_CONFIG"),
            connect_timeout=parse_float(option(options, "sftp.connect-timeout"), "sftp.connect-timeout", 30.0),
            display=u.display(),
        )

    def __repr__(self) -> str:
        return f"SFTPBackend({self.location!r})"

    @property
    def _loop(self) -> _LoopThread:
        with self._loop_lock:
            if self._loop_thread is None:
                self._loop_thread = _LoopThread(f"tuckbox-sftp-{self.host}")
            return self._loop_thread

    def suspend(self) -> None:
        """Close the connection and stop the event-loop thread; the next operation starts both again.

        Called with no operation in flight, before the process forks: afterwards
        no thread of this backend exists, and parent and children each make their
        own connection.
        """
        if self._loop_thread is None or self._closed:
            return
        self._shutdown()
        self._loop_thread = None
        self._connect_lock = None  # an asyncio.Lock belongs to the loop it was first used on

    def resume(self) -> None:
        """After ``suspend`` and the fork (in the parent): connect again in the background, so that the next
        operation finds the connection made, or being made, instead of waiting for a whole SSH handshake.
        A failure shows at that operation, which tries again."""
        if self._closed:
            return
        self._loop.start(self._client())

    # -- connection ---------------------------------------------------------

    def _server(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal: [::1]:2222, not ::1:2222
        return f"{host}:{self.port}" if self.port else host

    async def _client(self) -> asyncssh.SFTPClient:
        if self._sftp is not None and self._conn is not None and not self._conn.is_closed():
            return self._sftp
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self._sftp is not None and self._conn is not None and not self._conn.is_closed():
                return self._sftp
            self._drop()
            if self._closed:
                raise UsageError(f"the SFTP backend for {self.location} was closed")
            kwargs: dict[str, Any] = {
                "host": self.host,
                "connect_timeout": self._connect_timeout,
                "keepalive_interval": 15,
                "keepalive_count_max": 4,
                "window": 8 << 20,
            }
            if self.port:
                kwargs["port"] = self.port
            if self.username:
                kwargs["username"] = self.username
            if self._config:
                kwargs["config"] = [self._config]
            if self._identity:
                kwargs["client_keys"] = [self._identity]
            if self._known_hosts:
                kwargs["known_hosts"] = self._known_hosts
            if os.environ.get("TUCKBOX_SFTP_PASSWORD"):
                kwargs["password"] = os.environ["TUCKBOX_SFTP_PASSWORD"]
            if os.environ.get("TUCKBOX_SFTP_PASSPHRASE"):
                kwargs["passphrase"] = os.environ["TUCKBOX_SFTP_PASSPHRASE"]
            opts = asyncssh.SSHClientConnectionOptions(**kwargs)
            rebuild = False
            if opts.known_hosts is None:
                # "UserKnownHostsFile none" in a config would disable checking: refuse to
                # trust blindly, fall back to ~/.ssh/known_hosts.
                kwargs["known_hosts"] = b""
                rebuild = True
            if [bytes(a) for a in opts.encryption_algs] == _DEFAULT_CIPHERS:
                # No Ciphers configured: prefer AES-GCM (hardware AES), much faster than
                # ChaCha20-Poly1305 in asyncssh; the server still picks from the same set.
                kwargs["encryption_algs"] = _FAST_CIPHERS
                rebuild = True
            if rebuild:
                opts = asyncssh.SSHClientConnectionOptions(**kwargs)
            conn = await asyncssh.connect(self.host, self.port or (), options=opts)
            try:
                sftp = await conn.start_sftp_client()
            except BaseException:
                conn.close()
                raise
            self._openssh = "openssh" in str(conn.get_extra_info("server_version") or "").lower()
            self._conn, self._sftp = conn, sftp
            return sftp

    def _drop(self) -> None:
        if self._sftp is not None:
            self._sftp.exit()
        if self._conn is not None:
            self._conn.close()
        self._sftp = self._conn = None

    def _run(self, what: str, op: Callable[[asyncssh.SFTPClient], Awaitable[T]], timeout: float | None = None) -> T:
        async def go() -> T:
            sftp = await self._client()
            try:
                if timeout is None:
                    return await op(sftp)
                return await asyncio.wait_for(op(sftp), timeout)
            except (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection, asyncssh.DisconnectError, OSError):
                if self._sftp is sftp:  # not a newer connection another call already made
                    self._drop()
                raise

        if self._closed:
            raise UsageError(f"the SFTP backend for {self.location} was closed")
        try:
            return self._loop.run(go())
        except TuckboxError:
            raise
        except BaseException as e:  # noqa: BLE001 - every failure is mapped below
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            raise self._map(e, what) from None

    def _map(self, e: BaseException, what: str) -> Exception:
        server = self._server()
        if isinstance(e, asyncssh.HostKeyNotVerifiable):
            return PermanentError(
                f"the SSH host key of {server} is not known or does not match; verify the server's key "
                "and add it to ~/.ssh/known_hosts (connect once with ssh) or pass sftp.known_hosts=PATH"
            )
        if isinstance(e, asyncssh.PermissionDenied):
            return PermanentError(
                f"SSH login to {self.location} was refused; check the user, the key "
                "(sftp.identity=PATH or ~/.ssh/config) and the ssh agent"
            )
        if isinstance(e, asyncssh.KeyImportError):
            return PermanentError(f"cannot load the SSH key for {self.location}; check sftp.identity and its passphrase")
        if isinstance(e, (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath)):
            return ObjectNotFound(f"{what} not found in repository {self.location}")
        if isinstance(e, (asyncssh.SFTPNoSpaceOnFilesystem, asyncssh.SFTPQuotaExceeded)):
            return NoSpace(f"no space left on {self.location} writing {what}; free some space and run again")
        if isinstance(e, (asyncssh.SFTPPermissionDenied, asyncssh.SFTPWriteProtect)):
            return PermanentError(f"permission denied on {what} in {self.location}; check the server's permissions")
        if isinstance(e, asyncssh.ChannelOpenError) or isinstance(e, asyncssh.ServiceNotAvailable):
            return PermanentError(f"the SSH server {server} offers no SFTP service; enable the sftp subsystem")
        if isinstance(e, OSError) and e.filename is not None:
            # A local file the SSH settings name (identity, known_hosts, config) is missing or
            # unreadable: no retry makes it appear, and a bare "No such file or directory" names nothing.
            return PermanentError(self._local_file_message(e))
        if isinstance(e, socket.gaierror):
            return PermanentError(f"cannot resolve the SFTP host '{self.host}'; check the repository URL")
        if isinstance(e, asyncssh.SFTPError):
            return TransientError(f"SFTP error on {what} in {self.location}: {e.reason or 'failure'}")
        if isinstance(e, (asyncio.TimeoutError, TimeoutError)):
            return TransientError(f"timed out on {what} in {self.location}; the server or network is slow")
        if isinstance(e, (asyncssh.DisconnectError, ConnectionError, OSError, EOFError)):
            detail = getattr(e, "reason", None) or getattr(e, "strerror", None) or type(e).__name__
            return TransientError(
                f"connection to {server} failed during {what} in {self.location}: {detail}; "
                "check that the server is up and reachable, then run the command again"
            )
        if isinstance(e, ValueError):
            return PermanentError(f"bad SSH settings for {self.location}: {e}")
        return TransientError(f"{type(e).__name__} on {what} in {self.location}")

    def _local_file_message(self, e: OSError) -> str:
        name = os.fsdecode(e.filename)
        setting = {
            self._identity: "sftp.identity / TUCKBOX_SFTP_IDENTITY",
            self._known_hosts: "sftp.known_hosts / TUCKBOX_SFTP_KNOWN_HOSTS",
            self._config: "sftp.config / TUCKBOX_SFTP_CONFIG",
        }.get(name)
        where = f" (from {setting})" if setting else ""
        reason = (e.strerror or type(e).__name__).lower()
        return f"cannot read the SSH file {name}{where} for {self.location}: {reason}; check the path"

    # -- paths --------------------------------------------------------------

    def _p(self, rel: str) -> str:
        return posixpath.join(self.root, rel)

    def _what(self, type: ObjectType, name: str) -> str:
        return "config" if type is ObjectType.CONFIG else f"{type.value}/{name}"

    @staticmethod
    async def _is_present(sftp: asyncssh.SFTPClient, path: str) -> bool:
        try:
            await sftp.stat(path)
            return True
        except asyncssh.SFTPNoSuchFile:
            return False

    # -- Backend ------------------------------------------------------------

    def exists(self) -> bool:
        async def op(sftp: asyncssh.SFTPClient) -> bool:
            try:
                attrs = await sftp.stat(self.root)
            except asyncssh.SFTPNoSuchFile:
                return False
            return attrs.permissions is None or statmod.S_ISDIR(attrs.permissions)

        return self._run("the repository directory", op, _SMALL_OP_TIMEOUT)

    def create(self) -> None:
        async def op(sftp: asyncssh.SFTPClient) -> None:
            await sftp.makedirs(self.root, exist_ok=True)
            have: set[str] = set()
            for parent in ("", ObjectType.PACK.value):
                try:
                    have |= {posixpath.join(parent, n) for n in await sftp.listdir(self._p(parent) if parent else self.root)}
                except asyncssh.SFTPNoSuchFile:
                    pass
            sem = asyncio.Semaphore(_LIST_PARALLEL)

            async def mkdir(d: str) -> None:
                async with sem:
                    try:
                        await sftp.mkdir(self._p(d))
                    except asyncssh.SFTPFailure:
                        if not await sftp.isdir(self._p(d)):
                            raise

            top = [d for d in directories() if "/" not in d and d not in have]
            await asyncio.gather(*(mkdir(d) for d in top))
            await asyncio.gather(*(mkdir(d) for d in directories() if "/" in d and d not in have))

        self._run("the repository directories", op, None)

    def save(self, type: ObjectType, name: str, data: bytes | memoryview) -> None:
        rel = object_path(type, name)
        what = self._what(type, name)

        async def op(sftp: asyncssh.SFTPClient) -> None:
            path = self._p(rel)
            tmp = posixpath.join(posixpath.dirname(path), f".tmp-{secrets.token_hex(8)}")
            if not self._openssh and await self._is_present(sftp, path):
                raise ObjectExists(f"{what} already exists in {self.location}")
            flags = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_EXCL
            attrs = asyncssh.SFTPAttrs(permissions=0o600)
            try:
                f = await sftp.open(tmp, flags, attrs, encoding=None, block_size=_BLOCK, max_requests=_MAX_REQUESTS)
            except asyncssh.SFTPNoSuchFile:
                await sftp.makedirs(posixpath.dirname(path), exist_ok=True)
                f = await sftp.open(tmp, flags, attrs, encoding=None, block_size=_BLOCK, max_requests=_MAX_REQUESTS)
            try:
                try:
                    if data:
                        await f.write(memoryview(data), 0)  # block requests slice it without copying
                    if self._fsync:
                        try:
                            await f.fsync()
                        except asyncssh.SFTPOpUnsupported:
                            self._fsync = False
                finally:
                    await f.close()
                try:
                    await sftp.rename(tmp, path)
                except asyncssh.SFTPError:
                    if await self._is_present(sftp, path):
                        raise ObjectExists(f"{what} already exists in {self.location}") from None
                    raise
            except BaseException as e:
                await _quietly(sftp.remove(tmp))
                if e.__class__ is asyncssh.SFTPFailure:  # (``type`` is the object type here)
                    await self._refuse_if_full(sftp, posixpath.dirname(path), len(data), what)
                raise

        self._run(what, op, None)

    async def _refuse_if_full(self, sftp: asyncssh.SFTPClient, directory: str, size: int, what: str) -> None:
        """OpenSSH reports a full disk (ENOSPC, EDQUOT) as a bare "Failure", which would be retried for a
        minute and then shown as just that: ask the server's file system (statvfs@openssh.com) whether the
        object fits, and if it does not, stop with a message that says so."""
        try:
            vfs = await sftp.statvfs(directory)
        except BaseException:  # noqa: BLE001 - no statvfs extension, or the connection went: keep the error
            return
        free = (vfs.bavail or 0) * (vfs.frsize or vfs.bsize or 0)
        if vfs.blocks and free < size + _FULL_MARGIN:
            raise NoSpace(
                f"no space left on {self.location} writing {what} ({_mib(free)} free, {_mib(size)} needed); "
                "free some space and run again"
            )

    def load(self, type: ObjectType, name: str, offset: int = 0, length: int | None = None) -> bytes:
        rel = object_path(type, name)

        async def op(sftp: asyncssh.SFTPClient) -> bytes:
            async with await sftp.open(
                self._p(rel), "rb", encoding=None, block_size=_BLOCK, max_requests=_MAX_REQUESTS
            ) as f:
                if length is None:
                    size = (await f.stat()).size or 0
                    n = size - offset
                else:
                    n = length
                if n <= 0:
                    return b""
                data = await _read_range(f, offset, n)
                if length is None and len(data) < n:  # (objects never change: the transfer was cut short)
                    raise TransientError(f"short read of {type.value}/{name} from {self.location} ({len(data)} of {n} bytes)")
                return data

        return self._run(self._what(type, name), op, None)

    def stat(self, type: ObjectType, name: str) -> ObjectInfo:
        rel = object_path(type, name)

        async def op(sftp: asyncssh.SFTPClient) -> ObjectInfo:
            attrs = await sftp.stat(self._p(rel))
            return ObjectInfo(type, name, attrs.size or 0)

        return self._run(self._what(type, name), op, _SMALL_OP_TIMEOUT)

    def list(self, type: ObjectType) -> Iterator[ObjectInfo]:
        async def op(sftp: asyncssh.SFTPClient) -> list[ObjectInfo]:
            if type is ObjectType.CONFIG:
                try:
                    return [ObjectInfo(type, "config", (await sftp.stat(self._p("config"))).size or 0)]
                except asyncssh.SFTPNoSuchFile:
                    return []
            base = self._p(type.value)
            dirs = [base]
            if type is ObjectType.PACK:
                try:
                    dirs = [posixpath.join(base, n.filename) for n in await sftp.readdir(base) if _is_subdir(n)]
                except asyncssh.SFTPNoSuchFile:
                    return []
            sem = asyncio.Semaphore(_LIST_PARALLEL)

            async def scan(d: str) -> list[ObjectInfo]:
                async with sem:
                    try:
                        entries = await sftp.readdir(d)
                    except asyncssh.SFTPNoSuchFile:
                        return []
                return [ObjectInfo(type, str(e.filename), e.attrs.size or 0) for e in entries if _is_object(type, e)]

            out: list[ObjectInfo] = []
            for part in await asyncio.gather(*(scan(d) for d in dirs)):
                out.extend(part)
            return out

        yield from self._run(f"the {type.value} listing", op, None)

    def remove(self, type: ObjectType, name: str) -> None:
        rel = object_path(type, name)

        async def op(sftp: asyncssh.SFTPClient) -> None:
            await sftp.remove(self._p(rel))

        self._run(self._what(type, name), op, _SMALL_OP_TIMEOUT)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._loop_thread is not None:
            self._shutdown()

    def _shutdown(self) -> None:
        async def shutdown() -> None:
            if self._connect_lock is not None:
                async with self._connect_lock:
                    pass  # a connection being made (resume) is made first, then closed with the rest
            conn = self._conn
            self._drop()
            if conn is not None:
                await _quietly(conn.wait_closed())

        try:
            self._loop.run(asyncio.wait_for(shutdown(), 10))
        except BaseException:  # noqa: BLE001 - closing is best effort
            pass
        self._loop.stop()


def _is_subdir(entry: asyncssh.SFTPName) -> bool:
    name = str(entry.filename)
    if len(name) != 2 or any(c not in "0123456789abcdef" for c in name):
        return False
    perms = entry.attrs.permissions
    return perms is None or statmod.S_ISDIR(perms)


def _is_object(type: ObjectType, entry: asyncssh.SFTPName) -> bool:
    name = str(entry.filename)
    if name.startswith("."):
        return False
    perms = entry.attrs.permissions
    if perms is not None and not statmod.S_ISREG(perms):
        return False
    try:
        check_name(type, name)
    except UsageError:
        return False
    return True


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


async def _quietly(aw: Awaitable[Any]) -> None:
    try:
        await asyncio.shield(asyncio.ensure_future(aw))
    except BaseException:  # noqa: BLE001 - best-effort cleanup
        pass
