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
    unsupported: str = field(default="", compare=False)  # why this tuckbox cannot use it, told after ``verify``

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
        """The config as stored, before its MAC is checked (that needs a key: ``verify``). An unknown feature or
        chunker is only told once the MAC holds (``unsupported``): before that it may as well be a damaged byte,
        and "upgrade tuckbox" would send the owner of a damaged repository the wrong way."""
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ValueError
        except (ValueError, UnicodeDecodeError):
            if FORMAT.encode() in raw or b'"mac"' in raw:  # ours, with a damaged byte
                raise IntegrityError(f"the config of repository {location} is damaged (it cannot be parsed)") from None
            raise NotARepository(f"{location} has a 'config' that is not a tuckbox repository config") from None
        version = doc.get("version")
        if type(version) is int and version > VERSION:
            raise UnsupportedFormat(
                f"repository {location} uses format version {version}; this tuckbox reads version {VERSION}: upgrade tuckbox"
            )
        damaged = IntegrityError(f"the config of repository {location} is damaged")
        if version != VERSION:  # (no tuckbox wrote an older or a non-numeric version)
            raise damaged
        features = doc.get("features", [])
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise damaged
        unknown = set(features) - KNOWN_FEATURES
        unsupported = ""
        if unknown:
            unsupported = (f"repository {location} uses features this tuckbox does not know "
                           f"({', '.join(sorted(unknown))}): upgrade tuckbox")
        try:
            ch = doc["chunker"]
            if ch.get("algorithm") not in ALGORITHMS:
                unsupported = unsupported or f"repository {location} uses chunker '{ch.get('algorithm')}': upgrade tuckbox"
            cfg = Config(
                id=str(doc["id"]),
                created=str(doc["created"]),
                chunker=ChunkerParams(int(ch["min"]), int(ch["avg"]), int(ch["max"]), str(ch["algorithm"])),
                pack_size=int(doc["pack_size"]),
                version=int(version),
                features=list(features),
            )
            if not unsupported:
                cfg.chunker.validate()
        except (KeyError, TypeError, ValueError, AttributeError):
            raise damaged from None
        cfg.unsupported = unsupported
        return cfg, doc

    def verify(self, doc: dict[str, Any], config_key: bytes, location: str) -> None:
        """Check the MAC; then refuse a config of a newer tuckbox (``decode_unverified``)."""
        fields = {k: v for k, v in doc.items() if k != "mac"}
        expected = blake3.blake3(self._canonical(fields), key=config_key).hexdigest()
        if not hmac.compare_digest(expected, str(doc.get("mac", ""))):
            raise IntegrityError(f"the config of repository {location} failed authentication: it was modified")
        if self.unsupported:
            raise UnsupportedFormat(self.unsupported)
