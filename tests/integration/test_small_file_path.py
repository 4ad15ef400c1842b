"""The walk's fast path for small files (Archiver._small_file) records exactly what the general path
(node_from_stat + _save_file) records: the same entry bytes for every file, so trees keep their ids
whichever path made them, and deduplicate across runs and versions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tuckbox.archiver.archiver import Archiver
from tuckbox.archiver.backup import BackupRequest, run_backup
from tuckbox.backends.local import LocalBackend
from tuckbox.repository.repo import Repository
from tuckbox.testing.trees import sample_tree
from tuckbox.types import BlobType


def _file_entries(repo: Repository, tree_id: bytes, prefix: bytes = b"") -> dict[bytes, bytes]:
    """Every file entry of a snapshot, as its encoded map, by path."""
    out: dict[bytes, bytes] = {}
    stack = [(prefix, tree_id)]
    while stack:
        base, tid = stack.pop()
        for m in msgpack.unpackb(repo.load_blob(BlobType.TREE, tid))["nodes"]:
            path = base + b"/" + m["n"]
            if m["t"] == "file":
                out[path] = msgpack.packb(m)
            if m.get("st"):
                stack.append((path, m["st"]))
    return out


def test_the_fast_path_records_what_the_general_path_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    sample_tree(src)  # every kind of entry and metadata
    small = src / "plain small files"
    small.mkdir()
    for i in range(40):  # and plenty of plain small files of every mode, some empty, some with xattrs
        f = small / f"f{i}"
        f.write_bytes(os.urandom(i * 97))
        os.chmod(f, [0o644, 0o600, 0o755, 0o4755, 0o1644, 0o000, 0o640][i % 7])
        if i % 5 == 0:
            os.setxattr(f, b"user.note", b"x" * i)
        os.utime(f, ns=(1_600_000_000_123_456_789 + i, 1_500_000_000_987_654_321 + i))
    backend = LocalBackend(str(tmp_path / "repo"))
    Repository.init(backend, b"pw", created="t", host="h", user="u")

    taken = []
    fast = Archiver._small_file

    def counting(self: Archiver, *a: Any) -> Any:
        node = fast(self, *a)
        if node is not None:
            taken.append(a[0])
        return node

    monkeypatch.setattr(Archiver, "_small_file", counting)
    monkeypatch.setenv("TUCKBOX_CACHE_DIR", str(tmp_path / "cache1"))
    repo = Repository.open(backend, lambda: b"pw")
    first = run_backup(repo, BackupRequest([str(src)], checkpoint_interval=0)).snapshot
    assert len(taken) >= 40

    monkeypatch.setattr(Archiver, "_small_file", lambda self, *a: None)  # the general path only
    monkeypatch.setenv("TUCKBOX_CACHE_DIR", str(tmp_path / "cache2"))  # no files cache: every file read again
    repo = Repository.open(backend, lambda: b"pw")
    second = run_backup(repo, BackupRequest([str(src)], checkpoint_interval=0)).snapshot

    fast_entries, general_entries = _file_entries(repo, first.tree), _file_entries(repo, second.tree)
    assert len(fast_entries) >= 40
    assert fast_entries == general_entries
    assert first.summary["files_new"] == second.summary["files_new"]
    assert first.summary["bytes_read"] == second.summary["bytes_read"]
    assert first.summary["bytes_total"] == second.summary["bytes_total"]
