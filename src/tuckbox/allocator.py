"""How this process's allocator (glibc malloc) keeps freed memory: tuned for a program that cycles through
buffers of 0.1-16 MiB (file reads, chunks, zstd contexts, pack ranges) on several threads.

At start (every command): a fixed 4 MiB mmap threshold and two arenas. glibc's default raises its mmap
threshold after the first large free, so later buffers come from per-thread heaps that are never given
back and peak RSS grows with the threads; fixed, every pack-sized buffer is mapped and unmapped whole.

glibc also gives back (trims) the top of a heap once 128 KiB of it is free. A process that frees a
1 MiB chunk and allocates the next one a moment later then has the kernel clear and map those pages
again, a page fault per 4 KiB: the mixed benchmark's first backup took ~300,000 faults, a third of its
system time. ``keep_freed`` raises that limit in the processes whose memory peak is bounded elsewhere
(the walking process of a backup, whose peak is the key derivation's 64 MiB; restore's writers), and
``give_back_freed`` restores glibc's default where memory is the measure (the pack process: its pack
buffers are the run's peak). Elsewhere (not glibc) these do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache
from typing import Callable

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
GLIBC_TRIM_THRESHOLD = 128 * 1024  # glibc's default


@cache
def _mallopt() -> Callable[[int, int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.mallopt  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return None


def tune() -> None:
    """At start: mmap buffers of 4 MiB and more, at most two arenas."""
    mallopt = _mallopt()
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, 4 << 20)
        mallopt(M_ARENA_MAX, 2)


def keep_freed(trim: int, pad: int = 0) -> None:
    """Keep up to ``trim`` bytes of freed heap (plus ``pad`` more when the heap grows) for reuse."""
    mallopt = _mallopt()
    if mallopt is not None:
        mallopt(M_TRIM_THRESHOLD, trim)
        mallopt(M_TOP_PAD, pad)


def give_back_freed() -> None:
    """glibc's default: freed heap above 128 KiB goes back to the system."""
    keep_freed(GLIBC_TRIM_THRESHOLD, 0)
