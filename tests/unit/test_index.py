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


@pytest.mark.parametrize(
    "column, value",
    [(0, b"short id"), (0, "a" * 32), (1, 2), (1, "0"), (2, 1 << 40), (2, 1.0), (3, -1), (4, 1 << 32),
     (5, 16), (5, True), (5, None)],
)
def test_every_malformed_field_is_refused(column, value):
    ids = [os.urandom(32) for _ in range(3)]
    raw = decode_index_raw(encode_index([pack(4, ids)], KEY), KEY, "x")[0]
    raw.blobs[1][column] = value
    idx = MasterIndex()
    with pytest.raises(IntegrityError):
        idx.add_raw(raw)
    assert len(idx) == 0


@pytest.mark.parametrize("change", ["shorter", "longer", "not a list"])
def test_entries_of_the_wrong_shape_are_refused(change):
    raw = decode_index_raw(encode_index([pack(5, [os.urandom(32), os.urandom(32)])], KEY), KEY, "x")[0]
    if change == "shorter":
        raw.blobs[0].pop()
    elif change == "longer":
        raw.blobs[1].append(7)
    else:
        raw.blobs[1] = tuple(raw.blobs[1])
    with pytest.raises(IntegrityError):
        MasterIndex().add_raw(raw)


def _loaded(*packs: PackRecord, name: str = "idx1") -> MasterIndex:
    idx = MasterIndex()
    for raw in decode_index_raw(encode_index(list(packs), KEY), KEY, name):
        idx.add_raw(raw)
    idx.index_names.add(name)
    return idx


def test_snapshot_round_trip_gives_the_same_index():
    ids = [os.urandom(32) for _ in range(50)]
    p1, p2 = pack(6, ids[:30]), pack(7, ids[20:] + [ids[0]], BlobType.TREE)  # overlapping: first copies win
    idx = _loaded(p1, p2)
    mac = os.urandom(32)
    snap = idx.to_snapshot(mac)
    assert snap is not None
    copy = MasterIndex()
    assert copy.load_snapshot(snap, mac, {"idx1", "other"})
    assert copy.index_names == {"idx1"} and len(copy) == len(idx) == 50
    for i in ids + [os.urandom(32)]:
        assert copy.lookup(i) == idx.lookup(i)
        assert copy.raw_length(i) == idx.raw_length(i)
    assert copy.packs == idx.packs
    assert [e.id for e in copy.pack_blobs(p2.name)] == [e.id for e in idx.pack_blobs(p2.name)]
    # and it keeps working as a master index: a new pack is added after the loaded rows
    extra = pack(8, [os.urandom(32)])
    copy.add_pack(extra)
    assert copy.lookup(extra.blobs[0].id).pack.name == extra.name and len(copy) == 51


def test_a_snapshot_is_refused_when_damaged_stale_or_under_another_key():
    idx = _loaded(pack(9, [os.urandom(32) for _ in range(5)]))
    mac = os.urandom(32)
    snap = idx.to_snapshot(mac)
    assert snap is not None
    for pos in (0, 31, 32, 40, len(snap) // 2, len(snap) - 1):
        bad = bytearray(snap)
        bad[pos] ^= 0x10
        target = MasterIndex()
        assert not target.load_snapshot(bytes(bad), mac, {"idx1"})
        assert len(target) == 0 and not target.index_names
    assert not MasterIndex().load_snapshot(snap[:-1], mac, {"idx1"})
    assert not MasterIndex().load_snapshot(snap, os.urandom(32), {"idx1"})
    assert not MasterIndex().load_snapshot(snap, mac, {"another index"})  # its index object was removed
    assert not MasterIndex().load_snapshot(b"", mac, {"idx1"})
    assert MasterIndex().load_snapshot(snap, mac, {"idx1"})


def test_no_snapshot_of_an_index_holding_packs_no_index_object_lists():
    idx = _loaded(pack(10, [os.urandom(32)]))
    mine, other = pack(11, [os.urandom(32)]), pack(12, [os.urandom(32)])
    idx.add_pack(mine)  # stored by this run, its index object not written yet
    idx.add_pack(other)
    assert idx.to_snapshot(os.urandom(32)) is None
    assert MasterIndex().to_snapshot(os.urandom(32)) is None  # nothing loaded: nothing to claim
    idx.indexed("idx2", [mine.name])
    assert idx.to_snapshot(os.urandom(32)) is None  # one pack is still not listed by a stored index object
    idx.indexed("idx3", [other.name])
    mac = os.urandom(32)
    snap = idx.to_snapshot(mac)
    assert snap is not None
    copy = MasterIndex()
    assert copy.load_snapshot(snap, mac, {"idx1", "idx2", "idx3"})
    assert copy.index_names == {"idx1", "idx2", "idx3"} and len(copy) == 3
    assert copy.lookup(other.blobs[0].id) == idx.lookup(other.blobs[0].id)
    assert not MasterIndex().load_snapshot(snap, mac, {"idx1", "idx2"})  # idx3 gone: refused
