"""The repository config object: format version, feature flags, chunker and pack parameters.

Stored as canonical JSON with a ``mac`` field: keyed BLAKE3 (config key) of the
canonical JSON of every other field, so tampering is detected once a key is
open. The config is the last object ``init`` writes: its presence is what
makes a location a repository.
"""

from __future__ import annotations

import hmac
import json
import os
from dataclasses import dataclass, field
from typing import Any

import blake3

from ..chunker import ALGORITHMS, ChunkerParams
from ..errors import IntegrityError, NotARepository, UnsupportedFormat

FORMAT = "tuckbox-repository"
VERSION = 1
KNOWN_FEATURES: frozenset[str] = frozenset()
DEFAULT_PACK_SIZE = 16 * 1024 * 1024


@dataclass
class Config:
    id: str
    created: str
    chunker: ChunkerParams = field(default_factory=ChunkerParams)
    pack_size: int = DEFAULT_PACK_SIZE
    version: int = VERSION
    features: list[str] = field(default_factory=list)

    @staticmethod
    def new(created: str, chunker: ChunkerParams | None = None, pack_size: int = DEFAULT_PACK_SIZE) -> "Config":
        params = chunker or ChunkerParams()
        params.validate()
        if not (1 << 20) <= pack_size <= (512 << 20):
            raise ValueError("pack size must be between 1 MiB and 512 MiB")
        return Config(id=os.urandom(32).hex(), created=created, chunker=params, pack_size=pack_size)

    def _fields(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": self.version,
            "id": self.id,
            "created": self.created,
            "features": sorted(self.features),
            "chunker": {
                "algorithm": self.chunker.algorithm,
                "min": self.chunker.min_size,
                "avg": self.chunker.avg_size,
                "max": self.chunker.max_size,
            },
            "pack_size": self.pack_size,
        }

    @staticmethod
    def _canonical(fields: dict[str, Any]) -> bytes:
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    def encode(self, config_key: bytes) -> bytes:
        fields = self._fields()
        fields["mac"] = blake3.blake3(self._canonical(fields), key=config_key).hexdigest()
        return json.dumps(fields, indent=1, sort_keys=True).encode() + b"\n"

    @staticmethod
    def decode_unverified(raw: bytes, location: str) -> tuple["Config", dict[str, Any]]:
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ValueError
        except (ValueError, UnicodeDecodeError):
            raise NotARepository(f"{location} has a 'config' that is not a tuckbox repository config") from None
        version = doc.get("version")
        if version != VERSION:
            raise UnsupportedFormat(
                f"repository {location} uses format version {version}; this tuckbox reads version {VERSION}: upgrade tuckbox"
            )
        unknown = set(doc.get("features", [])) - KNOWN_FEATURES
        if unknown:
            raise UnsupportedFormat(
                f"repository {location} uses features this tuckbox does not know ({', '.join(sorted(unknown))}): upgrade tuckbox"
            )
        try:
            ch = doc["chunker"]
            if ch.get("algorithm") not in ALGORITHMS:
                raise UnsupportedFormat(f"repository {location} uses chunker '{ch.get('algorithm')}': upgrade tuckbox")
            cfg = Config(
                id=str(doc["id"]),
                created=str(doc["created"]),
                chunker=ChunkerParams(int(ch["min"]), int(ch["avg"]), int(ch["max"]), str(ch["algorithm"])),
                pack_size=int(doc["pack_size"]),
                version=int(version),
                features=list(doc.get("features", [])),
            )
            cfg.chunker.validate()
        except (KeyError, TypeError, ValueError):
            raise IntegrityError(f"the config of repository {location} is damaged") from None
        return cfg, doc

    def verify(self, doc: dict[str, Any], config_key: bytes, location: str) -> None:
        fields = {k: v for k, v in doc.items() if k != "mac"}
        expected = blake3.blake3(self._canonical(fields), key=config_key).hexdigest()
        if not hmac.compare_digest(expected, str(doc.get("mac", ""))):
            raise IntegrityError(f"the config of repository {location} failed authentication: it was modified")
