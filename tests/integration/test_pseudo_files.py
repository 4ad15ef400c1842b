"""Files that are not what their stat or name say: /proc and /sys files, a FIFO where a tag file should be.

Files of /proc and /sys named as backup paths: their stat says nothing true about their content.

A /proc file says size 0 and has content, of any length; a sysfs attribute says 4096 bytes and holds a few;
neither moves its mtime when its content changes. What is stored must be what reading gives, whole, and a
later backup must read them again rather than trust the files cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tuckbox.archiver.reading import read_chunks
from tuckbox.chunker import Chunker, ChunkerParams

from .conftest import Tuckbox


def test_a_proc_file_that_changes_is_read_again_by_the_next_backup(tb: Tuckbox) -> None:
    uptime = "/proc/uptime"  # size 0, an mtime long past, content that moves every 10 ms
    tb("init")
    tb("backup", uptime)
    first = tb("dump", "latest", uptime).out
    time.sleep(0.05)
    second = tb("backup", "--json", uptime)
    assert '"files_unmodified": 0' in second.out, second.out
    assert tb("dump", "latest", uptime).out != first


def test_a_file_whose_size_says_0_is_stored_whole_however_long(tmp_path: Path) -> None:
    """Reading a size-0 file stopped at 4 MiB: /proc/kallsyms (5 MiB and more) was stored cut off, silently."""
    chunker = Chunker(ChunkerParams(min_size=64 << 10, avg_size=128 << 10, max_size=1 << 20), seed=7)
    data = os.urandom(11 << 20)
    r, w = os.pipe()  # (a pipe reads like a /proc file: no size, content until its end)

    def write() -> None:
        try:
            with os.fdopen(w, "wb") as f:
                f.write(data)
        except BrokenPipeError:
            pass  # the reader stopped early (and the test fails)

    writer = threading.Thread(target=write)
    writer.start()
    pieces: list[bytes] = []
    try:
        emit = lambda p: pieces.append(bytes(p[1]))  # type: ignore[index,arg-type]  # noqa: E731
        covered = read_chunks(r, 0, chunker, lambda c: b"", emit)
    finally:
        os.close(r)
        writer.join()
    assert covered == len(data)
    assert b"".join(pieces) == data
    assert pieces == [bytes(c) for c in chunker.chunks_of(data)]  # cut exactly as one pass over the whole


def test_a_sysfs_attribute_is_stored_without_a_warning_and_read_again_next_time(tb: Tuckbox) -> None:
    attr = Path("/sys/class/net/lo/address")
    if not attr.exists() or attr.stat().st_size <= len(attr.read_bytes()):
        pytest.skip("no sysfs attribute whose size overstates its content here")
    tb("init")
    first = tb("backup", str(attr))  # (exit 0: it was not reported as changing while read)
    assert "warning" not in first.err, first.err
    assert tb("dump", "latest", str(attr)).raw == attr.read_bytes()
    second = tb("backup", "--json", str(attr))
    assert '"files_unmodified": 0' in second.out, second.out


def test_a_fifo_named_cachedir_tag_does_not_hang_exclude_caches(tb: Tuckbox, tmp_path: Path) -> None:
    """--exclude-caches opened each directory's CACHEDIR.TAG as a plain open: a FIFO of that name (anyone can
    make one in their home, which root backs up) blocked the backup for good, and SIGTERM did not end it."""
    src = tmp_path / "src"
    (src / "trap").mkdir(parents=True)
    os.mkfifo(src / "trap" / "CACHEDIR.TAG")
    (src / "trap" / "kept.txt").write_text("kept")
    (src / "linked").mkdir()
    (src / "linked" / "CACHEDIR.TAG").symlink_to(src / "trap" / "CACHEDIR.TAG")
    (src / "linked" / "also.txt").write_text("also")
    tb("init")
    proc = subprocess.run(
        [sys.executable, "-m", "tuckbox.cli.main", "backup", "--exclude-caches", str(src)],
        env=tb.env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert tb("dump", "latest", str(src / "trap" / "kept.txt")).out == "kept"  # not a cache: no tag was read
    assert tb("dump", "latest", str(src / "linked" / "also.txt")).out == "also"
