"""Pack byte layout. Pure format code: builds and parses bytes, knows no backend.

A pack (see docs/design.md, "Packs")::

    prefix   "TBXP" | version u8 (1) | 3 zero bytes | epk (32)            40 bytes, clear
    blobs    AES-256-GCM(blob key, nonce = blob id[:12],
                         ad = blob id | type u8 | compression u8)     one after another
    header   AES-256-GCM(header key, nonce 0, msgpack entries)
    padding  zero bytes, so the pack's total length is a Padmé length
    trailer  AES-256-GCM(trailer key, nonce 0, header offset u64 | header length u32)   28 bytes

The pack key is derived by X25519 between the ephemeral key ``epk`` and the
recipient (data or metadata) public key, so a write-only key can make packs
that only a full key can open. Blob, header and trailer keys are separate HKDF
outputs of the pack key. Ids are unique within a pack, so blob nonces never
repeat under one key.
"""

from __future__ import annotations

import mmap
import struct
import sys
import threading
from typing import NamedTuple

import msgpack
import zstandard

from ..errors import IntegrityError, UnsupportedFormat
from ..types import ID_LEN, BlobType
from ..crypto.aead import (
    EPK_LEN,
    TAG_LEN,
    counter_nonce,
    decrypt_with_nonce,
    encrypt_into_with_nonce,
    hkdf,
    new_ephemeral_key,
    opener_with_nonce,
    recover_ephemeral_key,
    sealer_with_nonce,
)

MAGIC = b"TBXP"
VERSION = 1
PREFIX_LEN = 4 + 1 + 3 + EPK_LEN
TRAILER_PLAIN = struct.Struct(">QI")
TRAILER_LEN = TRAILER_PLAIN.size + TAG_LEN
PURPOSE = b"pack"

COMPRESSION_NONE = 0
COMPRESSION_ZSTD = 1
ZSTD_LEVEL = 3
# Store raw when zstd saves less than this fraction.
MIN_SAVING = 0.03


class BlobEntry(NamedTuple):
    """A blob's place in its pack. A tuple, so msgpack encodes it as the array ``to_list`` gives
    (``type`` is an IntEnum: encoded as its integer) without building a list per blob."""

    id: bytes
    type: BlobType
    offset: int
    length: int  # ciphertext length in the pack, tag included
    raw_length: int  # plaintext length
    compression: int

    def to_list(self) -> list[object]:
        return [self.id, int(self.type), self.offset, self.length, self.raw_length, self.compression]

    @staticmethod
    def from_list(item: list[object]) -> "BlobEntry":
        try:
            bid, btype, offset, length, raw, comp = item
            if not isinstance(bid, bytes) or len(bid) != ID_LEN:
                raise ValueError
            return BlobEntry(bid, BlobType(btype), int(offset), int(length), int(raw), int(comp))  # type: ignore[arg-type]
        except (ValueError, TypeError):
            raise IntegrityError("a blob entry is malformed") from None


def padme(length: int) -> int:
    """Padmé padding: at most 12 % overhead, leaks O(log log L) bits of the length."""
    if length < 2:
        return length
    e = length.bit_length() - 1
    s = e.bit_length()
    last_bits = e - s
    mask = (1 << last_bits) - 1
    return (length + mask) & ~mask


def _subkeys(pack_key: bytes) -> tuple[bytes, bytes, bytes]:
    return (
        hkdf(pack_key, b"tuckbox v1 pack blobs"),
        hkdf(pack_key, b"tuckbox v1 pack header"),
        hkdf(pack_key, b"tuckbox v1 pack trailer"),
    )


def _blob_ad(blob_id: bytes, blob_type: BlobType, compression: int) -> bytes:
    return blob_id + bytes((int(blob_type), compression))


_zstd_local = __import__("threading").local()


def _compressor() -> zstandard.ZstdCompressor:
    c = getattr(_zstd_local, "c", None)
    if c is None:
        c = _zstd_local.c = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return c


def _choose(data: bytes | memoryview, out: bytes | memoryview) -> tuple[bytes | memoryview, int]:
    if len(out) <= len(data) * (1 - MIN_SAVING):
        return out, COMPRESSION_ZSTD
    return data, COMPRESSION_NONE


def compress(data: bytes | memoryview) -> tuple[bytes | memoryview, int]:
    """zstd, or the raw bytes where compression does not pay. Thread-safe."""
    return _choose(data, _compressor().compress(data))


def compress_many(datas: list[bytes], each: bool = False) -> list[tuple[bytes | memoryview, int]]:
    """``compress`` for a batch, in one call that releases the GIL throughout (unless ``each``).

    Compressing small blobs one call at a time makes a worker re-acquire the
    GIL after every blob; while the walking thread runs Python, each of those
    waits costs more than compressing (measured: about 2x slower under load).
    But the batch call makes a new zstd context each time, whose tables (~1 MiB)
    are fresh pages, cleared: where no walk shares the GIL (the pack process)
    ``each`` compresses blob by blob with the thread's own context, kept.
    The output is byte-identical to ``compress`` on each blob.
    """
    c = _compressor()
    multi = getattr(c, "multi_compress_to_buffer", None)
    if each or multi is None or len(datas) < 2 or not all(datas):
        return [compress(d) for d in datas]
    result = multi(datas, threads=1)
    # each output is a view into one result buffer (kept alive by the views): no copy per blob
    return [_choose(d, memoryview(result[i])) for i, d in enumerate(datas)]


