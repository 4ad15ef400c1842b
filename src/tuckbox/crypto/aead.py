"""Authenticated encryption primitives: symmetric seal/open and sealing to an X25519 public key.

All ciphertexts are AES-256-GCM. Failures to authenticate raise IntegrityError.
"""

from __future__ import annotations

import os
from typing import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import IntegrityError

NONCE_LEN = 12
TAG_LEN = 16
KEY_LEN = 32
EPK_LEN = 32
SEAL_OVERHEAD = NONCE_LEN + TAG_LEN


def hkdf(secret: bytes, info: bytes, length: int = KEY_LEN) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(secret)


def seal(key: bytes, plaintext: bytes | memoryview, ad: bytes = b"") -> bytes:
    """Encrypt with a random nonce: nonce || ciphertext || tag."""
    nonce = os.urandom(NONCE_LEN)
    return nonce + AESGCM(key).encrypt(nonce, bytes(plaintext), ad)


def open_sealed(key: bytes, sealed: bytes | memoryview, ad: bytes = b"", what: str = "object") -> bytes:
    sealed = bytes(sealed)
    if len(sealed) < SEAL_OVERHEAD:
        raise IntegrityError(f"{what} is truncated ({len(sealed)} bytes)")
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_LEN], sealed[NONCE_LEN:], ad)
    except InvalidTag:
        raise IntegrityError(f"{what} failed authentication: it was modified or damaged") from None


def public_from_private(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def _shared_key(shared: bytes, epk: bytes, recipient: bytes, purpose: bytes) -> bytes:
    return hkdf(shared, b"tuckbox ecies v1 " + purpose + epk + recipient)


def new_ephemeral_key(recipient_public: bytes, purpose: bytes) -> tuple[bytes, bytes]:
    """A fresh (epk, symmetric key) pair: the key can be rederived only with the recipient's private key."""
    eph = X25519PrivateKey.generate()
    epk = eph.public_key().public_bytes_raw()
    shared = eph.exchange(X25519PublicKey.from_public_bytes(recipient_public))
    return epk, _shared_key(shared, epk, recipient_public, purpose)


def recover_ephemeral_key(recipient_private: bytes, epk: bytes, purpose: bytes) -> bytes:
    priv = X25519PrivateKey.from_private_bytes(recipient_private)
    try:
        shared = priv.exchange(X25519PublicKey.from_public_bytes(epk))
    except ValueError:
        raise IntegrityError("an object's key exchange value is invalid: it was modified or damaged") from None
    return _shared_key(shared, epk, priv.public_key().public_bytes_raw(), purpose)


def seal_to(recipient_public: bytes, plaintext: bytes, purpose: bytes, ad: bytes = b"") -> bytes:
    """Encrypt so only the holder of the matching private key can read: epk || nonce || ct || tag."""
    epk, key = new_ephemeral_key(recipient_public, purpose)
    return epk + seal(key, plaintext, ad + epk)


def open_sealed_to(
    recipient_private: bytes, sealed: bytes, purpose: bytes, ad: bytes = b"", what: str = "object"
) -> bytes:
    if len(sealed) < EPK_LEN + SEAL_OVERHEAD:
        raise IntegrityError(f"{what} is truncated ({len(sealed)} bytes)")
    epk = sealed[:EPK_LEN]
    key = recover_ephemeral_key(recipient_private, epk, purpose)
    return open_sealed(key, sealed[EPK_LEN:], ad + epk, what)


def counter_nonce(n: int) -> bytes:
    """A deterministic nonce for keys that are used for one object only (packs)."""
    return n.to_bytes(NONCE_LEN, "big")


def encrypt_into_with_nonce(
    key: bytes, nonce: bytes, plaintext: bytes | memoryview, ad: bytes, out: memoryview
) -> None:
    """AES-256-GCM under a nonce the caller guarantees unique for ``key``, written into ``out``
    (exactly ``len(plaintext) + TAG_LEN`` bytes): the ciphertext is not copied again."""
    AESGCM(key).encrypt_into(nonce, plaintext, ad, out)


def sealer_with_nonce(key: bytes) -> Callable[[bytes, bytes | memoryview, bytes, memoryview], None]:
    """``encrypt_into_with_nonce`` with ``key`` bound: one key schedule for many messages (a pack's blobs,
    sealed by one thread). Called as ``seal(nonce, plaintext, ad, out)``."""
    return AESGCM(key).encrypt_into


def decrypt_with_nonce(key: bytes, nonce: bytes, ciphertext: bytes | memoryview, ad: bytes, what: str) -> bytes:
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, ad)
    except InvalidTag:
        raise IntegrityError(f"{what} failed authentication: it was modified or damaged") from None


def opener_with_nonce(key: bytes) -> Callable[[bytes, bytes | memoryview, bytes, str], bytes]:
    """``decrypt_with_nonce`` with ``key`` bound: one key schedule for many messages (a pack's blobs, read
    by restore or check; safe from several threads). Called as ``open(nonce, ciphertext, ad, what)``."""
    decrypt = AESGCM(key).decrypt

    def open_(nonce: bytes, ciphertext: bytes | memoryview, ad: bytes, what: str) -> bytes:
        try:
            return decrypt(nonce, ciphertext, ad)
        except InvalidTag:
            raise IntegrityError(f"{what} failed authentication: it was modified or damaged") from None

    return open_
