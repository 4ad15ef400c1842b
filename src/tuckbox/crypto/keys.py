"""The key hierarchy: one root secret, every other key derived from it with HKDF.

::

    root secret (32 random bytes, made at init)
      ├── chunk-id key      keyed BLAKE3 of plaintext chunks       (write-only keys hold it)
      ├── chunker seed      secret FastCDC gear table               (write-only keys hold it)
      ├── index key         AES-GCM key for index objects           (write-only keys hold it)
      ├── config key        authenticates the config object         (write-only keys hold it)
      ├── data key pair     X25519: packs of file content           (write-only: public half only)
      └── metadata key pair X25519: tree packs and snapshots         (write-only: public half only)

A full key set holds the root secret; a write-only key set holds everything in
the right-hand column but neither private key, so it can write packs, indexes
and snapshots and deduplicate against the repository, and cannot decrypt any
file content, tree or snapshot.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import blake3
import msgpack

from ..errors import IntegrityError, WriteOnlyKey
from .aead import hkdf, public_from_private

ROOT_LEN = 32


class KeyKind(enum.Enum):
    FULL = "full"
    WRITE_ONLY = "write-only"


@dataclass(frozen=True)
class KeySet:
    kind: KeyKind
    chunk_id_key: bytes
    chunker_seed: int
    index_key: bytes
    config_key: bytes
    data_public: bytes
    meta_public: bytes
    root: bytes | None = None
    data_private: bytes | None = None
    meta_private: bytes | None = None

    def chunk_id(self, data: bytes | memoryview) -> bytes:
        return blake3.blake3(data, key=self.chunk_id_key).digest()

    def require_full(self, action: str) -> None:
        if self.kind is not KeyKind.FULL:
            raise WriteOnlyKey(
                f"cannot {action} with a write-only key: it can back up and list its own work, "
                "but not decrypt files, trees or snapshots; use a full key (passphrase or recovery kit)"
            )

    def write_only(self) -> "KeySet":
        return KeySet(
            kind=KeyKind.WRITE_ONLY,
            chunk_id_key=self.chunk_id_key,
            chunker_seed=self.chunker_seed,
            index_key=self.index_key,
            config_key=self.config_key,
            data_public=self.data_public,
            meta_public=self.meta_public,
        )

    # -- serialisation of the secret part (inside an encrypted key file) --

    def to_secret_bytes(self) -> bytes:
        if self.kind is KeyKind.FULL:
            assert self.root is not None
            return msgpack.packb({"v": 1, "kind": "full", "root": self.root})
        return msgpack.packb(
            {
                "v": 1,
                "kind": "write-only",
                "chunk_id_key": self.chunk_id_key,
                "chunker_seed": self.chunker_seed,
                "index_key": self.index_key,
                "config_key": self.config_key,
                "data_public": self.data_public,
                "meta_public": self.meta_public,
            }
        )

    @staticmethod
    def from_secret_bytes(raw: bytes) -> "KeySet":
        try:
            d = msgpack.unpackb(raw)
            if d.get("v") != 1:
                raise ValueError("version")
            if d["kind"] == "full":
                return derive_keyset(d["root"])
            if d["kind"] == "write-only":
                return KeySet(
                    kind=KeyKind.WRITE_ONLY,
                    chunk_id_key=d["chunk_id_key"],
                    chunker_seed=int(d["chunker_seed"]),
                    index_key=d["index_key"],
                    config_key=d["config_key"],
                    data_public=d["data_public"],
                    meta_public=d["meta_public"],
                )
        except (ValueError, KeyError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            pass
        raise IntegrityError("the key material could not be decoded")


def _label(name: str) -> bytes:
    return b"tuckbox v1 " + name.encode()


def derive_keyset(root: bytes) -> KeySet:
    if len(root) != ROOT_LEN:
        raise IntegrityError("the root secret has the wrong length")
    data_private = hkdf(root, _label("data x25519"))
    meta_private = hkdf(root, _label("metadata x25519"))
    seed = int.from_bytes(hkdf(root, _label("chunker seed"), 8), "big") or 1
    return KeySet(
        kind=KeyKind.FULL,
        chunk_id_key=hkdf(root, _label("chunk id")),
        chunker_seed=seed,
        index_key=hkdf(root, _label("index")),
        config_key=hkdf(root, _label("config")),
        data_public=public_from_private(data_private),
        meta_public=public_from_private(meta_private),
        root=root,
        data_private=data_private,
        meta_private=meta_private,
    )
