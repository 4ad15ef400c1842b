"""Trees: deterministic encoding of one directory's entries.

A tree blob is ``msgpack({"v": 1, "nodes": [node, ...]})`` with nodes sorted
by raw name bytes. A node is a msgpack map whose keys always appear in the
order of ``_FIELDS`` and whose empty/default fields are left out, so equal
directories encode to equal bytes (and so deduplicate).
"""

from __future__ import annotations

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


@dataclass
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
    content: Content = field(default_factory=list)
    subtree: bytes = b""
    xattrs: list[tuple[bytes, bytes]] = field(default_factory=list)  # includes system.posix_acl_*
    warning: str = ""  # e.g. "changed during backup"

    def to_map(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, attr in _FIELDS:
            value = getattr(self, attr)
            if value in (None, "", b"", 0, []) and key not in ("n", "t"):
                continue
            if attr == "xattrs":
                value = [[k, v] for k, v in value]
            out[key] = value
        return out

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


def encode_tree(nodes: list[Node]) -> bytes:
    nodes = sorted(nodes, key=lambda n: n.name)
    return msgpack.packb({"v": TREE_VERSION, "nodes": [n.to_map() for n in nodes]})


def decode_tree(raw: bytes) -> list[Node]:
    try:
        doc = msgpack.unpackb(raw)
        version = doc["v"]
        maps = doc["nodes"]
    except (ValueError, KeyError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise IntegrityError("a tree is malformed") from None
    if version != TREE_VERSION:
        raise UnsupportedFormat(f"tree version {version} is not supported; upgrade tuckbox")
    return [Node.from_map(m) for m in maps]
