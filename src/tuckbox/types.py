"""Vocabulary shared by every layer: object types, ids, the backend interface.

This module imports nothing else of tuckbox except ``errors``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Iterator, Protocol, runtime_checkable

ID_LEN = 32  # bytes, for chunk ids and object names


class ObjectType(enum.Enum):
    """The kinds of object a repository holds; each lives under its own prefix."""

    CONFIG = "config"
    KEY = "keys"
    PACK = "data"
    INDEX = "index"
    SNAPSHOT = "snapshots"
    LOCK = "locks"


class BlobType(enum.IntEnum):
    DATA = 0  # file content chunks
    TREE = 1  # directory listings (metadata)


def id_hex(raw: bytes) -> str:
    return raw.hex()


def short_id(name: str) -> str:
    return name[:8]


@dataclass(frozen=True)
class ObjectInfo:
    type: ObjectType
    name: str
    size: int


@runtime_checkable
class Backend(Protocol):
    """Where a repository's objects live.

    Objects are immutable: ``save`` refuses to replace an existing object
    (raises ObjectExists) and must leave either the whole object or nothing
    visible under its name, even after a crash. ``load`` with ``length=None``
    reads to the end. ``save`` may be given a memoryview (a pack is a view of
    its build buffer): it is valid only during the call, so a backend that
    keeps the bytes copies them. Names are lowercase hex (or ``config``). Every method
    raises ``ObjectNotFound`` / ``TransientError`` / ``PermanentError``.

    Optional: ``checks_whole_loads = True`` on a backend whose ``load`` of a whole
    object never returns fewer bytes than are stored (it raises instead), so the
    retry wrapper need not ``stat`` objects it cannot check against their hash
    names (wrappers.RetryBackend); ``prepare_writes()`` starts, in the background,
    whatever the first ``save`` must find out first (S3's probes).
    """

    location: str  # for messages: never contains a secret

    def save(self, type: ObjectType, name: str, data: bytes | memoryview) -> None: ...

    def load(self, type: ObjectType, name: str, offset: int = 0, length: int | None = None) -> bytes: ...

    def stat(self, type: ObjectType, name: str) -> ObjectInfo: ...

    def list(self, type: ObjectType) -> Iterator[ObjectInfo]: ...

    def remove(self, type: ObjectType, name: str) -> None: ...

    def exists(self) -> bool:
        """Whether the repository location itself exists (for 'not found' errors)."""
        ...

    def create(self) -> None:
        """Prepare the location for a new repository (mkdir, bucket prefix, ...)."""
        ...

    def close(self) -> None: ...


class BlobStore(Protocol):
    """What the archiver needs from a repository (narrow on purpose)."""

    def has_blob(self, blob_id: bytes) -> bool: ...

    def has_blobs(self, blob_ids: list[bytes]) -> bool: ...

    def add_blob(self, blob_type: BlobType, blob_id: bytes, data: bytes | memoryview) -> bool: ...

    def add_tree(self, tree_id: bytes, data: bytes, nodes: list[Any]) -> bool:
        """``add_blob`` of a tree blob whose entries (``nodes``, as given to ``encode_tree``) are at hand."""
        ...

    def blob_id(self, data: bytes | memoryview) -> bytes: ...


class BlobSource(Protocol):
    """What the restorer needs from a repository."""

    def load_blob(self, blob_type: BlobType, blob_id: bytes) -> bytes: ...
