"""allocator.keep_freed: freed heap is reused instead of being given back and faulted in again."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tuckbox import allocator

PROBE = """
import resource, sys
from tuckbox import allocator
allocator.tune()
getattr(allocator, sys.argv[1])(*map(int, sys.argv[2:]))
blobs = []
def cycle():
    b = b"x" * (1 << 20)  # a chunk-sized buffer from the heap (below the 4 MiB mmap threshold), freed at once
    del b
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(*how: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, *how], capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.mark.skipif(allocator._mallopt() is None, reason="not glibc: nothing is tuned")
def test_kept_heap_is_reused_and_given_back_heap_is_faulted_again() -> None:
    given_back = _faults("give_back_freed")
    kept = _faults("keep_freed", str(32 << 20))
    # 200 buffers of 256 pages each: given back, every one is faulted in again; kept, almost none is
    assert given_back > 200 * 200
    assert kept < given_back // 20
