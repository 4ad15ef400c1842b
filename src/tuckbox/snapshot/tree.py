"""Trees: deterministic encoding of one directory's entries.

A tree blob is ``msgpack({"v": 1, "nodes": [node, ...]})`` with nodes sorted
by raw name bytes. A node is a msgpack map whose keys always appear in the
order of ``_FIELDS`` and whose empty/default fields are left out, so equal
directories encode to equal bytes (and so deduplicate).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import msgpack

from ..errors import IntegrityError, UnsupportedFormat
from ..text import display_path
from ..types import ID_LEN

TREE_VERSION = 1

FILE = "file"
DIR = "dir"
SYMLINK = "symlink"
FIFO = "fifo"
CHARDEV = "chardev"
BLOCKDEV = "blockdev"
NODE_TYPES = (FILE, DIR, SYMLINK, FIFO, CHARDEV, BLOCKDEV)

# content items: bytes (a 32-byte chunk id) or int (a hole of that many bytes)
Content = list[bytes | int]


# the warning of a directory a checkpoint holds only part of: its backup was stopped, or had not finished it yet
INCOMPLETE = "incomplete: the backup was interrupted"


@dataclass(slots=True)  # a restore holds one per entry of the snapshot: no per-object __dict__
class Node:
    name: bytes
    type: str
    mode: int = 0  # permission bits incl. setuid/setgid/sticky (S_IMODE)
    uid: int = 0
    gid: int = 0
    user: str = ""
    group: str = ""
    mtime_ns: int = 0
    atime_ns: int = 0
    ctime_ns: int = 0
    size: int = 0
    inode: int = 0
    dev: int = 0
    nlink: int = 1
    rdev: int = 0
    link_target: bytes = b""
    content: Content = field(default_factory=list)  # replaced, never appended to, once filled
    subtree: bytes = b""
    xattrs: list[tuple[bytes, bytes]] = field(default_factory=list)  # includes system.posix_acl_*
    warning: str = ""  # e.g. "changed during backup", INCOMPLETE

    def to_map(self) -> dict[str, Any]:
        # written out (not a loop over _FIELDS): this runs once per entry of every backup
        m: dict[str, Any] = {"n": self.name, "t": self.type}
        if self.mode:
            m["m"] = self.mode
        if self.uid:
            m["u"] = self.uid
        if self.gid:
            m["g"] = self.gid
        if self.user:
            m["un"] = self.user
        if self.group:
            m["gn"] = self.group
        if self.mtime_ns:
            m["mt"] = self.mtime_ns
        if self.atime_ns:
            m["at"] = self.atime_ns
        if self.ctime_ns:
            m["ct"] = self.ctime_ns
        if self.size:
            m["s"] = self.size
        if self.inode:
            m["i"] = self.inode
        if self.dev:
            m["d"] = self.dev
        if self.nlink:
            m["l"] = self.nlink
        if self.rdev:
            m["r"] = self.rdev
        if self.link_target:
            m["lt"] = self.link_target
        if self.content:
            m["c"] = self.content
        if self.subtree:
            m["st"] = self.subtree
        if self.xattrs:
            m["x"] = [[k, v] for k, v in self.xattrs]
        if self.warning:
            m["w"] = self.warning
        return m

    @staticmethod
    def from_map(m: dict[str, Any]) -> "Node":
        node = Node(name=b"", type=FILE)
        node.nlink = 0
        for key, attr in _FIELDS:
            if key in m:
                value = m[key]
                if attr == "xattrs":
                    value = [(bytes(k), bytes(v)) for k, v in value]
                setattr(node, attr, value)
        if not isinstance(node.name, bytes) or node.type not in NODE_TYPES:
            raise IntegrityError("a tree entry is malformed")
        if node.user:
            node.user = sys.intern(node.user)  # a few names shared by thousands of entries
        if node.group:
            node.group = sys.intern(node.group)
        return node


_FIELDS = (
    ("n", "name"),
    ("t", "type"),
    ("m", "mode"),
    ("u", "uid"),
    ("g", "gid"),
    ("un", "user"),
    ("gn", "group"),
    ("mt", "mtime_ns"),
    ("at", "atime_ns"),
    ("ct", "ctime_ns"),
    ("s", "size"),
    ("i", "inode"),
    ("d", "dev"),
    ("l", "nlink"),
    ("r", "rdev"),
    ("lt", "link_target"),
    ("c", "content"),
    ("st", "subtree"),
    ("x", "xattrs"),
    ("w", "warning"),
)


class RawNode:
    """An entry already encoded: ``msgpack.packb`` of its canonical map (``Node.to_map``), and its name.

    The files cache keeps unchanged files' entries this way, so an unchanged
    file costs no decoding and no encoding: its bytes go into the tree as they are.
    """

    __slots__ = ("name", "raw")

    def __init__(self, name: bytes, raw: bytes) -> None:
        self.name = name
        self.raw = raw


_TREE_HEAD = msgpack.packb({"v": TREE_VERSION, "nodes": []})[:-1]  # the document up to its nodes array


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def encode_tree(nodes: list[Node | dict[str, Any] | RawNode]) -> bytes:
    """Encode entries given as Nodes, as maps already in canonical form (``Node.to_map``) or as RawNodes.

    The bytes are the same whichever form an entry comes in (a RawNode is
    spliced in as the encoding of its map), so unchanged directories keep
    their tree ids.
    """
    if not any(type(n) is RawNode for n in nodes):
        maps = [n if isinstance(n, dict) else n.to_map() for n in nodes]  # type: ignore[union-attr]
        maps.sort(key=lambda m: m["n"])
        return msgpack.packb({"v": TREE_VERSION, "nodes": maps})
    keyed: list[tuple[bytes, bytes]] = []
    for n in nodes:
        if type(n) is RawNode:
            keyed.append((n.name, n.raw))
        else:
            m = n if isinstance(n, dict) else n.to_map()  # type: ignore[union-attr]
            keyed.append((m["n"], msgpack.packb(m)))
    keyed.sort(key=lambda k: k[0])
    return b"".join([_TREE_HEAD, _array_header(len(keyed))] + [raw for _, raw in keyed])


def node_refs(nodes: list[Node | dict[str, Any] | RawNode]) -> list[tuple[Any, bytes]]:
    """The (content, subtree id) of each entry, in whichever form it comes (RawNodes are decoded)."""
    out: list[tuple[Any, bytes]] = []
    for n in nodes:
        if type(n) is dict:
            out.append((n.get("c", ()), n.get("st", b"")))
        elif type(n) is RawNode:
            m = msgpack.unpackb(n.raw)
            out.append((m.get("c", ()), m.get("st", b"")))
        else:
            out.append((n.content, n.subtree))  # type: ignore[union-attr]
    return out


def tree_maps(raw: bytes) -> Any:
    """The entry maps of an encoded tree, unchecked, once its framing and version are (IntegrityError,
    UnsupportedFormat)."""
    try:
        doc = msgpack.unpackb(raw)
        version = doc["v"]
        maps = doc["nodes"]
    except (ValueError, KeyError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise IntegrityError("a tree is malformed") from None
    if version != TREE_VERSION:
        raise UnsupportedFormat(f"tree version {version} is not supported; upgrade tuckbox")
    return maps


def _name_ok(v: Any) -> bool:
    return type(v) is bytes and v not in (b"", b".", b"..") and b"/" not in v and b"\0" not in v


def _int(lo: int, hi: int) -> Callable[[Any], bool]:
    return lambda v: type(v) is int and lo <= v < hi


def _content_ok(v: Any) -> bool:
    return type(v) is list and all(
        (type(c) is bytes and len(c) == ID_LEN) or (type(c) is int and 0 <= c < 1 << 63) for c in v
    )


def _xattrs_ok(v: Any) -> bool:
    return type(v) is list and all(
        type(x) in (list, tuple) and len(x) == 2 and type(x[0]) is bytes and type(x[1]) is bytes
        and x[0] and b"\0" not in x[0] for x in v
    )


_ANY_INT = _int(-(1 << 63), 1 << 64)  # whatever msgpack holds (times before 1970 are negative)
_U64 = _int(0, 1 << 64)
_U32 = _int(0, 1 << 32)


def _str(v: Any) -> bool:
    return type(v) is str


# what each field of a node may hold: a tree written by another (maybe hostile) host is checked against it
# before anything acts on it
_VALID: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "n": ("name", _name_ok),
    "t": ("type", lambda v: type(v) is str and v in NODE_TYPES),
    "m": ("mode", _int(0, 0o10000)),
    "u": ("uid", _U32),
    "g": ("gid", _U32),
    "un": ("user name", _str),
    "gn": ("group name", _str),
    "mt": ("mtime", _ANY_INT),
    "at": ("atime", _ANY_INT),
    "ct": ("ctime", _ANY_INT),
    "s": ("size", _int(0, 1 << 63)),
    "i": ("inode", _U64),
    "d": ("device", _U64),
    "l": ("link count", _U64),
    "r": ("device number", _U64),
    "lt": ("symlink target", lambda v: type(v) is bytes and b"\0" not in v),
    "c": ("content", _content_ok),
    "st": ("subtree", lambda v: type(v) is bytes and len(v) == ID_LEN),
    "x": ("xattr list", _xattrs_ok),
    "w": ("warning", _str),
}


_CHECKS = {key: rule[1] for key, rule in _VALID.items()}


def entry_problem(m: Any) -> str | None:
    """What is wrong with one raw tree entry (a field of the wrong type or out of range, a name that is not
    one plain name), or None. Unknown fields are left alone."""
    if type(m) is not dict:
        return "it is not a map"
    if "n" not in m or "t" not in m:
        return "it has no name or no type"
    get = _CHECKS.get
    for key, value in m.items():
        ok = get(key)
        if ok is not None and not ok(value):
            return f"its {_VALID[key][0]} is invalid"
    return None


def entry_label(m: Any) -> bytes:
    """The name of a raw entry to show in a message about it (even a malformed one)."""
    name = m.get("n") if type(m) is dict else None
    return name if type(name) is bytes and name else b"(an entry without a valid name)"


def check_maps(maps: Any) -> tuple[list[dict[str, Any]], list[tuple[bytes, str]]]:
    """A tree's raw entries split into the valid ones and (label, problem) for each other one.

    An entry whose name an earlier entry already has is one of the others (tuckbox writes each name once,
    in sorted order): restoring both would let the second replace the first, or a directory go where a
    symlink was made.
    """
    if type(maps) is not list:
        raise IntegrityError("a tree is malformed")
    good: list[dict[str, Any]] = []
    bad: list[tuple[bytes, str]] = []
    seen: set[bytes] = set()
    for m in maps:
        problem = entry_problem(m)
        if problem is None and m["n"] in seen:
            problem = "another entry of the same directory has that name"
        if problem is None:
            seen.add(m["n"])
            good.append(m)
        else:
            bad.append((entry_label(m), problem))
    return good, bad


def decode_tree(raw: bytes) -> list[Node]:
    """A tree's entries as Nodes; IntegrityError (naming the entry) if any is malformed."""
    good, bad = check_maps(tree_maps(raw))
    if bad:
        name, problem = bad[0]
        raise IntegrityError(f"tree entry {display_path(name)} is malformed: {problem}")
    return [Node.from_map(m) for m in good]
