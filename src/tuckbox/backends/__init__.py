"""Storage backends. ``open_backend`` turns a repository URL into a Backend.

Each remote backend lives in its own module with a ``from_url(url, options)``
classmethod; this module only dispatches on the scheme.
"""

from __future__ import annotations

import importlib
import os
import re

from ..errors import UsageError
from ..types import Backend

# scheme -> (module, class)
_SCHEMES = {
    "sftp": ("sftp", "SFTPBackend"),
    "s3": ("s3", "S3Backend"),
    "tahoe": ("tahoe", "TahoeBackend"),
    "webdav+http": ("webdav", "WebDAVBackend"),
    "webdav+https": ("webdav", "WebDAVBackend"),
    "rclone": ("rclone", "RcloneBackend"),
}

# the -o options each kind of repository takes (README, "Storage backends"): any other is refused, since a
# misspelt one (-o s3.endpont=...) silently ignored sends the backup, and the credentials, elsewhere, and a
# password given as an option (-o sftp.password=...) sits in the process list unused
OPTIONS: dict[str, frozenset[str]] = {
    "local": frozenset(),
    "sftp": frozenset({"sftp.identity", "sftp.known_hosts", "sftp.config", "sftp.connect-timeout"}),
    "s3": frozenset({"s3.endpoint", "s3.region", "s3.profile", "s3.path-style", "s3.connections", "s3.part-size",
                     "s3.multipart-threshold", "s3.conditional-write", "s3.checksum", "s3.sign-payload"}),
    "tahoe": frozenset({"tahoe.cap", "tahoe.https", "tahoe.timeout"}),
    "webdav": frozenset({"webdav.user", "webdav.password", "webdav.auth", "webdav.ca_file", "webdav.timeout"}),
    "rclone": frozenset({"rclone.binary", "rclone.config", "rclone.timeout", "rclone.dir_cache_time"}),
}
_KIND_NAMES = {"local": "a local", "sftp": "an sftp://", "s3": "an s3://", "tahoe": "a tahoe://",
               "webdav": "a webdav+https://", "rclone": "an rclone:"}
# where the secrets go that have no option
_SECRETS_FROM = {
    "sftp": "SSH passwords and key passphrases come only from TUCKBOX_SFTP_PASSWORD / TUCKBOX_SFTP_PASSPHRASE",
    "s3": "S3 credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or a profile (s3.profile)",
    "rclone": "rclone's credentials belong in its config file (rclone config; rclone.config names the file)",
    "webdav": "the WebDAV user and password are webdav.user and TUCKBOX_WEBDAV_PASSWORD (or webdav.password)",
    "tahoe": "the Tahoe-LAFS directory capability is TUCKBOX_TAHOE_CAP (or tahoe.cap)",
}
_SECRET_WORD = re.compile(r"pass|secret|token|key|cred|auth", re.IGNORECASE)


def check_options(kind: str, options: dict[str, str]) -> None:
    """UsageError naming (never with its value) the first ``-o`` option that a repository of ``kind`` (a key
    of OPTIONS) does not take."""
    for key in sorted(set(options) - OPTIONS[kind]):
        owner = next((k for k, keys in OPTIONS.items() if key in keys), None)
        if owner is not None:
            raise UsageError(f"option -o {key}=... is for {_KIND_NAMES[owner]} repository, and this is "
                             f"{_KIND_NAMES[kind]} one; check -r/--repo or remove the option")
        group = key.partition(".")[0]
        if group in _SECRETS_FROM and _SECRET_WORD.search(key.partition(".")[2]):
            raise UsageError(f"-o {key} is not an option: {_SECRETS_FROM[group]}")
        takes = f"{_KIND_NAMES[kind]} repository takes: {', '.join(sorted(OPTIONS[kind])) or 'none'}"
        if group in OPTIONS and group != kind:
            takes = f"the {group} options are {', '.join(sorted(OPTIONS[group]))}; {takes}"
        raise UsageError(f"-o {key} is not an option; {takes} (README, 'Storage backends')")


def open_backend(url: str, options: dict[str, str] | None = None) -> Backend:
    """Open a repository location: a path, or scheme://... for remote backends."""
    options = options or {}
    url = _lower_scheme(url)
    if url.startswith("memory:"):
        from .memory import MemoryBackend

        return MemoryBackend(url)
    if url.startswith("file://"):
        rest = url[len("file://"):]
        if rest.startswith("localhost/"):
            rest = rest[len("localhost"):]
        if not rest.startswith("/"):  # file://tmp/x names the host 'tmp', not the directory ./tmp/x
            raise UsageError(f"'{url}' names a host; a file URL is file:///absolute/path (three slashes), or give the path")
        url = rest
    scheme = url.split(":", 1)[0] if ("://" in url or url.startswith("rclone:")) else ""
    if not scheme:
        _refuse_remote_lookalike(url)
        check_options("local", options)
        from .local import LocalBackend

        return LocalBackend(url)
    if scheme not in _SCHEMES:
        raise UsageError(
            f"unknown repository scheme '{scheme}:'; use a path, sftp://, s3://, tahoe://, "
            "webdav+https://, webdav+http:// or rclone:"
        )
    module_name, class_name = _SCHEMES[scheme]
    check_options(module_name, options)
    module = importlib.import_module(f".{module_name}", __name__)
    return getattr(module, class_name).from_url(url, options)


_SCHEME_WORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


def _lower_scheme(url: str) -> str:
    """A URL scheme is case-insensitive (RFC 3986): ``SFTP://`` and ``File:///`` are ``sftp://`` and
    ``file:///``. Only a known scheme followed by ``//`` is rewritten; anything else stays as typed."""
    m = _SCHEME_WORD.match(url)
    if m is None or not url.startswith("//", m.end()):  # (a local path such as 'Sftp:x' stays as typed)
        return url
    word = m.group(1).lower()
    if word in _SCHEMES or word == "file":
        return word + url[len(word):]
    return url


def _refuse_remote_lookalike(path: str) -> None:
    """``sftp:user@host:/srv/repo`` (restic's form), ``s3:bucket/x`` or scp's ``user@host:/srv/repo`` name no
    remote here: taken as local paths they made a repository in the current directory and the backups
    went there. A path that exists, or one whose first component has no colon (``./host:x``), is local."""
    first = path.split("/", 1)[0]
    if ":" not in first or os.path.lexists(path):
        return
    m = _SCHEME_WORD.match(path)
    scheme = m.group(1).lower() if m else ""
    if scheme in _SCHEMES or scheme == "file":
        raise UsageError(
            f"'{scheme}:' without '//' is not a repository URL; write {scheme}://... "
            f"(or ./{scheme}:... for a local directory of that name)"
        )
    shown = path if "@" not in first else "...@" + path.split("@", 1)[1]  # (never a password before the @)
    raise UsageError(
        f"'{shown}' looks like an scp-style host:path, which tuckbox does not take: write "
        "sftp://[user@]host[:port]/path (or ./ before it for a local directory of that name)"
    )
