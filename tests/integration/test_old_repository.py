"""Today's tuckbox reads and extends a repository the first releases wrote (format version 1 from the start).

``tests/fixtures/repo-df372b5`` was written by commit df372b5, the oldest whose CLI runs (see its README):
key files, config (chunker ``fastcdc2020/nc1/xor-seed``), packs, index, trees, a snapshot, a write-only key
and recovery-kit shares.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tuckbox.testing.trees import compare_trees

FIXTURE = Path(__file__).parent.parent / "fixtures" / "repo-df372b5"
SOURCE = "/tmp/tuckbox-fixture-src"  # the path the old backup stored


def make_source(root: Path) -> None:
    """The tree the fixture's snapshot holds, as df372b5 backed it up."""
    r = os.fsencode(root)
    os.makedirs(r + b"/dir/sub")

    def w(p: bytes, data: bytes, mt: int, mode: int = 0o644) -> None:
        with open(r + p, "wb") as f:
            f.write(data)
        os.chmod(r + p, mode)
        os.utime(r + p, ns=(mt, mt))

    w(b"/hello.txt", b"hello from an old tuckbox\n" * 4, 1_600_000_000_123_456_789)
    w(b"/dir/name-\xff\xfe.bin", bytes(range(256)), 1_600_000_001_000_000_000, 0o600)
    w(b"/dir/sub/run.sh", b"#!/bin/sh\necho hi\n", 1_600_000_002_000_000_000, 0o4755)
    w(b"/empty", b"", 1_600_000_003_000_000_000)
    with open(r + b"/sparse.img", "wb") as f:
        f.truncate(1 << 20)
        f.seek(512 * 1024)
        f.write(b"S" * 4096)
    os.utime(r + b"/sparse.img", ns=(1_600_000_004_000_000_000,) * 2)
    os.link(r + b"/hello.txt", r + b"/dir/hard.txt")
    os.symlink(b"../hello.txt", r + b"/dir/link")
    os.symlink(b"/nowhere/\xff", r + b"/dir/dangling")
    for link in (b"/dir/link", b"/dir/dangling"):  # (made without a time: the one the old backup stored)
        os.utime(r + link, ns=(1_796_647_574_775_755_554,) * 2, follow_symlinks=False)
    os.setxattr(r + b"/hello.txt", b"user.note", b"kept\x00binary")
    os.utime(r + b"/hello.txt", ns=(1_600_000_000_123_456_789,) * 2)
    for d, mt in ((b"/dir/sub", 1_600_000_005), (b"/dir", 1_600_000_006), (b"", 1_600_000_007)):
        os.utime(r + d, ns=(mt * 10**9, mt * 10**9))


def _old_repository(tb, tmp_path: Path) -> Path:
    shutil.copytree(FIXTURE / "repo", tb.repo)
    tb.passfile.write_text("old-passphrase\n")
    key = tmp_path / "write-only.key"
    shutil.copy(FIXTURE / "write-only.key", key)
    key.chmod(0o600)
    expected = tmp_path / "expected"
    make_source(expected)
    return expected


def test_a_repository_of_the_first_release_is_read_restored_and_checked(tb, tmp_path):
    expected = _old_repository(tb, tmp_path)
    (snap,) = tb("snapshots", "--json").json()
    assert (snap["tags"], snap["paths"], snap["partial"]) == (["old"], [SOURCE], False), snap
    keys = tb("key", "list", "--json").json()
    assert sorted((k["kind"], k["in_use"]) for k in keys) == [("full", True), ("write-only", False)], keys
    tb("check", "--read-data")
    tb("restore", "latest", "--target", str(tmp_path / "r"))
    assert compare_trees(expected, tmp_path / "r" / SOURCE.lstrip("/"), check_atime=False, check_owner=False) == []
    dumped = tb("dump", "latest", SOURCE + "/hello.txt")
    assert dumped.raw == b"hello from an old tuckbox\n" * 4
    shares = [str(FIXTURE / "kit" / f"share-{i}.txt") for i in (1, 3)]
    tb("restore", "latest", "--target", str(tmp_path / "k"), "--recover", *shares,
       env={"TUCKBOX_PASSWORD_FILE": ""})
    assert compare_trees(expected, tmp_path / "k" / SOURCE.lstrip("/"), check_atime=False, check_owner=False) == []


def test_a_repository_of_the_first_release_is_extended_and_pruned(tb, tmp_path):
    """New backups deduplicate against the old data (same chunker, chunk ids and keys), with the passphrase
    and with the old write-only key; forget and prune keep what is used; the old snapshot still restores."""
    expected = _old_repository(tb, tmp_path)
    data_blobs = tb("stats", "--json").json()["data_blobs"]
    tb("backup", str(expected), "--tag", "new")
    tb("--key-file", str(tmp_path / "write-only.key"), "backup", str(expected), "--tag", "write-only")
    assert tb("stats", "--json").json()["data_blobs"] == data_blobs  # every file's content was stored already
    snaps = tb("snapshots", "--json").json()
    assert sorted(s["tags"][0] for s in snaps) == ["new", "old", "write-only"], snaps
    (wo,) = [s["id"] for s in snaps if s["tags"] == ["write-only"]]
    tb("forget", wo, "--prune")
    tb("check", "--read-data")
    for tag, path in (("old", SOURCE), ("new", str(expected))):
        target = tmp_path / f"r-{tag}"
        tb("restore", "latest", "--tag", tag, "--target", str(target))
        assert compare_trees(expected, target / path.lstrip("/"), check_atime=False, check_owner=False) == []
