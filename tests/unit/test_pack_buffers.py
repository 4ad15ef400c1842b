"""Pack buffers reused across packs, and the local backend's O_DIRECT writes: bytes must come out exact."""

from __future__ import annotations

import mmap
import os
import weakref

import blake3
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tuckbox.backends.local import LocalBackend
from tuckbox.crypto.aead import counter_nonce, decrypt_with_nonce
from tuckbox.pack.format import (
    COMPRESSION_NONE,
    TRAILER_LEN,
    TRAILER_PLAIN,
    PackBuilder,
    PackKey,
    buffer_pool,
)
from tuckbox.types import BlobType, ObjectType


def _keys() -> tuple[bytes, bytes]:
    priv = X25519PrivateKey.generate()
    return priv.private_bytes_raw(), priv.public_key().public_bytes_raw()


def _build(public: bytes, blobs: list[bytes]) -> tuple[PackBuilder, bytes]:
    b = PackBuilder(BlobType.DATA, public)
    for data in blobs:
        b.add(blake3.blake3(data).digest(), BlobType.DATA, data, len(data), COMPRESSION_NONE)
    view = b.finish()
    out = bytes(view)
    view.release()
    return b, out


def _check(private: bytes, epk: bytes, pack: bytes, blobs: list[bytes]) -> None:
    key = PackKey(private, epk)
    entries = key.read_header(pack)
    assert [key.open_blob(e, pack[e.offset : e.offset + e.length]) for e in entries] == blobs

def _padding(private: bytes, epk: bytes, pack: bytes) -> bytes:
    """The bytes between the sealed header and the trailer."""
    trailer = decrypt_with_nonce(PackKey(private, epk)._trailer_key, counter_nonce(0), pack[-TRAILER_LEN:], b"", "t")
    offset, length = TRAILER_PLAIN.unpack(trailer)
    return pack[offset + length : len(pack) - TRAILER_LEN]


def test_a_reused_buffer_makes_the_same_pack_with_zero_padding() -> None:
    buffer_pool.clear()
    private, public = _keys()
    big = [os.urandom(3 << 20) for _ in range(5)]  # 15 MiB: fills most of the buffer with random bytes
    first, pack1 = _build(public, big)
    buf1 = weakref.ref(first._buf)  # a strong reference would (rightly) keep it out of the pool
    first.release()
    small = [os.urandom(100_000), os.urandom(5)]
    second, pack2 = _build(public, small)
    assert second._buf is buf1(), "the released buffer was not reused"
    _check(private, first.epk, pack1, big)
    _check(private, second.epk, pack2, small)
    padding = _padding(private, second.epk, pack2)
    assert len(padding) > 0  # it lies where the first pack left random bytes
    assert padding == bytes(len(padding))
    second.release()
    buffer_pool.clear()


def test_a_buffer_still_viewed_is_not_reused() -> None:
    buffer_pool.clear()
    _, public = _keys()
    first = PackBuilder(BlobType.DATA, public)
    first.add(b"\1" * 32, BlobType.DATA, b"x" * 1000, 1000, COMPRESSION_NONE)
    view = first.finish()  # a backend that kept this view would read the next pack's bytes if it were reused
    buf1 = weakref.ref(first._buf)
    first.release()
    second = PackBuilder(BlobType.DATA, public)
    assert buf1() is not None and second._buf is not buf1()
    before = bytes(view)
    second.add(b"\2" * 32, BlobType.DATA, b"y" * 1000, 1000, COMPRESSION_NONE)
    assert bytes(view) == before
    view.release()
    second.release()
    buffer_pool.clear()


@pytest.mark.parametrize("size", [(1 << 20) + 123, 8 << 20, (3 << 20) - 1])
def test_local_save_of_large_objects_is_exact(tmp_path, size: int) -> None:
    """Aligned pack buffers take the O_DIRECT path (where the file system allows), unaligned ones the fallback."""
    backend = LocalBackend(str(tmp_path / "repo"))
    backend.create()
    backend._direct = True  # try O_DIRECT whatever the device: EINVAL must fall back cleanly
    payload = os.urandom(size)
    aligned = mmap.mmap(-1, size)
    aligned[:] = payload
    view = memoryview(aligned)
    backend.save(ObjectType.PACK, "aa" + "0" * 62, view)
    view.release()
    unaligned = memoryview(b"\0" + payload)[1:]  # a bytes object's data is not page-aligned
    backend.save(ObjectType.PACK, "bb" + "0" * 62, unaligned)
    for name in ("aa" + "0" * 62, "bb" + "0" * 62):
        assert backend.load(ObjectType.PACK, name) == payload
        assert backend.load(ObjectType.PACK, name, size - 200, 200) == payload[-200:]
        assert backend.stat(ObjectType.PACK, name).size == size
    assert not [n for n in os.listdir(tmp_path / "repo" / "data" / "aa") if n.startswith(".tmp")]
