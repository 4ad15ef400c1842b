"""Content-defined chunking: FastCDC 2020 (pyfastcdc, native, releases the GIL) with a secret gear table.

The per-repository chunker seed (derived from the root secret) is XORed into
the gear table, so cut points depend on a secret and the storage cannot
fingerprint files by their chunk sizes with a public table.

Runs of one repeated byte (zero padding in database pages, sparse-ish files)
are a known trap for gear-hash chunkers: in a run of byte ``b`` the rolling
hash settles at ``-gear[b] mod 2**64``; if that value passes the cut mask the
chunker cuts at every run after ``min_size`` and degrades to fixed-size chunks,
so one inserted byte re-stores the whole file. ``effective_seed`` therefore
rejects seeds for which any steady state passes either mask, stepping to the
next candidate deterministically, so every host of a repository agrees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Iterator

from pyfastcdc import FastCDC
from pyfastcdc.py.constants import GEAR, MASKS

NORMALIZED_CHUNKING = 1
ALGORITHM = "fastcdc2020/nc1/xor-seed"
_GOLDEN = 0x9E3779B97F4A7C15
_M64 = (1 << 64) - 1
_M63 = (1 << 63) - 1  # pyfastcdc shifts the seed left by one in a uint64


@dataclass(frozen=True)
class ChunkerParams:
    min_size: int = 512 * 1024
    avg_size: int = 1024 * 1024
    max_size: int = 8 * 1024 * 1024

    def validate(self) -> None:
        gap = self.avg_size - self.min_size
        if not (64 <= self.min_size <= 1 << 20):
            raise ValueError("chunk minimum must be between 64 B and 1 MiB")
        if gap <= 0 or gap & (gap - 1) or not (256 <= gap <= 4 << 20):
            raise ValueError("chunk average minus minimum must be a power of two between 256 B and 4 MiB")
        if not (max(1024, self.avg_size) <= self.max_size <= 16 << 20):
            raise ValueError("chunk maximum must be at least the average and at most 16 MiB")

    @property
    def _gap(self) -> int:
        # pyfastcdc's real average is its avg_size + min_size (cut-point skipping)
        return self.avg_size - self.min_size

    def masks(self) -> tuple[int, int]:
        bits = self._gap.bit_length() - 1
        return MASKS[bits + NORMALIZED_CHUNKING], MASKS[bits - NORMALIZED_CHUNKING]


def _cuts_on_runs(seed: int, params: ChunkerParams) -> bool:
    mask_s, mask_l = params.masks()
    for g in GEAR:
        steady = (-(g ^ seed)) & _M64
        if steady & mask_s == 0 or steady & mask_l == 0:
            return True
    return False


def effective_seed(seed: int, params: ChunkerParams) -> int:
    candidate = seed & _M63 or 1
    k = 0
    while _cuts_on_runs(candidate, params):
        k += 1
        candidate = (seed ^ (k * _GOLDEN)) & _M63 or 1
    return candidate


class _RangeReader:
    """Reads ``length`` bytes of ``f`` from its current position, via readinto."""

    __slots__ = ("f", "left")

    def __init__(self, f: BinaryIO, length: int) -> None:
        self.f = f
        self.left = length

    def readinto(self, buf: memoryview) -> int:
        if self.left <= 0:
            return 0
        view = buf[: self.left] if len(buf) > self.left else buf
        n = self.f.readinto(view)  # type: ignore[attr-defined]
        if not n:
            self.left = 0
            return 0
        self.left -= n
        return n


class Chunker:
    def __init__(self, params: ChunkerParams, seed: int) -> None:
        params.validate()
        self.params = params
        self._cdc = FastCDC(
            params._gap,
            min_size=params.min_size,
            max_size=params.max_size,
            normalized_chunking=NORMALIZED_CHUNKING,
            seed=effective_seed(seed, params),
        )

    def chunks(self, f: BinaryIO, length: int | None = None) -> Iterator[memoryview]:
        """Yield chunks of ``f`` from its position (``length`` bytes, or to EOF).

        Each memoryview is valid only until the next one is requested.
        """
        reader = _RangeReader(f, length if length is not None else 1 << 62)
        for chunk in self._cdc.cut_stream(reader):
            yield chunk.data

    def chunks_of(self, data: bytes | memoryview) -> Iterator[memoryview]:
        for chunk in self._cdc.cut_buf(data):
            yield chunk.data
