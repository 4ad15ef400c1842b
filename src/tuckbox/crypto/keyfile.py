"""Key files: a key set's secrets wrapped with a passphrase-derived key (Argon2id + AES-256-GCM).

A key file is a small JSON document (stored under ``keys/`` in the repository,
or as a standalone file for a write-only host)::

    {"format": "tuckbox-key", "version": 1, "kind": "full" | "write-only",
     "repository": "<repository id>", "created": "...", "host": "...",
     "user": "...", "comment": "...",
     "kdf": {"algorithm": "argon2id", "time_cost": 10, "memory_kib": 65536,
             "parallelism": 2, "salt": "<base64>"} | {"algorithm": "none"},
     "payload": "<base64 of nonce || AES-GCM(secret) || tag>"}

The AEAD's associated data is the canonical JSON of every other field, so no
field can be altered without the key refusing to open. ``kdf: none`` (no
passphrase) is allowed only for write-only key files handed to unattended
hosts; such a file is written with mode 0600.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from typing import Any

from argon2.low_level import Type, hash_secret_raw

from ..errors import IntegrityError, UnsupportedFormat, WrongPassphrase
from .aead import KEY_LEN, open_sealed, seal
from .keys import KeyKind, KeySet

# Strong defaults: 0.2-0.45 s on the benchmark VMs (2 cores). 64 MiB (not more) so that
# unlocking a repository does not dominate a backup's peak memory; ten passes buy back the cost.
DEFAULT_KDF = {"algorithm": "argon2id", "time_cost": 10, "memory_kib": 64 * 1024, "parallelism": 2}
# Cheap parameters for the test suite only; selected by TUCKBOX_TEST_CHEAP_KDF=1.
TEST_KDF = {"algorithm": "argon2id", "time_cost": 1, "memory_kib": 64, "parallelism": 1}
# No key file may claim parameters cheaper than this unless the test switch is set.
MIN_MEMORY_KIB = 8 * 1024
NO_KEY = b"\x00" * KEY_LEN  # AEAD key for passphrase-less write-only files (they are protected by file mode)


def kdf_params() -> dict[str, Any]:
    if os.environ.get("TUCKBOX_TEST_CHEAP_KDF") == "1":
        return dict(TEST_KDF)
    return dict(DEFAULT_KDF)


def _derive(passphrase: bytes, kdf: dict[str, Any]) -> bytes:
    if kdf.get("algorithm") == "none":
        return NO_KEY
    if kdf.get("algorithm") != "argon2id":
        raise UnsupportedFormat(f"key file uses an unknown key derivation '{kdf.get('algorithm')}'; upgrade tuckbox")
    salt = base64.b64decode(kdf["salt"])
    return hash_secret_raw(
        secret=passphrase,
        salt=salt,
        time_cost=int(kdf["time_cost"]),
        memory_cost=int(kdf["memory_kib"]),
        parallelism=int(kdf["parallelism"]),
        hash_len=KEY_LEN,
        type=Type.ID,
    )


def _ad(doc: dict[str, Any]) -> bytes:
    fields = {k: v for k, v in doc.items() if k != "payload"}
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class KeyFileInfo:
    kind: str
    repository: str
    created: str
    host: str
    user: str
    comment: str
    protected: bool  # has a passphrase


def make_keyfile(
    keys: KeySet,
    passphrase: bytes | None,
    *,
    repository_id: str,
    created: str,
    host: str,
    user: str,
    comment: str = "",
) -> bytes:
    if passphrase is None and keys.kind is KeyKind.FULL:
        raise ValueError("a full key always needs a passphrase")
    kdf: dict[str, Any]
    if passphrase is None:
        kdf = {"algorithm": "none"}
    else:
        kdf = kdf_params()
        kdf["salt"] = base64.b64encode(os.urandom(16)).decode()
    doc: dict[str, Any] = {
        "format": "tuckbox-key",
        "version": 1,
        "kind": keys.kind.value,
        "repository": repository_id,
        "created": created,
        "host": host,
        "user": user,
        "comment": comment,
        "kdf": kdf,
    }
    wrapping = _derive(passphrase or b"", kdf)
    doc["payload"] = base64.b64encode(seal(wrapping, keys.to_secret_bytes(), _ad(doc))).decode()
    return json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"


def parse_keyfile(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
        if doc.get("format") != "tuckbox-key":
            raise ValueError
    except (ValueError, AttributeError, UnicodeDecodeError):
        raise IntegrityError("not a tuckbox key file (it is damaged or something else)") from None
    if doc.get("version") != 1:
        raise UnsupportedFormat(f"key file version {doc.get('version')} is not supported; upgrade tuckbox")
    kdf = doc.get("kdf", {})
    if (
        kdf.get("algorithm") == "argon2id"
        and int(kdf.get("memory_kib", 0)) < MIN_MEMORY_KIB
        and os.environ.get("TUCKBOX_TEST_CHEAP_KDF") != "1"
    ):
        raise IntegrityError("key file claims unsafely weak key-derivation parameters; refusing it")
    return doc


def keyfile_info(raw: bytes) -> KeyFileInfo:
    doc = parse_keyfile(raw)
    return KeyFileInfo(
        kind=str(doc.get("kind")),
        repository=str(doc.get("repository")),
        created=str(doc.get("created")),
        host=str(doc.get("host")),
        user=str(doc.get("user")),
        comment=str(doc.get("comment", "")),
        protected=doc.get("kdf", {}).get("algorithm") != "none",
    )


def needs_passphrase(raw: bytes) -> bool:
    return keyfile_info(raw).protected


def open_keyfile(raw: bytes, passphrase: bytes | None) -> KeySet:
    doc = parse_keyfile(raw)
    kdf = doc.get("kdf", {})
    try:
        wrapping = _derive(passphrase or b"", kdf)
        payload = base64.b64decode(doc["payload"])
    except (KeyError, ValueError, TypeError):
        raise IntegrityError("key file is damaged") from None
    try:
        secret = open_sealed(wrapping, payload, _ad(doc), "key file")
    except IntegrityError:
        raise WrongPassphrase("wrong passphrase (or the key file was modified)") from None
    keys = KeySet.from_secret_bytes(secret)
    if keys.kind.value != doc.get("kind"):
        raise IntegrityError("key file is damaged: its kind does not match its contents")
    return keys
