"""Trees: deterministic encoding of one directory's entries.

A tree blob is ``msgpack({"v": 1, "nodes": [node, ...]})`` with nodes sorted
by raw name bytes. A node is a msgpack map whose keys always appear in the
order of ``_FIELDS`` and whose empty/default fields are left out, so equal
directories encode to equal bytes (and so deduplicate).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ..errors import IntegrityError, UnsupportedFormat

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
    warning: str = ""  # e.g. "changed during backup"

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


def decode_tree(raw: bytes) -> list[Node]:
    return [Node.from_map(m) for m in tree_maps(raw)]
