"""Index objects and the in-memory master index.

An index object lists packs and the blobs in them::

    seal(index key, zstd(msgpack({"v": 1, "packs": [
        {"id": <pack name, 32 bytes>, "epk": <32 bytes>, "kind": 0|1,
         "size": <pack length>, "blobs": [[id, type, offset, length, raw_length, compression], ...]}
    ]})), ad = b"tuckbox index v1")

Its object name is the BLAKE3 hash of the sealed bytes. The master index maps
every blob id to where it is stored; a blob may be in several packs (two hosts
racing to store it), any copy will do.
"""

from __future__ import annotations

import hmac
import sys
import threading
from array import array
from operator import itemgetter
from dataclasses import dataclass
from typing import Container, Iterable, Iterator

import blake3
import msgpack
import zstandard

from ..crypto.aead import open_sealed, seal
from ..errors import IntegrityError, UnsupportedFormat
from ..pack.format import BlobEntry
from ..types import BlobType

INDEX_AD = b"tuckbox index v1"
INDEX_VERSION = 1
SNAPSHOT_VERSION = 1  # of the local cache's copy of a loaded master index (MasterIndex.to_snapshot)


@dataclass(frozen=True)
class PackRecord:
    name: str  # hex
    epk: bytes
    kind: BlobType
    size: int
    blobs: tuple[BlobEntry, ...]


def encode_index(packs: Iterable[PackRecord], index_key: bytes) -> bytes:
    doc = {
        "v": INDEX_VERSION,
        "packs": [
            {
                "id": bytes.fromhex(p.name),
                "epk": p.epk,
                "kind": int(p.kind),
                "size": p.size,
                "blobs": p.blobs,  # BlobEntry tuples: encoded as their to_list() arrays
            }
            for p in packs
        ],
    }
    return seal(index_key, zstandard.ZstdCompressor(level=3).compress(msgpack.packb(doc)), INDEX_AD)


def _ints_within(values: tuple[object, ...], limit: int) -> bool:
    """Every value an ``int`` (not a bool) in ``[0, limit)``; ``values`` is not empty."""
    return set(map(type, values)) == {int} and min(values) >= 0 and max(values) < limit  # type: ignore[type-var]


@dataclass(frozen=True)
class RawPack:
    """A pack as an index object lists it, blob entries still as decoded lists (cheap to load)."""

    record: PackRecord  # without its blob list
    blobs: list[list[object]]


def decode_index_raw(sealed: bytes, index_key: bytes, name: str) -> list[RawPack]:
    plain = open_sealed(index_key, sealed, INDEX_AD, f"index {name[:8]}")
    try:
        doc = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(plain, max_output_size=1 << 30))
        if doc.get("v") != INDEX_VERSION:
            raise UnsupportedFormat(f"index {name[:8]} has version {doc.get('v')}; upgrade tuckbox")
        out = []
        for p in doc["packs"]:
            pack_id, epk = p["id"], p["epk"]
            if not isinstance(pack_id, bytes) or len(pack_id) != 32 or not isinstance(epk, bytes) or len(epk) != 32:
                raise ValueError
            blobs = p["blobs"]
            if not isinstance(blobs, list):
                raise ValueError
            out.append(RawPack(PackRecord(pack_id.hex(), epk, BlobType(p["kind"]), int(p["size"]), ()), blobs))
        return out
    except UnsupportedFormat:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, zstandard.ZstdError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise IntegrityError(f"index {name[:8]} is malformed") from None


def decode_index(sealed: bytes, index_key: bytes, name: str) -> list[PackRecord]:
    """Full records (blob entries as BlobEntry objects); for small indexes and tests."""
    try:
        return [
            PackRecord(r.record.name, r.record.epk, r.record.kind, r.record.size,
                       tuple(BlobEntry.from_list(b) for b in r.blobs))
            for r in decode_index_raw(sealed, index_key, name)
        ]
    except IntegrityError:
        raise IntegrityError(f"index {name[:8]} is malformed") from None


@dataclass(frozen=True)
class Location:
    pack: PackRecord  # without its blob list
    entry: BlobEntry


