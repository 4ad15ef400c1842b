"""The files cache stays in walk order when some files of a directory change and others do not."""

from __future__ import annotations

import json
import os
import time

OLD = 1_500_000_000_000_000_000  # ns


def summary(res) -> dict:
    return json.loads(res.out.splitlines()[-1])


def test_a_file_changed_once_among_unchanged_ones_is_not_read_again_by_every_later_backup(tb, tmp_path):
    """A directory's unchanged files were written to the files cache as they were looked up, and the files
    that had to be read after them: a file changed once between unchanged siblings got its record behind
    theirs, the next run's merge join passed it, and every later backup read it again (reported as new)."""
    src = tmp_path / "src"
    (src / "d" / "sub").mkdir(parents=True)
    names = [f"d/f{i}" for i in range(6)] + ["d/sub/g", "h"]
    for rel in names:
        (src / rel).write_bytes(os.urandom(5000))
        os.utime(src / rel, ns=(OLD, OLD))
    time.sleep(1.1)  # (a file changed within a second of being read is never trusted)
    tb("init")
    tb("backup", str(src))
    for rel in ("d/f1", "d/f3"):  # between unchanged files, and one of them new
        (src / rel).write_bytes(os.urandom(5000))
        os.utime(src / rel, ns=(OLD, OLD))
    (src / "d" / "f2a").write_bytes(b"new")
    os.utime(src / "d" / "f2a", ns=(OLD, OLD))
    time.sleep(1.1)
    first = summary(tb("backup", str(src), "--json"))
    assert (first["files_changed"], first["files_new"], first["files_unmodified"]) == (2, 1, 6), first
    for _ in range(2):
        again = summary(tb("backup", str(src), "--json"))
        assert (again["files_new"], again["files_changed"], again["files_unmodified"]) == (0, 0, 9), again
        assert again["bytes_read"] == 0
