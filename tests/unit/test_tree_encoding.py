"""Tree blobs are the same bytes whether entries come as Nodes, maps or already-encoded RawNodes."""

from __future__ import annotations

import random

import msgpack
import pytest

from tuckbox.snapshot.tree import FILE, TREE_VERSION, Node, RawNode, decode_tree, encode_tree


def _node(i: int) -> Node:
    return Node(name=f"f{i:06}".encode(), type=FILE, mode=0o644, size=i, mtime_ns=i * 7, content=[bytes(32)])


@pytest.mark.parametrize("count", [0, 1, 15, 16, 17, 65535, 65536, 65537])
def test_raw_nodes_splice_into_the_same_bytes(count: int) -> None:
    rng = random.Random(count)
    nodes = [_node(i) for i in range(count)]
    expected = msgpack.packb({"v": TREE_VERSION, "nodes": [n.to_map() for n in nodes]})
    assert encode_tree(list(nodes)) == expected
    mixed: list = []
    for n in nodes:
        form = rng.randrange(3)
        mixed.append(n if form == 0 else n.to_map() if form == 1 else RawNode(n.name, msgpack.packb(n.to_map())))
    if count:
        mixed[0] = RawNode(nodes[0].name, msgpack.packb(nodes[0].to_map()))  # at least one raw entry
    rng.shuffle(mixed)  # entries are sorted by name whatever order they come in
    assert encode_tree(mixed) == expected
    assert [n.name for n in decode_tree(encode_tree(mixed))] == [n.name for n in nodes]
