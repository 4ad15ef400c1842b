"""One file's content, from a snapshot to a stream (the ``dump`` command): its chunks in order, holes as zeros."""

from __future__ import annotations

from typing import Any, Callable

from ..snapshot.tree import Node
from ..types import BlobType


def dump_file(repo: Any, node: Node, write: Callable[[bytes], Any]) -> int:
    """Write a file node's content (holes as zeros) through ``write``; return bytes written."""
    total = 0
    for item in node.content:
        if isinstance(item, int):
            left = item
            while left:
                n = min(left, 1 << 20)
                write(bytes(n))
                left -= n
            total += item
        else:
            data = repo.load_blob(BlobType.DATA, item)
            write(data)
            total += len(data)
    return total
