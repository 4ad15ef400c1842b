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

The second trap is the start of a chunk: the hash restarts from zero at the
minimum size, so where that point falls inside a run of byte ``b`` the hash
after ``j + 1`` bytes is ``(2**(j+1) - 1) * gear[b]``, whatever came before. If
that passes a mask for some small ``j``, every chunk whose minimum point lands
in such a run is cut ``min_size + j`` bytes after its start, and chunk after
chunk lands in the next page's padding at the same place: fixed-size chunks
again (under the first rule: for zero padding about one seed in 5,600, for some byte value 6 %).
``xor-seed2`` (new repositories) also rejects those seeds; repositories made
with ``xor-seed`` keep the first rule, so their chunks stay where they were.
"""

from __future__ import annotations

from dataclasses import dataclass
import mmap
import os
import threading
from typing import Iterator

from pyfastcdc import FastCDC
from pyfastcdc.py.constants import GEAR, MASKS

NORMALIZED_CHUNKING = 1
ALGORITHM_V1 = "fastcdc2020/nc1/xor-seed"  # seeds checked for steady states in runs only
ALGORITHM = "fastcdc2020/nc1/xor-seed2"  # ... and for cuts just after a chunk's minimum point inside a run
ALGORITHMS = (ALGORITHM_V1, ALGORITHM)
_GOLDEN = 0x9E3779B97F4A7C15
_M64 = (1 << 64) - 1
_M63 = (1 << 63) - 1  # pyfastcdc shifts the seed left by one in a uint64
READ_SIZE = 1 << 20  # chunks_fd's buffer holds max_size + READ_SIZE bytes ...
FILL_SIZE = 2 << 20  # ... but each round reads only this much more (so few of its pages are ever touched)
KEEP_SIZE = 4 << 20  # after a file, pages of the buffer beyond this are given back if a long chunk touched them


@dataclass(frozen=True)
class ChunkerParams:
    min_size: int = 512 * 1024
    avg_size: int = 1024 * 1024
    max_size: int = 8 * 1024 * 1024
    algorithm: str = ALGORITHM

    def validate(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown chunker algorithm {self.algorithm!r}")
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


# a run of one byte read from a restarted hash: after j + 1 bytes it is RESTART[j] * gear[b] (mod 2**64)
_RESTART = tuple((1 << (j + 1)) - 1 for j in range(64))


def _cuts_on_runs(seed: int, params: ChunkerParams) -> bool:
    mask_s, mask_l = params.masks()
    restarts = params.algorithm != ALGORITHM_V1
    for g in GEAR:
        g ^= seed
        steady = (-g) & _M64
        if steady & mask_s == 0 or steady & mask_l == 0:
            return True
        if restarts:
            for m in _RESTART:
                h = m * g
                if h & mask_s == 0 or h & mask_l == 0:
                    return True
    return False


def effective_seed(seed: int, params: ChunkerParams) -> int:
    candidate = seed & _M63 or 1
    k = 0
    while _cuts_on_runs(candidate, params):
        k += 1
        candidate = (seed ^ (k * _GOLDEN)) & _M63 or 1
    return candidate


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
        self._local = threading.local()

    def _buffer(self) -> mmap.mmap:
        # anonymous memory, not a bytearray: a bytearray is zeroed (so resident) whole at once, while
        # only the front of this buffer is used unless a chunk grows towards max_size
        buf: mmap.mmap | None = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = mmap.mmap(-1, self.params.max_size + READ_SIZE)
        return buf

    def chunks_fd(self, fd: int, offset: int, length: int) -> Iterator[memoryview]:
        """Yield the chunks of ``length`` bytes of ``fd`` from ``offset`` (fewer if the file ends first).

        Reads into one buffer per thread, reused across files (pyfastcdc's own
        stream chunker zeroes a fresh 16 MiB buffer per file and moves the
        unread rest after every chunk), ``FILL_SIZE`` bytes past the undecided
        rest at a time, so the buffer's far end is touched only by chunks that
        approach ``max_size``. Each memoryview is valid only until the
        next one is requested. Cut points are exactly those of ``chunks_of``
        over the same bytes: a chunk that ends at the end of the buffered data
        before the end of the input is provisional and cut again with more data.
        """
        buf = self._buffer()
        view = memoryview(buf)
        cap = len(buf)
        end = 0  # bytes buffered
        high = 0  # the most ever buffered
        pos, left = offset, length
        eof = length <= 0
        try:
            while True:
                fill = min(cap, end + FILL_SIZE)
                while not eof and end < fill:
                    n = os.preadv(fd, [view[end : end + min(fill - end, left)]], pos)
                    if n <= 0:
                        eof = True
                        break
                    end += n
                    high = max(high, end)
                    pos += n
                    left -= n
                    eof = left <= 0
                if end == 0:
                    return
                start = 0
                for chunk in self._cdc.cut_buf(view[:end]):
                    if not eof and start + chunk.length == end:
                        break  # provisional: the data may go on
                    yield chunk.data
                    start += chunk.length
                if eof and start == end:
                    return
                tail = end - start
                buf[:tail] = bytes(view[start:end])  # at most max_size bytes, once per buffer fill
                end = tail
        finally:
            view.release()
            if high > KEEP_SIZE:
                # a chunk grew towards max_size: without this its pages would stay resident for the run
                buf.madvise(mmap.MADV_DONTNEED, KEEP_SIZE, high - KEEP_SIZE)

    def chunks_of(self, data: bytes | memoryview) -> Iterator[memoryview]:
        for chunk in self._cdc.cut_buf(data):
            yield chunk.data
