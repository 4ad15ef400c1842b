"""How a restore groups one pack's needed blobs into requests (restorer/fetch.py ``ranges``)."""

from __future__ import annotations

from types import SimpleNamespace

from tuckbox.restorer.fetch import GAP, GAP_REMOTE, MAX_RANGE, ranges, span


def _loc(offset: int, length: int) -> SimpleNamespace:
    return SimpleNamespace(entry=SimpleNamespace(offset=offset, length=length))


def _spans(locs: list[SimpleNamespace], gap: int) -> list[tuple[int, int]]:
    return [span(g) for g in ranges(list(locs), gap)]


def test_blobs_closer_than_the_gap_share_a_request() -> None:
    # blobs 100 KiB apart, then one 600 KiB further on: given out of order
    far = (108 + 600) << 10
    locs = [_loc(far, 4096), _loc(0, 4096), _loc(104 << 10, 4096)]
    # a local repository bridges up to 1 MiB: one request from the first blob to the end of the last
    assert _spans(locs, GAP) == [(0, far + 4096)]
    # remote storage bridges up to 256 KiB: the first two together, the far one on its own
    assert _spans(locs, GAP_REMOTE) == [(0, (104 << 10) + 4096), (far, 4096)]


def test_no_request_exceeds_the_largest_range() -> None:
    chunk = 1 << 20
    locs = [_loc(k * chunk, chunk) for k in range(20)]  # 20 adjoining 1 MiB blobs
    got = _spans(locs, GAP)
    assert all(length <= MAX_RANGE for _, length in got)
    # together they cover every blob exactly once, in order
    assert got[0][0] == 0 and sum(length for _, length in got) == 20 * chunk
    assert all(a[0] + a[1] == b[0] for a, b in zip(got, got[1:]))