def decompress(data: bytes, compression: int, raw_length: int) -> bytes:
    if compression == COMPRESSION_NONE:
        return data
    if compression != COMPRESSION_ZSTD:
        raise UnsupportedFormat(f"unknown compression {compression}; upgrade tuckbox")
    d = getattr(_zstd_local, "d", None)
    if d is None:
        d = _zstd_local.d = zstandard.ZstdDecompressor()
    try:
        out = d.decompress(data, max_output_size=raw_length)
    except zstandard.ZstdError:
        raise IntegrityError("a blob failed to decompress") from None
    if len(out) != raw_length:
        raise IntegrityError("a blob decompressed to the wrong length")
    return out


POOL_MAX = 1  # released pack buffers kept for reuse


class _BufferPool:
    """Pack buffers given back after their pack was stored, for the next packs.

    A fresh anonymous mapping costs a page fault and a cleared page for every
    4 KiB the next pack writes (on a VM, also the host's fault): about 0.3 s of
    system time per GiB stored. Reusing two buffers keeps those pages mapped.
    A buffer is reused only when nothing else references it (no view of it
    survives: a backend still holding one would otherwise see the next pack's
    bytes). Each entry remembers how far it was written, so the next pack
    zeroes only the padding that old bytes would otherwise fill.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[tuple[mmap.mmap, int]] = []  # (buffer, bytes written in it so far)

    def take(self, capacity: int) -> tuple[mmap.mmap, int]:
        with self._lock:
            for i, (buf, used) in enumerate(self._free):
                if len(buf) == capacity:
                    del self._free[i]
                    return buf, used
        return mmap.mmap(-1, capacity), 0

    def give(self, buf: mmap.mmap, used: int, capacity: int) -> None:
        # referenced only by our caller's variable and this call's argument: no view, no other holder
        if len(buf) == capacity and sys.getrefcount(buf) <= 3:
            with self._lock:
                if len(self._free) < POOL_MAX:
                    self._free.append((buf, used))
                    return
        try:
            buf.close()
        except BufferError:
            pass  # a view is still referenced somewhere: freed with the last one

    def clear(self) -> None:
        with self._lock:
            free, self._free = self._free, []
        for buf, _ in free:
            buf.close()


buffer_pool = _BufferPool()


class PackBuilder:
    """Seals blobs straight into one pack buffer. Not thread-safe (the packer holds its lock).

    The buffer is anonymous memory (mmap), reused from earlier packs of the run
    where one is free (``buffer_pool``): its pages are touched only as blobs
    are written, ``finish`` returns a view of it instead of a joined copy, and
    ``release`` gives it back to the pool or to the system at once rather than
    to the allocator's heap. Each blob is encrypted into its place
    (``AESGCM.encrypt_into``): a blob's bytes are copied once, by the cipher.
    """

    def __init__(self, kind: BlobType, recipient_public: bytes, capacity: int = 32 << 20) -> None:
        self.kind = kind
        self.epk, pack_key = new_ephemeral_key(recipient_public, PURPOSE)
        self._blob_key, self._header_key, self._trailer_key = _subkeys(pack_key)
        self._seal_blob = sealer_with_nonce(self._blob_key)  # one key schedule per pack, not per blob (~1.2 µs each)
        self._prefix = MAGIC + bytes((VERSION, 0, 0, 0)) + self.epk
        self._capacity = max(capacity, 1 << 16)
        # data packs fill their buffer: they reuse one; tree packs are often small, and take fresh pages
        self._pooled = kind is BlobType.DATA
        self._buf, self._dirty = buffer_pool.take(self._capacity) if self._pooled else (mmap.mmap(-1, self._capacity), 0)
        self._buf[: len(self._prefix)] = self._prefix
        self._size = len(self._prefix)
        self._end = 0  # the pack's total length once finished
        self.entries: list[BlobEntry] = []
        self._ids: set[bytes] = set()
        self.raw_bytes = 0

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return len(self.entries)

    def _room(self, end: int) -> memoryview:
        """A view of the buffer, grown (rarely: a huge tree blob) so that it holds ``end`` bytes."""
        if end > len(self._buf):
            bigger = mmap.mmap(-1, max(end, 2 * len(self._buf)))
            bigger[: self._size] = self._buf[: self._size]
            self._buf.close()
            self._buf, self._dirty = bigger, self._size
        return memoryview(self._buf)

    def add(
        self, blob_id: bytes, blob_type: BlobType, payload: bytes | memoryview, raw_length: int, compression: int
    ) -> BlobEntry:
        """Seal ``payload`` (the blob, compressed or not) into the pack."""
        if blob_id in self._ids:
            raise ValueError("blob already in this pack")
        length = len(payload) + TAG_LEN
        start = self._size
        with self._room(start + length) as view:
            # blob ids are unique in a pack (checked above): the nonce never repeats under this pack's key
            self._seal_blob(
                blob_id[:12], payload, _blob_ad(blob_id, blob_type, compression), view[start : start + length]
            )
        entry = BlobEntry(blob_id, blob_type, start, length, raw_length, compression)
        self._size += length
        self.entries.append(entry)
        self._ids.add(blob_id)
        self.raw_bytes += raw_length
        return entry

    def contains(self, blob_id: bytes) -> bool:
        return blob_id in self._ids

    def finish(self) -> memoryview:
        """The whole pack: a view of the buffer, valid until ``release``."""
        header_plain = msgpack.packb(self.entries)
        header_offset = self._size
        header_len = len(header_plain) + TAG_LEN
        total = padme(header_offset + header_len + TRAILER_LEN)
        view = self._room(total)
        encrypt_into_with_nonce(
            self._header_key, counter_nonce(0), header_plain, self._prefix,
            view[header_offset : header_offset + header_len],
        )
        pad_start, pad_end = header_offset + header_len, min(total - TRAILER_LEN, self._dirty)
        if pad_end > pad_start:  # a reused buffer: clear what an earlier pack left there (fresh pages are zero)
            view[pad_start:pad_end] = bytes(pad_end - pad_start)
        encrypt_into_with_nonce(
            self._trailer_key, counter_nonce(0), TRAILER_PLAIN.pack(header_offset, header_len), b"",
            view[total - TRAILER_LEN : total],
        )
        self._end = total
        return view[:total]

    def release(self) -> None:
        """Give the buffer back (after the pack was stored or given up); the builder is done."""
        buf = vars(self).pop("_buf", None)
        if buf is not None and not self._pooled:
            try:
                buf.close()
            except BufferError:
                pass  # a view is still referenced somewhere: freed with the last one
        elif buf is not None:
            buffer_pool.give(buf, max(self._dirty, self._end, self._size), self._capacity)


def parse_prefix(prefix: bytes) -> bytes:
    """Return the epk from a pack's first PREFIX_LEN bytes."""
    if len(prefix) < PREFIX_LEN or prefix[:4] != MAGIC:
        raise IntegrityError("not a tuckbox pack (bad magic)")
    if prefix[4] != VERSION:
        raise UnsupportedFormat(f"pack version {prefix[4]} is not supported; upgrade tuckbox")
    return bytes(prefix[8:PREFIX_LEN])


