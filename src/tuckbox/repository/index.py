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

import threading
from dataclasses import dataclass
from typing import Iterable, Iterator

import msgpack
import zstandard

from ..crypto.aead import open_sealed, seal
from ..errors import IntegrityError, UnsupportedFormat
from ..pack.format import BlobEntry
from ..types import BlobType

INDEX_AD = b"tuckbox index v1"
INDEX_VERSION = 1


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
                "blobs": [b.to_list() for b in p.blobs],
            }
            for p in packs
        ],
    }
    return seal(index_key, zstandard.ZstdCompressor(level=3).compress(msgpack.packb(doc)), INDEX_AD)


def decode_index(sealed: bytes, index_key: bytes, name: str) -> list[PackRecord]:
    plain = open_sealed(index_key, sealed, INDEX_AD, f"index {name[:8]}")
    try:
        doc = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(plain, max_output_size=1 << 30))
        if doc.get("v") != INDEX_VERSION:
            raise UnsupportedFormat(f"index {name[:8]} has version {doc.get('v')}; upgrade tuckbox")
        return [
            PackRecord(
                name=bytes(p["id"]).hex(),
                epk=bytes(p["epk"]),
                kind=BlobType(p["kind"]),
                size=int(p["size"]),
                blobs=tuple(BlobEntry.from_list(b) for b in p["blobs"]),
            )
            for p in doc["packs"]
        ]
    except UnsupportedFormat:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, zstandard.ZstdError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise IntegrityError(f"index {name[:8]} is malformed") from None


@dataclass(frozen=True)
class Location:
    pack: PackRecord
    entry: BlobEntry


class MasterIndex:
    """Every blob of the repository: id -> (pack, entry). Thread-safe for concurrent add/lookup."""

    def __init__(self) -> None:
        self._blobs: dict[bytes, tuple[PackRecord, BlobEntry]] = {}
        self.packs: dict[str, PackRecord] = {}
        self.index_names: set[str] = set()
        self._lock = threading.Lock()

    def add_pack(self, pack: PackRecord) -> None:
        with self._lock:
            self.packs[pack.name] = pack
            for entry in pack.blobs:
                self._blobs.setdefault(entry.id, (pack, entry))

    def has(self, blob_id: bytes) -> bool:
        return blob_id in self._blobs

    def lookup(self, blob_id: bytes) -> Location | None:
        found = self._blobs.get(blob_id)
        return Location(*found) if found else None

    def __len__(self) -> int:
        return len(self._blobs)

    def entries(self) -> Iterator[tuple[PackRecord, BlobEntry]]:
        for pack in list(self.packs.values()):
            for entry in pack.blobs:
                yield pack, entry