class MasterIndex:
    """Every blob of the repository: id -> where it is stored. Thread-safe for concurrent add/lookup.

    Kept compact because it holds one row per blob of the whole repository: a
    dict from blob id to a row number, and the rows in parallel arrays (about
    140 bytes per blob instead of several Python objects).
    """

    def __init__(self) -> None:
        self._rows: dict[bytes, int] = {}
        self._ids: list[bytes] = []
        self._pack = array("I")
        self._offset = array("Q")
        self._length = array("I")
        self._raw = array("I")
        self._kind = array("B")  # blob type << 4 | compression
        self._pack_list: list[PackRecord] = []
        self.packs: dict[str, PackRecord] = {}  # name -> record without its blob list
        self._pack_no: dict[str, int] = {}
        self.index_names: set[str] = set()
        self._lock = threading.Lock()
        self._grouped: dict[int, list[int]] | None = None
        self._added: set[str] = set()  # packs added by add_pack (this run's)...
        self._covered: set[str] = set()  # ...and those an index object written by this run lists

    def add_pack(self, pack: PackRecord) -> None:
        with self._lock:
            if pack.name in self._pack_no:
                return
            self._added.add(pack.name)
            slim = PackRecord(pack.name, pack.epk, pack.kind, pack.size, ())
            no = len(self._pack_list)
            self._pack_list.append(slim)
            self._pack_no[pack.name] = no
            self.packs[pack.name] = slim
            self._grouped = None
            for e in pack.blobs:
                if e.id in self._rows:
                    continue  # any stored copy serves
                self._rows[e.id] = len(self._ids)
                self._ids.append(e.id)
                self._pack.append(no)
                self._offset.append(e.offset)
                self._length.append(e.length)
                self._raw.append(e.raw_length)
                self._kind.append(int(e.type) << 4 | e.compression)

    def add_raw(self, raw: RawPack, *, new: bool = False) -> None:
        """Add a pack straight from an index object's lists (validated, no per-blob objects);
        ``new``: a pack this run stored (as ``add_pack``), which an index object must still name."""
        pack = raw.record
        try:
            blobs = raw.blobs
            if blobs and not (set(map(type, blobs)) == {list} and set(map(len, blobs)) == {6}):
                raise ValueError
            # column by column, in C (three times faster than zip(*blobs) on a large index)
            ids, types, offsets, lengths, raws, comps = (tuple(map(itemgetter(k), blobs)) for k in range(6))
            # (every check a pass in C: a large repository's index is millions of entries)
            if ids and not (
                set(map(type, ids)) == {bytes} and set(map(len, ids)) == {32}
                and set(map(type, types)) == {int} and set(types) <= {0, 1}
                and _ints_within(comps, 16) and _ints_within(offsets, 1 << 40)
                and _ints_within(lengths, 1 << 32) and _ints_within(raws, 1 << 32)
            ):
                raise ValueError
        except (ValueError, TypeError):
            raise IntegrityError(f"pack {pack.name[:8]} has a malformed index entry") from None
        with self._lock:
            if pack.name in self._pack_no:
                return
            if new:
                self._added.add(pack.name)
            no = len(self._pack_list)
            self._pack_list.append(pack)
            self._pack_no[pack.name] = no
            self.packs[pack.name] = pack
            self._grouped = None
            rowmap = self._rows
            keep = range(len(ids))
            if not rowmap.keys().isdisjoint(ids) or len(set(ids)) != len(ids):
                seen: set[bytes] = set()
                keep = [i for i, b in enumerate(ids) if b not in rowmap and not (b in seen or seen.add(b))]  # type: ignore[func-returns-value]
                ids = tuple(ids[i] for i in keep)
                types, offsets, lengths, raws, comps = (tuple(c[i] for i in keep) for c in (types, offsets, lengths, raws, comps))
            first = len(self._ids)
            rowmap.update(zip(ids, range(first, first + len(ids))))
            self._ids.extend(ids)
            self._pack.extend([no] * len(ids))
            self._offset.extend(offsets)
            self._length.extend(lengths)
            self._raw.extend(raws)
            self._kind.extend([t << 4 | c for t, c in zip(types, comps)])

    def indexed(self, index_name: str, pack_names: Iterable[str]) -> None:
        """An index object listing these packs was stored."""
        with self._lock:
            self.index_names.add(index_name)
            self._covered.update(pack_names)

    def has(self, blob_id: bytes) -> bool:
        return blob_id in self._rows

    def has_all(self, blob_ids: list[bytes], also: Container[bytes]) -> bool:
        """Whether every id is indexed or in ``also``."""
        rows = self._rows
        for b in blob_ids:
            if b not in rows and b not in also:
                return False
        return True

    def _entry(self, row: int) -> BlobEntry:
        kind = self._kind[row]
        return BlobEntry(self._ids[row], BlobType(kind >> 4), self._offset[row], self._length[row], self._raw[row], kind & 15)

    def lookup(self, blob_id: bytes) -> Location | None:
        row = self._rows.get(blob_id)
        if row is None:
            return None
        return Location(self._pack_list[self._pack[row]], self._entry(row))

    def raw_length(self, blob_id: bytes) -> int | None:
        row = self._rows.get(blob_id)
        return None if row is None else self._raw[row]

    def __len__(self) -> int:
        return len(self._rows)

    def pack_blobs(self, name: str) -> list[BlobEntry]:
        """The blobs this index attributes to one pack (first copies only)."""
        with self._lock:
            if self._grouped is None:
                grouped: dict[int, list[int]] = {}
                for row, no in enumerate(self._pack):
                    grouped.setdefault(no, []).append(row)
                self._grouped = grouped
            rows = self._grouped.get(self._pack_no.get(name, -1), [])
        return [self._entry(r) for r in rows]

    def entries(self) -> Iterator[tuple[PackRecord, BlobEntry]]:
        for row in range(len(self._ids)):
            yield self._pack_list[self._pack[row]], self._entry(row)

    # -- the local cache's copy (a large repository's index loads in a fraction of the time) --

    def to_snapshot(self, mac_key: bytes) -> bytes | None:
        """This index as one authenticated byte string, or None if it holds a pack that no stored index
        object lists yet (this run's): a snapshot claims only what the index objects in ``index_names`` say."""
        with self._lock:
            if not self._added <= self._covered or not self.index_names:
                return None
            n = len(self._ids)
            header = msgpack.packb({
                "v": SNAPSHOT_VERSION,
                "order": sys.byteorder,
                "sizes": [a.itemsize for a in self._columns()],
                "n": n,
                "indexes": sorted(self.index_names),
                "packs": [[p.name, p.epk, int(p.kind), p.size] for p in self._pack_list],
            })
            body = b"".join(
                [len(header).to_bytes(4, "little"), header, b"".join(self._ids)]
                + [a.tobytes() for a in self._columns()]
            )
        return blake3.blake3(body, key=mac_key).digest() + body

    def load_snapshot(self, data: bytes, mac_key: bytes, listed: set[str]) -> bool:
        """Fill this (empty) index from ``to_snapshot``'s bytes; False, leaving it empty, if they are
        not exactly such bytes under this key, or cover an index object no longer ``listed``."""
        if len(data) < 36 or self._ids or self.index_names:
            return False
        body = memoryview(data)[32:]
        if not hmac.compare_digest(blake3.blake3(body, key=mac_key).digest(), data[:32]):
            return False
        try:
            hlen = int.from_bytes(body[:4], "little")
            header = msgpack.unpackb(body[4:4 + hlen])
            if header["v"] != SNAPSHOT_VERSION or header["order"] != sys.byteorder:
                return False
            if not set(header["indexes"]) <= listed:
                return False  # an index object was removed since (its packs may be gone)
            n = header["n"]
            columns = [array(a.typecode) for a in self._columns()]
            if header["sizes"] != [a.itemsize for a in columns]:
                return False
            packs = [PackRecord(name, epk, BlobType(kind), size, ()) for name, epk, kind, size in header["packs"]]
            pos = 4 + hlen
            raw_ids = bytes(body[pos:pos + 32 * n])
            pos += 32 * n
            for a in columns:
                a.frombytes(body[pos:pos + a.itemsize * n])
                pos += a.itemsize * n
            if pos != len(body) or len(raw_ids) != 32 * n or any(len(a) != n for a in columns):
                return False
            ids = [raw_ids[i:i + 32] for i in range(0, 32 * n, 32)]
            rows = dict(zip(ids, range(n)))
            if len(rows) != n or (n and max(columns[0]) >= len(packs)):
                return False
        except (KeyError, TypeError, ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            return False
        with self._lock:
            self._rows, self._ids = rows, ids
            self._pack, self._offset, self._length, self._raw, self._kind = columns
            self._pack_list = packs
            self._pack_no = {p.name: i for i, p in enumerate(packs)}
            self.packs = {p.name: p for p in packs}
            self.index_names = set(header["indexes"])
            self._grouped = None
        return True

    def _columns(self) -> list[array]:
        return [self._pack, self._offset, self._length, self._raw, self._kind]
