"""Snapshot documents.

A snapshot object is ``b"TBXS" | version u8 | seal_to(metadata public key,
msgpack(document), purpose "snapshot")``; its name is the BLAKE3 hash of the
whole object. Only a full key can read it.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ..errors import IntegrityError, UnsupportedFormat
from ..types import ID_LEN

MAGIC = b"TBXS"
VERSION = 1
PURPOSE = b"snapshot"


@dataclass
class Snapshot:
    time: str  # ISO 8601 with microseconds and offset
    host: str
    user: str
    paths: list[bytes]
    tree: bytes  # root tree id
    tags: list[str] = field(default_factory=list)
    parent: str = ""
    partial: bool = False  # a checkpoint of an unfinished backup
    summary: dict[str, Any] = field(default_factory=dict)
    program: str = ""
    id: str = ""  # object name; not part of the document

    def to_doc(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "time": self.time,
            "host": self.host,
            "user": self.user,
            "paths": list(self.paths),
            "tree": self.tree,
            "tags": list(self.tags),
            "parent": self.parent,
            "partial": self.partial,
            "summary": self.summary,
            "program": self.program,
        }

    def encode(self) -> bytes:
        return msgpack.packb(self.to_doc())

    @staticmethod
    def decode(raw: bytes, name: str) -> "Snapshot":
        try:
            d = msgpack.unpackb(raw)
            if d.get("v") != VERSION:
                raise UnsupportedFormat(f"snapshot {name[:8]} has version {d.get('v')}; upgrade tuckbox")
            problem = _problem(d)
            if problem:
                raise IntegrityError(f"snapshot {name[:8]} is malformed: {problem}")
            return Snapshot(
                time=d["time"],
                host=str(d["host"]),
                user=str(d["user"]),
                paths=list(d["paths"]),
                tree=d["tree"],
                tags=[str(t) for t in d.get("tags", [])],
                parent=str(d.get("parent", "")),
                partial=bool(d.get("partial", False)),
                # counts only (a backup writes nothing else): a text or NaN where a count goes stopped the
                # commands that add them up or show them, for every snapshot
                summary={k: v for k, v in d.get("summary", {}).items() if type(k) is str and type(v) is int},
                program=str(d.get("program", "")),
                id=name,
            )
        except UnsupportedFormat:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            raise IntegrityError(f"snapshot {name[:8]} is malformed") from None

    @property
    def datetime(self) -> _dt.datetime:
        return _dt.datetime.fromisoformat(self.time)

    @property
    def short_id(self) -> str:
        return self.id[:8]


def _problem(d: dict[str, Any]) -> str:
    """What makes a decoded snapshot document unusable ("" if nothing): every command sorts snapshots by
    time, so one whose time cannot be compared would stop them all; ``bytes()`` of a number is that many
    zero bytes, so a path or tree that is one must not get that far."""
    when = d["time"]
    if type(when) is not str:
        return "its time is not text"
    try:
        t = _dt.datetime.fromisoformat(when)
        if t.tzinfo is None:
            return f"its time {when[:40]!r} has no offset from UTC"
        t.astimezone(_dt.timezone.utc).astimezone()  # (a year at the ends of the range overflows here)
        t.timestamp()
    except (ValueError, OverflowError):
        return f"its time {when[:40]!r} is not a valid time"
    tree = d["tree"]
    if type(tree) is not bytes or len(tree) != ID_LEN:
        return "its tree is not a tree id"
    if type(d["paths"]) is not list or any(type(p) is not bytes for p in d["paths"]):
        return "its paths are not a list of paths"
    if type(d.get("summary", {})) is not dict or type(d.get("tags", [])) is not list:
        return "its summary or tags are malformed"
    return ""


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="microseconds")
