"""Where each object lives inside a repository location (shared by every backend).

    config
    keys/<name>
    data/<first two hex digits>/<name>
    index/<name>
    snapshots/<name>
    locks/<name>

Names are lowercase hex strings (64 characters for content-addressed
objects); lock names may add a ``-`` and a hex suffix.
"""

from __future__ import annotations

import re

from ..errors import UsageError
from ..types import ObjectType

_NAME = re.compile(r"^[0-9a-f][0-9a-f-]{1,127}$")


def check_name(type: ObjectType, name: str) -> None:
    if type is ObjectType.CONFIG:
        if name != "config":
            raise UsageError("the config object is always named 'config'")
        return
    if not _NAME.match(name):
        raise UsageError(f"invalid object name {name!r}")


def is_object_name(type: ObjectType, name: str) -> bool:
    """Whether ``name`` can be an object of ``type`` (listings skip anything else: a stray file a user,
    a sync tool or an operating system left in the repository must not break them)."""
    return name == "config" if type is ObjectType.CONFIG else bool(_NAME.match(name))


def object_label(type: ObjectType, name: str) -> str:
    """How messages name an object: ``config``, ``keys/<name>``, ``data/<name>``."""
    return "config" if type is ObjectType.CONFIG else f"{type.value}/{name}"


def object_path(type: ObjectType, name: str) -> str:
    check_name(type, name)
    if type is ObjectType.CONFIG:
        return "config"
    if type is ObjectType.PACK:
        return f"data/{name[:2]}/{name}"
    return f"{type.value}/{name}"


def directories() -> list[str]:
    """Every directory a repository needs (for backends with real directories)."""
    dirs = [t.value for t in ObjectType if t is not ObjectType.CONFIG]
    dirs += [f"data/{i:02x}" for i in range(256)]
    return dirs


def name_from_path(type: ObjectType, path: str) -> str:
    return path.rsplit("/", 1)[-1]
