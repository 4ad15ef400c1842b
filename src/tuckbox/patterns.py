"""``--include`` / ``--exclude`` patterns, the same for backup and restore.

Shell wildcards (``*``, ``?``, ``[...]``; ``*`` also crosses ``/``), matched
against an entry's absolute path and against its name:

* ``*.tmp``, ``.cache`` (no ``/``): the name, at any depth (or the whole path);
* ``/home/*/.cache`` (leading ``/``): the whole path;
* ``.cache/thumbnails``, ``src/build`` (a ``/`` inside): the end of the path,
  at a component boundary (``/x/src/build`` but not ``/x/mysrc/build``);
* a trailing ``/`` is ignored (``.cache/`` is ``.cache``): what a pattern
  matches includes, or leaves out, everything inside it (``/`` everything);
* ``.`` and ``..`` components and doubled slashes are read as in a path
  (``/srv//x/./y/../z`` is ``/srv/x/z``); the CLI makes one that starts with
  ``./`` or ``../`` absolute from the current directory first;
* a name is written as on disk or as ``ls`` shows it (``n\\xff`` for a byte
  that is not UTF-8, ``a\\\\b`` for a backslash: ``text.parse_display``); a
  pattern with such escapes matches what either form names.
"""

from __future__ import annotations

import fnmatch
from typing import Sequence

from .text import given_forms


class Patterns:
    def __init__(self, patterns: Sequence[str | bytes] | None) -> None:
        self._paths: list[bytes] = []  # matched against the whole path
        self._names: list[bytes] = []  # matched against the name as well
        forms = (form for p in patterns or () if p for form in given_forms(p))
        for form in forms:  # (an empty pattern matches nothing; the CLI refuses it)
            raw = _normalized(form)
            if not raw:
                continue  # ("." alone: the CLI makes it the current directory)
            if b"/" not in raw:
                self._names.append(raw)
                self._paths.append(raw)
            elif raw.startswith((b"/", b"*")):
                self._paths.append(raw)
            else:
                self._paths.append(b"*/" + raw)

    def __bool__(self) -> bool:
        return bool(self._paths)

    def match(self, path: bytes, name: bytes | None = None) -> bool:
        """Whether the entry at ``path`` (whose last component is ``name``) matches any pattern."""
        if name is None:
            name = path.rpartition(b"/")[2]
        match = fnmatch.fnmatchcase
        return any(match(name, p) for p in self._names) or any(match(path, p) for p in self._paths)


def _normalized(pattern: bytes) -> bytes:
    """``pattern`` without doubled slashes, ``.`` components, a ``..`` and the component before it, or a
    trailing slash; the root (``/``, ``//``) as ``/*``, everything inside it."""
    parts: list[bytes] = []
    for part in pattern.split(b"/"):
        if part == b".." and parts and parts[-1] != b"..":
            parts.pop()
        elif part not in (b"", b".") and not (part == b".." and pattern.startswith(b"/")):
            parts.append(part)
    if pattern.startswith(b"/"):
        return b"/" + b"/".join(parts) if parts else b"/*"
    return b"/".join(parts)


def covering(patterns: Sequence[str], path: bytes) -> str | None:
    """The first of ``patterns`` that matches ``path`` (absolute, normalized) or a directory above it,
    and so leaves out all of it; None if none does."""
    parts = path.rstrip(b"/").split(b"/")
    prefixes = [b"/".join(parts[:i]) for i in range(2, len(parts) + 1)] or [b"/"]
    for p in patterns:
        one = Patterns([p])
        if any(one.match(prefix) for prefix in prefixes):
            return p
    return None
