"""The cache's copy of every snapshot's decrypted contents (``state/snapshots``, version 1).

Listing snapshots decrypts each one (an X25519 exchange and an AES-GCM open, ~0.2 ms here), and every
backup lists them to find its parent: after a year of hourly backups that was ~2 s per run. Snapshot
objects never change (their names are content hashes), so their contents are kept here, MAC'd, and only
snapshots new since the last listing are decrypted. Like the files cache, it is plaintext metadata
(paths, hosts, times, tree ids) readable by whoever can read the cache directory; it is used only when its
MAC verifies, and rebuilt otherwise.
"""

from __future__ import annotations

import hmac
import threading

import blake3
import msgpack

from .cache import Cache

STATE = "snapshots"
VERSION = 1


class SnapshotCache:
    def __init__(self, cache: Cache, mac_key: bytes) -> None:
        self._cache = cache
        self._key = mac_key
        self._plain: dict[str, bytes] | None = None
        self._dirty = False
        self._lock = threading.Lock()

    def _load(self) -> dict[str, bytes]:
        if self._plain is None:
            plain: dict[str, bytes] = {}
            raw = self._cache.read_state(STATE) if self._cache.enabled else None
            if raw is not None and len(raw) > 32:
                body = raw[32:]
                if hmac.compare_digest(blake3.blake3(body, key=self._key).digest(), raw[:32]):
                    try:
                        doc = msgpack.unpackb(body)
                        if doc.get("v") == VERSION:
                            plain = {str(k): bytes(v) for k, v in doc["snaps"].items()}
                    except (ValueError, KeyError, TypeError, AttributeError, msgpack.ExtraData,
                            msgpack.FormatError, msgpack.StackError):
                        plain = {}
            self._plain = plain
        return self._plain

    def get(self, name: str) -> bytes | None:
        with self._lock:
            return self._load().get(name)

    def put(self, name: str, plain: bytes) -> None:
        with self._lock:
            self._load()[name] = plain
            self._dirty = True

    def save(self, listed: set[str]) -> None:
        """Forget snapshots no longer ``listed`` in the repository, and write the file if anything changed."""
        with self._lock:
            plain = self._load()
            for gone in set(plain) - listed:
                del plain[gone]
                self._dirty = True
            if not self._dirty or not self._cache.enabled:
                return
            body = msgpack.packb({"v": VERSION, "snaps": plain})
            self._cache.write_state(STATE, blake3.blake3(body, key=self._key).digest() + body)
            self._dirty = False
