"""Index objects and the compact master index."""

from __future__ import annotations

import os

import pytest

from tuckbox.errors import IntegrityError
from tuckbox.pack.format import BlobEntry
from tuckbox.repository.index import MasterIndex, PackRecord, decode_index, decode_index_raw, encode_index
from tuckbox.types import BlobType

KEY = os.urandom(32)


def pack(name_byte: int, ids: list[bytes], kind=BlobType.DATA) -> PackRecord:
    blobs = tuple(BlobEntry(i, kind, 40 + 100 * k, 90, 80 + k, 1) for k, i in enumerate(ids))
    return PackRecord((bytes([name_byte]) * 32).hex(), os.urandom(32), kind, 5000, blobs)


def test_round_trip_and_lookup():
    a, b, c = (os.urandom(32) for _ in range(3))
    p1, p2 = pack(1, [a, b]), pack(2, [b, c], BlobType.TREE)
    sealed = encode_index([p1, p2], KEY)
    assert decode_index(sealed, KEY, "x") == [p1, p2]
    idx = MasterIndex()
    for raw in decode_index_raw(sealed, KEY, "x"):
        idx.add_raw(raw)
    assert len(idx) == 3 and idx.has(a) and idx.has(c) and not idx.has(os.urandom(32))
    loc = idx.lookup(b)
    assert loc is not None and loc.pack.name == p1.name and loc.entry == p1.blobs[1]  # first copy serves
    assert idx.lookup(c).entry == p2.blobs[1]
    assert idx.raw_length(a) == 80
    assert [e.id for e in idx.pack_blobs(p2.name)] == [c]
    assert sorted(p.name for p, _ in idx.entries()) == sorted([p1.name, p1.name, p2.name])
    # adding the same pack again changes nothing
    idx.add_pack(p1)
    assert len(idx) == 3


def test_malformed_entries_and_tampering_are_refused():
    p = pack(3, [os.urandom(32)])
    sealed = bytearray(encode_index([p], KEY))
    sealed[20] ^= 1
    with pytest.raises(IntegrityError):
        decode_index_raw(bytes(sealed), KEY, "x")
    with pytest.raises(IntegrityError):
        decode_index_raw(encode_index([p], KEY), os.urandom(32), "x")
    raw = decode_index_raw(encode_index([p], KEY), KEY, "x")[0]
    raw.blobs[0][2] = -5  # a negative offset
    with pytest.raises(IntegrityError):
        MasterIndex().add_raw(raw)
