"""The chunker: streamed cut points equal in-memory ones, and depend on the secret seed."""

from __future__ import annotations

import os
import random

import pytest

from tuckbox.chunker import Chunker, ChunkerParams

SMALL = ChunkerParams(min_size=4096, avg_size=4096 + 8192, max_size=65536)


def _sizes(chunks) -> list[int]:  # type: ignore[no-untyped-def]
    return [len(c) for c in chunks]


@pytest.mark.parametrize("fill", [None, 5000, 70_000])
@pytest.mark.parametrize("length", [0, 1, 4095, 65536, 131072, 131073, 1_000_003])
def test_streamed_cuts_equal_in_memory_cuts(tmp_path, monkeypatch, length: int, fill: int | None) -> None:
    if fill is not None:
        # reads smaller than a chunk's maximum: undecided chunks are carried over several rounds
        monkeypatch.setattr("tuckbox.chunker.FILL_SIZE", fill)
    rng = random.Random(length)
    # random data with long repetitive stretches, so both gear cuts and max-size cuts occur
    parts = []
    while sum(map(len, parts)) < length:
        parts.append(rng.randbytes(rng.randrange(1, 50_000)) if rng.random() < 0.7 else bytes(rng.randrange(1, 200_000)))
    data = b"".join(parts)[:length]
    path = tmp_path / "f"
    path.write_bytes(b"HEADER" + data + b"TRAILER")
    chunker = Chunker(SMALL, seed=1234)
    fd = os.open(path, os.O_RDONLY)
    try:
        streamed = [bytes(c) for c in chunker.chunks_fd(fd, 6, length)]
        again = [bytes(c) for c in chunker.chunks_fd(fd, 6, length)]  # the per-thread buffer is reused
    finally:
        os.close(fd)
    expected = [bytes(c) for c in chunker.chunks_of(data)]
    assert streamed == expected
    assert again == expected
    assert b"".join(streamed) == data
    assert all(len(c) <= SMALL.max_size for c in streamed)


def test_streamed_read_stops_at_end_of_file(tmp_path) -> None:
    data = random.Random(7).randbytes(300_000)
    path = tmp_path / "f"
    path.write_bytes(data)
    chunker = Chunker(SMALL, seed=99)
    fd = os.open(path, os.O_RDONLY)
    try:
        got = b"".join(bytes(c) for c in chunker.chunks_fd(fd, 0, 10_000_000))  # asks for more than there is
    finally:
        os.close(fd)
    assert got == data


def test_cut_points_depend_on_the_seed() -> None:
    data = random.Random(3).randbytes(2_000_000)
    a = _sizes(Chunker(SMALL, seed=1).chunks_of(data))
    b = _sizes(Chunker(SMALL, seed=2).chunks_of(data))
    assert sum(a) == sum(b) == len(data)
    assert a != b


def test_buffer_given_back_after_a_long_chunk_is_reused_correctly(tmp_path) -> None:
    # a run of zeros longer than max_size forces a max-size chunk, so the per-thread buffer fills far
    # beyond KEEP_SIZE; its tail pages are then given back (they read as zeros) and the next files,
    # chunked with the same buffer, must still cut exactly like an in-memory pass
    from tuckbox.chunker import KEEP_SIZE

    params = ChunkerParams()
    rng = random.Random(11)
    long_chunk = rng.randbytes(600_000) + bytes(params.max_size + (1 << 20)) + rng.randbytes(3 << 20)
    chunker = Chunker(params, seed=77)
    for i, data in enumerate([long_chunk, rng.randbytes(14 << 20), long_chunk[::-1]]):
        path = tmp_path / f"f{i}"
        path.write_bytes(data)
        fd = os.open(path, os.O_RDONLY)
        try:
            streamed = [bytes(c) for c in chunker.chunks_fd(fd, 0, len(data))]
        finally:
            os.close(fd)
        assert streamed == [bytes(c) for c in chunker.chunks_of(data)]
        assert max(map(len, streamed)) > KEEP_SIZE or i == 1
