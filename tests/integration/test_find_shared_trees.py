"""find over many snapshots that share most of their trees: each distinct match is held once."""

from __future__ import annotations

import os

from tuckbox.archiver.backup import BackupRequest, run_backup
from tuckbox.archiver.report import Progress
from tuckbox.backends.local import LocalBackend
from tuckbox.repository.repo import Repository
from tuckbox.snapshot.walk import find_in_tree, load_nodes
from tuckbox.types import BlobType


def test_find_keeps_each_match_once_however_many_snapshots_share_it(tmp_path, monkeypatch):
    """The memo held, for every (tree, path), a copy of every match below it: each snapshot's root a list
    of all the tree's matches, so 'find *.txt' over 300 snapshots of 20,000 files grew to 270 MB (snapshots x
    matches). Now a directory refers to its subdirectories' entries: what is held is each distinct match
    once, and the output is the same, in the same order."""
    monkeypatch.setenv("TUCKBOX_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "src"
    for a in range(3):
        for b in range(3):
            (src / f"a{a}" / f"b{b}").mkdir(parents=True)
            for c in range(10):
                (src / f"a{a}" / f"b{b}" / f"f{c}.txt").write_text(f"{a} {b} {c}\n")
    repo = Repository.init(LocalBackend(str(tmp_path / "repo")), b"pw", created="t", host="h", user="u")
    snaps = []
    for i in range(8):
        (src / f"a{i % 3}" / f"b{i * 2 % 3}" / f"f{i}.txt").write_text(f"changed {i}\n")
        snaps.append(run_backup(repo, BackupRequest([str(src)]), Progress()).snapshot)
    load = lambda tid: repo.load_blob(BlobType.TREE, tid)  # noqa: E731
    memo: dict = {}
    found = [[(p, n.size, n.mtime_ns) for p, n in find_in_tree(load, s.tree, b"/", lambda p, n: n.endswith(b".txt"), memo)]
             for s in snaps]
    prefix = os.fsencode(src)
    for s, matches in zip(snaps, found):  # each snapshot: its 90 files, in walk order
        assert [p for p, _, _ in matches] == sorted(
            prefix + b"/a%d/b%d/f%d.txt" % (a, b, c) for a in range(3) for b in range(3) for c in range(10))
        assert len({m for m in matches}) == 90
    # each directory holds at most one item per entry of its own listing (a match, or a subdirectory with
    # matches): the memo is as large as the distinct trees, whatever the number of snapshots sharing them
    for (tid, path), held in memo.items():
        assert len(held) <= len(load_nodes(load, tid, path)), (path, len(held))
    # a second search with the same memo gives the same (no tree is read again)
    again = [[(p, n.size, n.mtime_ns) for p, n in find_in_tree(lambda t: b"", s.tree, b"/", lambda p, n: True, memo)]
             for s in snaps]
    assert again == found
