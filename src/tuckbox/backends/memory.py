"""An in-memory backend: a fast unit-test double (never the only proof)."""

from __future__ import annotations

import threading
from typing import Iterator

from ..errors import ObjectExists, ObjectNotFound
from ..types import ObjectInfo, ObjectType
from .layout import check_name


class MemoryBackend:
    def __init__(self, location: str = "memory:") -> None:
        self.location = location
        self.objects: dict[tuple[ObjectType, str], bytes] = {}
        self._lock = threading.Lock()
        self.created = False

    def exists(self) -> bool:
        return self.created

    def create(self) -> None:
        self.created = True

    def save(self, type: ObjectType, name: str, data: bytes | memoryview) -> None:
        check_name(type, name)
        with self._lock:
            if (type, name) in self.objects:
                raise ObjectExists(f"{type.value}/{name} already exists")
            self.objects[(type, name)] = bytes(data)

    def load(self, type: ObjectType, name: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            data = self.objects[(type, name)]
        except KeyError:
            raise ObjectNotFound(f"{type.value}/{name} not found") from None
        end = len(data) if length is None else offset + length
        return data[offset:end]

    def stat(self, type: ObjectType, name: str) -> ObjectInfo:
        try:
            return ObjectInfo(type, name, len(self.objects[(type, name)]))
        except KeyError:
            raise ObjectNotFound(f"{type.value}/{name} not found") from None

    def list(self, type: ObjectType) -> Iterator[ObjectInfo]:
        with self._lock:
            items = [(n, len(d)) for (t, n), d in self.objects.items() if t is type]
        for name, size in items:
            yield ObjectInfo(type, name, size)

    def remove(self, type: ObjectType, name: str) -> None:
        with self._lock:
            if self.objects.pop((type, name), None) is None:
                raise ObjectNotFound(f"{type.value}/{name} not found")

    def close(self) -> None:
        pass
