"""The ``.tuckbox-restore`` marker: which snapshot a restore is writing into its target, and what of it is owed.

The marker's first line is the snapshot's id. A second line, when there is
one, is the selection (``--include``/``--exclude`` patterns, as JSON) that
the restores into the target which have not completed were asked for; no
second line means the whole snapshot (so does a marker written by an older
tuckbox, which did not record it: the safe reading).

A restore into a target holding the marker is a resumed one. It may be asked
for a different selection than the restore it resumes; the marker then stays
until a restore that covers what is owed completes (``Selection.covers``: the
whole snapshot, or exactly the same patterns), so that an interrupted restore
can always be finished by running it again. While a resumed restore runs, the
marker owes what both were asked for (``Selection.merge``: when that cannot be
said exactly, the whole snapshot).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Sequence

NAME = b".tuckbox-restore"
_OPEN = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Selection:
    """What a restore was asked for: patterns in a canonical form (sorted, no repeats)."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def of(cls, include: Sequence[str | bytes] | None, exclude: Sequence[str | bytes] | None) -> "Selection":
        return cls(_canonical(include), _canonical(exclude))

    @property
    def whole(self) -> bool:
        return not self.include and not self.exclude

    def covers(self, owed: "Selection") -> bool:
        """Whether a completed restore of this selection completes one of ``owed``."""
        return self.whole or self == owed

    def merge(self, other: "Selection") -> "Selection":
        """A selection covering both (the whole snapshot when neither covers the other)."""
        if self.covers(other):
            return self
        if other.covers(self):
            return other
        return WHOLE


WHOLE = Selection()


def _canonical(patterns: Sequence[str | bytes] | None) -> tuple[str, ...]:
    return tuple(sorted({os.fsdecode(os.fsencode(p)) for p in patterns or ()}))


def encode(snapshot_id: str, owed: Selection) -> bytes:
    text = snapshot_id + "\n"
    if not owed.whole:
        text += json.dumps({"include": list(owed.include), "exclude": list(owed.exclude)}) + "\n"
    return text.encode()


def decode(raw: bytes, snapshot_id: str) -> Selection | None:
    """What a marker owes, or None when it is not one for ``snapshot_id``."""
    first, _, rest = raw.partition(b"\n")
    if first.strip() != snapshot_id.encode():
        return None
    try:
        sel = json.loads(rest) if rest.strip() else {}
        return Selection.of(_strings(sel.get("include")), _strings(sel.get("exclude")))
    except (ValueError, AttributeError, TypeError):
        return WHOLE  # unreadable: owe everything


def _strings(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("not a list of patterns")
    return value


def write(path: bytes, snapshot_id: str, owed: Selection) -> int:
    """(Re)write the marker at ``path``; return its descriptor, open for writing (the caller closes it)."""
    fd = os.open(path, _OPEN, 0o600)
    try:
        os.write(fd, encode(snapshot_id, owed))
    except BaseException:
        os.close(fd)
        raise
    return fd


def put_back(path: bytes, snapshot_id: str, owed: Selection) -> None:
    """Leave the marker owing ``owed`` again (a failure leaves the wider one this restore wrote: still safe)."""
    try:
        os.close(write(path, snapshot_id, owed))
    except OSError:
        pass
