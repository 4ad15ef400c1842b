"""Storage backends. ``open_backend`` turns a repository URL into a Backend.

Each remote backend lives in its own module with a ``from_url(url, options)``
classmethod; this module only dispatches on the scheme.
"""

from __future__ import annotations

import importlib

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


def open_backend(url: str, options: dict[str, str] | None = None) -> Backend:
    """Open a repository location: a path, or scheme://... for remote backends."""
    options = options or {}
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
        from .local import LocalBackend

        return LocalBackend(url)
    if scheme not in _SCHEMES:
        raise UsageError(
            f"unknown repository scheme '{scheme}:'; use a path, sftp://, s3://, tahoe://, "
            "webdav+https://, webdav+http:// or rclone:"
        )
    module_name, class_name = _SCHEMES[scheme]
    module = importlib.import_module(f".{module_name}", __name__)
    return getattr(module, class_name).from_url(url, options)