class PackKey:
    """The keys of one existing pack, recovered with the recipient's private key."""

    def __init__(self, recipient_private: bytes, epk: bytes) -> None:
        pack_key = recover_ephemeral_key(recipient_private, epk, PURPOSE)
        self._blob_key, self._header_key, self._trailer_key = _subkeys(pack_key)
        self._open_blob = opener_with_nonce(self._blob_key)  # one key schedule per pack, not per blob

    def open_blob(self, entry: BlobEntry, sealed: bytes | memoryview) -> bytes:
        payload = self._open_blob(entry.id[:12], sealed, _blob_ad(entry.id, entry.type, entry.compression), "blob")
        return decompress(payload, entry.compression, entry.raw_length)

    def read_header(self, pack: bytes) -> list[BlobEntry]:
        """Parse a whole pack's header (used by check)."""
        if len(pack) < PREFIX_LEN + TRAILER_LEN:
            raise IntegrityError("pack is truncated")
        offset, length = self.read_trailer(pack[-TRAILER_LEN:], len(pack))
        return self.parse_header(pack[offset : offset + length], pack[:PREFIX_LEN], offset)

    def read_trailer(self, trailer: bytes, pack_size: int) -> tuple[int, int]:
        """The header's (offset, length) from a pack's last TRAILER_LEN bytes (authenticated)."""
        if len(trailer) != TRAILER_LEN:
            raise IntegrityError("pack is truncated")
        plain = decrypt_with_nonce(self._trailer_key, counter_nonce(0), trailer, b"", "pack trailer")
        offset, length = TRAILER_PLAIN.unpack(plain)
        if offset + length > pack_size - TRAILER_LEN or offset < PREFIX_LEN:
            raise IntegrityError("pack trailer points outside the pack")
        return offset, length

    def parse_header(self, sealed: bytes, prefix: bytes, offset: int) -> list[BlobEntry]:
        """The blob entries of a header read at ``offset`` (authenticated with the pack's prefix)."""
        plain = decrypt_with_nonce(self._header_key, counter_nonce(0), sealed, prefix[:PREFIX_LEN], "pack header")
        try:
            items = msgpack.unpackb(plain)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            raise IntegrityError("pack header is malformed") from None
        entries = [BlobEntry.from_list(i) for i in items]
        for e in entries:
            if e.offset < PREFIX_LEN or e.offset + e.length > offset:
                raise IntegrityError("pack header names a blob outside the pack")
        return entries
