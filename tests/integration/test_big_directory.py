"""A directory of very many entries: what the backup holds per entry until its tree is written."""

from __future__ import annotations

import inspect
import time
import tracemalloc
from pathlib import Path

import pytest

from tuckbox.archiver import archiver
from tuckbox.archiver.backup import BackupRequest, run_backup
from tuckbox.backends.local import LocalBackend
from tuckbox.repository.repo import Repository

N = 3000


def _listing_bytes_alive() -> int:
    """Bytes still allocated by the lines of ``_walk_dir`` that list the directory and stat its entries."""
    lines, first = inspect.getsourcelines(archiver.Archiver._walk_listed)
    wanted = {first + i for i, text in enumerate(lines) if "scandir(" in text or "sorted(" in text or "entry.stat(" in text}
    assert len(wanted) == 3, wanted
    snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, archiver.__file__)])
    return sum(s.size for s in snap.statistics("lineno") if s.traceback[0].lineno in wanted)


@pytest.mark.parametrize("run", ["first", "unchanged"])
def test_a_huge_directory_holds_no_stat_per_entry_while_its_tree_is_written(tmp_path, monkeypatch, run):
    """A directory's listing and every entry's stat (about 1 KiB of objects each) stayed alive until its tree
    was written: one directory of 300,000 files took 614 MiB (first backup) and 484 MiB (unchanged). Each now
    goes once its entry is done, so only the entries' nodes are left when the tree is encoded."""
    monkeypatch.setenv("TUCKBOX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TUCKBOX_PACK_PROCESS", "0")
    src = tmp_path / "src" / "big"
    src.mkdir(parents=True)
    for i in range(N):
        (src / f"f{i:05d}").write_bytes(str(i).encode() if i % 2 else b"")
    time.sleep(1.1)  # (a file changed within a second of being read is never trusted)
    repo = Repository.init(LocalBackend(str(tmp_path / "repo")), b"pw", created="t", host="h", user="u")
    if run == "unchanged":
        run_backup(repo, BackupRequest([str(tmp_path / "src")]))
    seen: list[tuple[int, int]] = []
    save_tree = archiver.Archiver._save_tree

    def observed(self, nodes, path=b""):
        if len(nodes) == N:
            seen.append((len(nodes), _listing_bytes_alive()))
        return save_tree(self, nodes, path)

    monkeypatch.setattr(archiver.Archiver, "_save_tree", observed)
    tracemalloc.start()
    try:
        result = run_backup(repo, BackupRequest([str(tmp_path / "src")]))
    finally:
        tracemalloc.stop()
    summary = result.snapshot.summary
    assert summary["files_unmodified" if run == "unchanged" else "files_new"] == N, summary
    assert len(seen) == 1 and seen[0][1] < 300 * N, seen
    # (was ~830 bytes per entry; what is left is the names and times the nodes themselves hold: 40-220)
