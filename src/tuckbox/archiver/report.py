"""What a backup run tells as it goes (``Progress``) and counts (``Summary``), and its paths' normal form."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..text import display_path as _display

__all__ = ["LEAF", "Progress", "Summary", "devices_of", "normalize_paths", "path_spec"]

LEAF = object()  # in a ``path_spec``: a path backed up whole


class Progress:
    """Receives progress events; the CLI subclasses it to draw a bar or print JSON lines."""

    def file_started(self, path: bytes, size: int) -> None:  # noqa: D102
        pass

    def bytes_done(self, n: int) -> None:  # noqa: D102
        pass

    def files_unchanged(self, last_path: bytes, count: int, size: int) -> None:
        """``count`` files of ``size`` bytes in all, the last of them ``last_path``, were found unchanged."""

    def warning(self, message: str) -> None:  # noqa: D102
        pass

    def note(self, message: str) -> None:
        """Not a problem, but worth saying (waiting for the repository lock)."""


@dataclass
class Summary:
    files_new: int = 0
    files_changed: int = 0
    files_unmodified: int = 0
    dirs: int = 0
    others: int = 0
    bytes_total: int = 0  # size of every file in the snapshot
    bytes_read: int = 0  # bytes actually read from disk
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "files_new": self.files_new,
            "files_changed": self.files_changed,
            "files_unmodified": self.files_unmodified,
            "dirs": self.dirs,
            "others": self.others,
            "bytes_total": self.bytes_total,
            "bytes_read": self.bytes_read,
            "warnings": len(self.warnings),
        }




def normalize_paths(paths: list[str | bytes]) -> list[bytes]:
    out: list[bytes] = []
    for p in paths:
        raw = os.fsencode(p)
        absolute = os.path.normpath(os.path.abspath(raw))
        try:
            os.lstat(absolute)
        except (FileNotFoundError, NotADirectoryError):
            if b".." in raw.split(b"/") and os.path.lexists(raw):
                _same_as_typed(raw, absolute)
            raise UsageError(f"cannot back up {_display(raw)}: it does not exist") from None
        except PermissionError:  # (a directory above it cannot be searched)
            raise UsageError(f"cannot back up {_display(raw)}: permission denied on a directory leading to it; "
                             "run the backup as a user who can read it") from None
        except OSError as e:
            raise UsageError(f"cannot back up {_display(raw)}: {e.strerror or e}") from None
        if b".." in raw.split(b"/"):
            _same_as_typed(raw, absolute)
        out.append(absolute)
    out = sorted(set(out))
    # drop paths inside other paths
    kept: list[bytes] = []
    for p in out:
        inside = next((k for k in kept if p == k or p.startswith(k.rstrip(b"/") + b"/")), None)
        if inside is None:
            kept.append(p)
        elif p != inside and (link := _link_on_the_way(inside, p)) is not None:
            what = "that is" if link == inside else f"{_display(link)} is"
            raise UsageError(f"cannot back up {_display(p)} together with {_display(inside)}: {what} a symbolic "
                             f"link, backed up as the link alone; back up the directory it points to "
                             f"({_display(os.path.realpath(p))}) instead")
    return kept


def _link_on_the_way(top: bytes, path: bytes) -> bytes | None:
    """The first symbolic link among ``top`` and the directories from it down to ``path``'s parent: the walk
    of ``top`` stores it as a link, so ``path`` below it would silently not be in the snapshot."""
    here = top
    for part in [b""] + path[len(top):].strip(b"/").split(b"/")[:-1]:
        here = os.path.join(here, part) if part else here
        if os.path.islink(here):
            return here
    return None


def devices_of(paths: list[str | bytes]) -> set[int]:
    """The file systems of every path given, also those ``normalize_paths`` drops as inside another (for
    ``--one-file-system``: ``backup / /home`` with /home mounted on its own includes /home)."""
    devices: set[int] = set()
    for p in paths:
        try:
            devices.add(os.lstat(os.path.normpath(os.path.abspath(os.fsencode(p)))).st_dev)
        except OSError:
            pass  # (gone since normalize_paths checked it: the walk warns)
    return devices


def _same_as_typed(raw: bytes, absolute: bytes) -> None:
    """A path with '..' is taken as text (``a/b/../c`` is ``a/c``, as restic and borg take it); refuse one
    where the system goes elsewhere (``link/../c``, the '..' of the directory the link leads to)."""
    try:
        there = os.lstat(raw)
    except OSError:
        there = None
    try:
        meant = os.lstat(absolute)
    except OSError:
        meant = None
    if there is None or meant is None or (there.st_dev, there.st_ino) != (meant.st_dev, meant.st_ino):
        head, last = os.path.split(raw)
        real = os.path.realpath(raw) if last in (b"", b".", b"..") else os.path.join(os.path.realpath(head), last)
        raise UsageError(f"cannot back up {_display(raw)}: with the symbolic link before its '..' that is "
                         f"{_display(real)}, not {_display(absolute)}; give the path without '..'")


def path_spec(paths: list[bytes]) -> dict[bytes, Any]:
    """The directories leading to ``paths`` (absolute, normalized) as nested dicts of their names, each
    path itself ``LEAF`` (``/`` itself is left out: the caller backs up the whole root instead)."""
    spec: dict[bytes, Any] = {}
    for p in paths:
        if p == b"/":
            continue
        parts = [c for c in p.split(b"/") if c]
        node = spec
        for comp in parts[:-1]:
            sub = node.setdefault(comp, {})
            if sub is LEAF:
                break
            node = sub
        else:
            node[parts[-1]] = LEAF
    return spec
