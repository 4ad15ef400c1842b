"""Storage backends. ``open_backend`` turns a repository URL into a Backend."""

from __future__ import annotations

from ..errors import UsageError
from ..types import Backend


def open_backend(url: str, options: dict[str, str] | None = None) -> Backend:
    """Open a repository location: a path, or scheme://... for remote backends."""
    options = options or {}
    if url.startswith("memory:"):
        from .memory import MemoryBackend

        return MemoryBackend(url)
    if "://" not in url and not url.startswith("rclone:"):
        from .local import LocalBackend

        return LocalBackend(url)
    scheme = url.split(":", 1)[0]
    if scheme == "file":
        from .local import LocalBackend

        return LocalBackend(url[len("file://"):])
    raise UsageError(f"unknown repository scheme '{scheme}:'; use a path, sftp://, s3://, tahoe://, webdav+https://, or rclone:")
