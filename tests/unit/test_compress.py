"""Batch compression gives exactly what one-at-a-time compression gives, and round-trips."""

from __future__ import annotations

import os
import random

from tuckbox.pack.format import COMPRESSION_NONE, COMPRESSION_ZSTD, compress, compress_many, decompress


def test_compress_many_equals_compress_and_round_trips() -> None:
    rng = random.Random(5)
    blobs = [
        b"text " * rng.randrange(1, 5000) for _ in range(20)
    ] + [os.urandom(rng.randrange(1, 100_000)) for _ in range(10)] + [b"x", b"\0" * (1 << 20)]
    rng.shuffle(blobs)
    many = compress_many(blobs)
    assert [(bytes(p), c) for p, c in many] == [(bytes(p), c) for p, c in map(compress, blobs)]
    # blob by blob (the pack process's way): the same bytes
    assert [(bytes(p), c) for p, c in compress_many(blobs, each=True)] == [(bytes(p), c) for p, c in many]
    kinds = {c for _, c in many}
    assert kinds == {COMPRESSION_NONE, COMPRESSION_ZSTD}  # random data is stored raw, text compressed
    for blob, (payload, comp) in zip(blobs, many):
        assert decompress(bytes(payload), comp, len(blob)) == blob


def test_compress_many_small_batches() -> None:
    assert compress_many([]) == []
    assert compress_many([b"abc" * 100]) == [compress(b"abc" * 100)]
    assert compress_many([b"", b"abc" * 100]) == [compress(b""), compress(b"abc" * 100)]
