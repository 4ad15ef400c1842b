"""A cache directory an older tuckbox left behind does not cost every later backup its files cache."""

from __future__ import annotations

import json
import os
import shutil
import time

import msgpack

OLD = 1_500_000_000_000_000_000  # ns


def summary(res) -> dict:
    return json.loads(res.out.splitlines()[-1])


def test_an_old_single_file_files_cache_is_replaced_not_left_to_block_every_later_backup(tb, tmp_path):
    """tuckbox's first files cache was one file, ``state/files-cache``; later ones are a directory of
    streams at that path. With the old file in the way the directory could not be made, and every
    backup after the upgrade read every file again (counted as new), saying nothing."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for rel in ("a", "b", "d/c"):
        (src / rel).write_bytes(os.urandom(20000))
        os.utime(src / rel, ns=(OLD, OLD))
    time.sleep(1.1)  # (a file changed within a second of being read is never trusted)
    tb("init")
    first = summary(tb("backup", str(src), "--json"))
    assert first["files_new"] == 3
    (state,) = (tmp_path / "cache").glob("*/state")
    shutil.rmtree(state / "files-cache")
    # what tuckbox wrote there before the files cache was kept per set of backed-up paths
    (state / "files-cache").write_bytes(msgpack.packb({"v": 1}) + msgpack.packb([b"/x", 1, 2, 3, 4, 5, []]))
    upgraded = summary(tb("backup", str(src), "--json"))  # reads every file once (an old cache is not used)
    assert upgraded["bytes_read"] == 60000, upgraded
    assert (state / "files-cache").is_dir()
    for _ in range(2):
        again = tb("backup", str(src), "--json")
        assert "cache" not in again.err, again.err
        s = summary(again)
        assert (s["files_new"], s["files_changed"], s["files_unmodified"], s["bytes_read"]) == (0, 0, 3, 0), s
