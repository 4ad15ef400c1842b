"""Hiding secrets in text that a user may see or paste into a bug report, and from programs tuckbox starts.

Messages name repositories by their ``location`` (which never holds a secret); this module is for text that
comes from elsewhere: a repository URL that failed to parse, a library's debug log (``TUCKBOX_DEBUG=1``, whose
botocore and httpx lines quote request URLs and headers), a traceback. Each function only ever removes text
(``child_environment``: variables).
"""

from __future__ import annotations

import os
import re

REDACTED = "<redacted>"

# a Tahoe-LAFS capability, also percent-encoded as in a request URL (URI%3ADIR2%3A...) or typed in lower case:
# its kind stays
CAPABILITY = re.compile(r"((?i:URI)(?::|%3[Aa])[A-Za-z0-9-]+)(?::|%3[Aa])[^\s/\"'<>&?]+")

# environment variables whose values are secrets (their literal values are removed from debug output)
SECRET_ENVIRONMENT = (
    "TUCKBOX_PASSWORD", "TUCKBOX_WEBDAV_PASSWORD", "TUCKBOX_SFTP_PASSWORD", "TUCKBOX_SFTP_PASSPHRASE",
    "TUCKBOX_TAHOE_CAP", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
)
# of those, tuckbox's own: no program it starts (a password command, rclone) needs them
_TUCKBOX_SECRETS = tuple(name for name in SECRET_ENVIRONMENT if name.startswith("TUCKBOX_"))
_MIN_LITERAL = 4  # shorter values are not searched for (every "a" in a log would go)

# credentials in HTTP headers as libraries log them: {'Authorization': b'...'} and a canonical request's
# "x-amz-security-token:..." line; in query strings (a presigned URL); botocore's "Signature:\n<hex>"
_SECRET_HEADERS = r"authorization|proxy-authorization|x-amz-security-token|cookie|set-cookie|x-auth-token"
_HEADER_IN_DICT = re.compile(rf"""(?i)((['"])(?:{_SECRET_HEADERS})\2\s*:\s*b?)(['"]).*?(?<!\\)\3""")
_HEADER_LINE = re.compile(rf"(?im)^(\s*(?:{_SECRET_HEADERS})\s*:).*$")
_QUERY = re.compile(
    r"(?i)([?&;](?:x-amz-security-token|x-amz-signature|x-amz-credential|signature|awsaccesskeyid|"
    r"access_token|token|password|passwd|secret|sig)=)[^&\s'\"]*"
)
_SIGNATURE = re.compile(r"(?i)(signature:\s*)[0-9a-f]{32,}")
# user-info in a URL a library logs: scheme://user:password@host
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/@:\s'\"]*):[^@\s'\"/]*@")


def redact_caps(text: str) -> str:
    """``text`` with every Tahoe capability replaced by its kind and ``<redacted>``."""
    return CAPABILITY.sub(lambda m: f"{m.group(1)}:{REDACTED}", text)


def redact_url(url: str) -> str:
    """A repository URL for a message about it: no password in its user-info (whatever characters it holds:
    an unencoded ``/``, ``#``, ``?`` or ``@`` in a password is what makes such a URL fail to parse), no
    query or fragment (``?token=...``), no Tahoe capability. What is left may be less than the user typed."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        userinfo, _, host = rest.rpartition("@")
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        rest = f"{userinfo}@{host}"
    for mark in ("?", "#"):
        head, found, _ = rest.partition(mark)
        if found:
            rest = f"{head}{mark}..."
    return redact_caps(f"{scheme}{sep}{rest}")


_EXTRA: set[str] = set()


def add_secret(value: str) -> None:
    """Remember a secret given otherwise than in the environment (an ``-o webdav.password=`` value)."""
    if len(value) >= _MIN_LITERAL:
        _EXTRA.add(value)


def _literals() -> list[str]:
    values = {os.environ.get(name, "") for name in SECRET_ENVIRONMENT} | _EXTRA
    return sorted((v for v in values if len(v) >= _MIN_LITERAL), key=len, reverse=True)


def redact_debug(text: str) -> str:
    """Debug output (a library's log line, a traceback) without the secrets it may quote."""
    for value in _literals():
        text = text.replace(value, REDACTED)
    text = redact_caps(text)
    text = _HEADER_IN_DICT.sub(lambda m: f"{m.group(1)}{m.group(3)}{REDACTED}{m.group(3)}", text)
    text = _HEADER_LINE.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
    text = _QUERY.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
    text = _SIGNATURE.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
    return _USERINFO.sub(lambda m: f"{m.group(1)}:***@", text)


def child_environment() -> dict[str, str]:
    """The environment for a program tuckbox starts: this one without tuckbox's own secrets (the passphrase,
    storage passwords, the Tahoe-LAFS capability), which such a program would hold, readable in its
    /proc/PID/environ, for as long as it runs. Everything else stays (AWS_* for rclone's env_auth or an
    ``aws`` password command, TUCKBOX_REPOSITORY for a command choosing the passphrase by repository)."""
    return {k: v for k, v in os.environ.items() if k not in _TUCKBOX_SECRETS}
