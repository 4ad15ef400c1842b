"""Times a file system keeps but a snapshot cannot: tmpfs and btrfs take a file dated in the year 31690."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from .conftest import Tuckbox

NS = 10**9


@pytest.fixture
def tmpfs(tmp_path: Path):
    where = tmp_path / "mnt"
    where.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], check=True, capture_output=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        pytest.skip(f"cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN): {e}")
    yield where
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_time_out_of_range_is_stored_as_the_nearest_with_a_warning(tb: Tuckbox, tmp_path: Path, tmpfs: Path) -> None:
    """One file dated 31690 (or 1500) stopped the whole backup with 'internal error: OverflowError' (msgpack
    holds no integer beyond 64 bits): now it is stored with the nearest time a tree holds, named in a
    warning (exit 3), and everything else is backed up as usual."""
    src = tmpfs / "src"
    src.mkdir()
    (src / "far").write_bytes(b"far\n")
    (src / "old").write_bytes(b"old\n")
    (src / "plain").write_bytes(b"plain\n")
    try:
        os.utime(src / "far", ns=(1000 * NS, 10**12 * NS))
        os.utime(src / "old", ns=(-(10**10) * NS, -(10**10) * NS))
    except OverflowError as e:
        pytest.skip(f"this kernel or Python takes no such time: {e}")
    if os.stat(src / "far").st_mtime_ns != 10**12 * NS:
        pytest.skip("this tmpfs clamps times itself")
    tb("init")
    for _ in range(2):  # (the second run: not in the files cache, read again, the same warnings)
        res = tb("backup", str(src), "--json", expect=3)
        lines = [json.loads(ln) for ln in res.out.splitlines()]
        warned = sorted(d["message"] for d in lines if d["type"] == "warning")
        assert len(warned) == 2 and warned[0].startswith(f"{src}/far: ") and warned[1].startswith(f"{src}/old: ")
        assert all("1677-2554" in w for w in warned), warned
        assert lines[-1]["type"] == "summary" and lines[-1]["warnings"] == 2
    entries = {e["path"]: e for e in tb("ls", "--json", "latest", str(src)).json()["entries"]}
    assert entries[f"{src}/far"]["mtime_ns"] == (1 << 64) - 1 and entries[f"{src}/old"]["mtime_ns"] == -(1 << 63)
    tb("restore", "latest", "--target", str(tmp_path / "r"))
    out = Path(str(tmp_path / "r") + str(src))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {"far": b"far\n", "old": b"old\n", "plain": b"plain\n"}
    assert os.stat(out / "plain").st_mtime_ns == os.stat(src / "plain").st_mtime_ns
