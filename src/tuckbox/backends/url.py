"""URL and option parsing shared by the remote backends.

Repository URLs never carry secrets: a password in the user-info part is
refused (with a message that does not repeat it) and secrets come from the
environment or the tools' own configuration (ssh agent, AWS profiles).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ..errors import UsageError
from ..redact import redact_url as _redact

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


@dataclass(frozen=True)
class RemoteURL:
    scheme: str
    user: str | None
    host: str
    port: int | None
    path: str  # unquoted, as written after the host ("" when absent)

    def display(self) -> str:
        """The URL for messages: never a password."""
        user = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port else ""
        return f"{self.scheme}://{user}{host}{port}{self.path}"


def parse_remote_url(url: str, scheme: str) -> RemoteURL:
    """Split ``scheme://[user@]host[:port]/path``; refuse passwords and junk."""
    if has_password(url):
        raise UsageError(
            f"the repository URL '{_redact(url)}' contains a password; remove it and use a key, "
            "an agent or the environment instead"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UsageError(f"cannot parse the repository URL '{_redact(url)}'; use {scheme}://[user@]host[:port]/path") from None
    if parts.scheme.lower() != scheme:
        raise UsageError(f"expected a {scheme}:// URL, got '{_redact(url)}'")
    if parts.query or parts.fragment:
        raise UsageError(f"the repository URL '{_redact(url)}' has a '?' or '#' part; pass settings with -o instead")
    host = parts.hostname or ""
    if not host:
        raise UsageError(f"the repository URL '{_redact(url)}' names no host; use {scheme}://[user@]host[:port]/path")
    user = unquote(parts.username) if parts.username else None
    return RemoteURL(scheme, user, host, port, unquote(parts.path))


def has_password(url: str) -> bool:
    """Whether ``url`` has a password in its user-info, also one holding an unencoded ``/``, ``?``, ``#`` or
    ``@``, with which urlsplit sees a host and port (``user:pa/ss@host`` -> host ``user``, port ``pa``) or no
    user-info at all. A port (digits after the ':') is not a password: ``host:8443/dav/me@example.com``."""
    try:
        if urlsplit(url).password is not None:
            return True
    except ValueError:
        pass
    _, sep, rest = url.partition("://")
    userinfo, at, _ = rest.rpartition("@")
    user, colon, password = userinfo.partition(":")
    return bool(sep and at and colon and "/" not in user and not password.split("/", 1)[0].isdigit())


def option(options: dict[str, str], key: str, env: str | None = None, default: str | None = None) -> str | None:
    """An ``-o key=value`` option, else an environment variable, else a default."""
    if key in options and options[key] != "":
        return options[key]
    if env and os.environ.get(env):
        return os.environ[env]
    return default


def parse_bool(value: str | None, key: str, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"option {key}={value!r} is not a boolean; use true or false")


def parse_size(value: str | None, key: str, default: int) -> int:
    """``64MiB``, ``16m``, ``1048576`` -> bytes."""
    if value is None or value == "":
        return default
    m = _SIZE.match(value)
    if not m:
        raise UsageError(f"option {key}={value!r} is not a size; use e.g. 16MiB or 1048576")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_int(value: str | None, key: str, default: int, minimum: int = 1) -> int:
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except ValueError:
        raise UsageError(f"option {key}={value!r} is not a whole number") from None
    if n < minimum:
        raise UsageError(f"option {key}={value!r} must be at least {minimum}")
    return n


def parse_float(value: str | None, key: str, default: float) -> float:
    if value is None or value == "":
        return default
    try:
        f = float(value)
    except ValueError:
        raise UsageError(f"option {key}={value!r} is not a number") from None
    if f <= 0:
        raise UsageError(f"option {key}={value!r} must be positive")
    return f
