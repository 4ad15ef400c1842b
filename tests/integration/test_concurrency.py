"""Concurrency: three hosts back up three different trees into one repository at the same time, while
a fourth process restores an earlier snapshot and a fifth runs ``check --read-data``. Every process
succeeds, every snapshot is complete and restores exactly, and the data the trees share (already
stored by the earlier snapshot) is stored once: deduplicated across hosts.

Each host has its own cache (as separate machines would); locks are shared, so nobody waits.
Run against a local repository, the real SFTP server and the real S3 server.

Also: two backups on one machine sharing one cache leave each other's pack journal alone, and a reader
that opened the repository before a backup finished still reads that backup's snapshot.
"""

from __future__ import annotations

import os
import random
import shutil
import time

import pytest

from tuckbox.repository.index import decode_index
from tuckbox.restorer.restorer import Restorer
from tuckbox.snapshot.walk import find
from tuckbox.testing.crash import (
    MiB,
    Cli,
    PackInspector,
    journaled,
    local_storage,
    make_tree,
    open_repo,
    restored,
    s3_storage,
    sftp_storage,
    wait_for,
)
from tuckbox.testing.servers import server_env
from tuckbox.testing.trees import compare_trees
from tuckbox.types import BlobType, ObjectType

INIT = ("init", "--pack-size", "1MiB", "--chunk-min", "16KiB", "--chunk-avg", "32KiB", "--chunk-max", "256KiB")


@pytest.fixture(params=["local", "sftp", "s3"])
def storage(request, tmp_path):
    name = f"conc-{os.getpid()}-{int(time.time() * 1000) % 10**8}"
    if request.param == "local":
        st = local_storage(tmp_path / "repo")
    elif request.param == "sftp":
        st = sftp_storage(server_env("sshd"), name)
    else:
        st = s3_storage(server_env("seaweedfs"), name)
    yield st
    st.cleanup()


def test_three_hosts_restore_and_check_at_once(storage, tmp_path):
    rng = random.Random(99)
    shared = {"shared-1.bin": rng.randbytes(2 * MiB), "shared-2.bin": rng.randbytes(1 * MiB + 12345)}
    hosts = ["host-a", "host-b", "host-c"]
    srcs = {h: tmp_path / h / "data" for h in hosts}
    sizes = {h: make_tree(srcs[h], 100 + i, big=2, big_size=(1 * MiB, 2 * MiB), dirs=3, files_per_dir=25, shared=shared)
             for i, h in enumerate(hosts)}
    shared_size = sum(len(d) for d in shared.values())
    clis = {h: Cli(tmp_path, storage, name=h) for h in [*hosts, "restorer", "checker"]}
    clis["host-a"](*INIT)

    # an earlier snapshot of host-a, holding the shared files
    earlier = clis["host-a"]("--json", "backup", "--host", "host-a", str(srcs["host-a"])).summary()
    as_it_was = tmp_path / "host-a-earlier"
    shutil.copytree(srcs["host-a"], as_it_was, symlinks=True)
    (srcs["host-a"] / "dir-00" / "today.bin").write_bytes(rng.randbytes(1 * MiB))

    # all five at once (uploads slowed a little so that they really overlap)
    running = {
        h: clis[h].start("--json", "--limit-upload", "4MiB", "backup", "--host", h, str(srcs[h])) for h in hosts
    }
    running["restorer"] = clis["restorer"].start(
        "--json", "--limit-download", "8MiB", "restore", earlier["snapshot"][:12], "--target", str(tmp_path / "r-earlier")
    )
    running["checker"] = clis["checker"].start("--json", "check", "--read-data")
    results = {name: r.wait(timeout=300) for name, r in running.items()}
    for name, res in results.items():
        assert res.code == 0, f"{name} exited {res.code}:\n{res.err[-3000:]}"
    assert compare_trees(as_it_was, restored(tmp_path / "r-earlier", srcs["host-a"])) == []

    # every snapshot complete, and each restores exactly
    snaps = clis["checker"]("snapshots", "--json").json()
    assert sorted(s["host"] for s in snaps) == ["host-a", "host-a", "host-b", "host-c"]
    assert not any(s["partial"] for s in snaps)
    assert clis["checker"]("check", "--read-data", "--json").json()["ok"]
    summaries = {h: results[h].summary() for h in hosts}
    for h in hosts:
        target = tmp_path / f"r-{h}"
        clis["checker"]("restore", summaries[h]["snapshot"][:12], "--target", str(target))
        assert compare_trees(srcs[h], restored(target, srcs[h])) == []

    # the shared files were stored once, by the earlier snapshot: nobody uploaded them again
    assert earlier["bytes_new_raw"] >= sizes["host-a"]
    for h in ("host-b", "host-c"):
        assert summaries[h]["bytes_new_raw"] < sizes[h] - shared_size + 256 * 1024, summaries[h]
    assert summaries["host-a"]["bytes_new_raw"] < 1 * MiB + 256 * 1024
    repo = open_repo(storage, clis["checker"].passphrase, tmp_path / "inspect-cache")
    try:
        repo.load_index()
        copies: dict[bytes, int] = {}
        for info in repo.backend.list(ObjectType.INDEX):
            for pack in decode_index(repo.backend.load(ObjectType.INDEX, info.name), repo.keys.index_key, info.name):
                for e in pack.blobs:
                    copies[e.id] = copies.get(e.id, 0) + 1
        snap = repo.find_snapshot(summaries["host-c"]["snapshot"][:12])
        chunks = set()
        for name in shared:
            node = find(lambda t: repo.load_blob(BlobType.TREE, t), snap.tree, os.fsencode(srcs["host-c"] / name))
            chunks |= {c for c in node.content if isinstance(c, bytes)}
        assert len(chunks) > 10
        assert {copies[c] for c in chunks} == {1}, "a shared chunk is stored more than once"
    finally:
        repo.close()


def test_backups_sharing_a_cache_leave_each_others_journal_alone(tmp_path):
    """Two backups on one machine with one cache (two cron jobs): the second must not adopt, and delete,
    the pack journal of the first while it is still running; else the first, killed later, would leave
    more than one unjournaled pack per connection and upload them again."""
    storage = local_storage(tmp_path / "repo")
    cache = tmp_path / "shared-cache"
    slow, quick = Cli(tmp_path, storage, cache=cache, name="slow"), Cli(tmp_path, storage, cache=cache, name="quick")
    src_slow, src_quick = tmp_path / "slow-src", tmp_path / "quick-src"
    make_tree(src_slow, 201, big=4, big_size=(3 * MiB, 3 * MiB), dirs=1, files_per_dir=5)
    make_tree(src_quick, 202, big=1, big_size=(1 * MiB, 1 * MiB), dirs=1, files_per_dir=5)
    slow(*INIT)
    repo = open_repo(storage, slow.passphrase, tmp_path / "inspect-cache")
    insp = PackInspector(repo)
    try:
        running = slow.start("--limit-upload", "2MiB", "backup", str(src_slow))
        wait_for(lambda: running.proc.poll() is not None or len(journaled(cache)) >= 2, 60, "two journaled packs")
        quick_snap = quick("--json", "backup", str(src_quick)).summary()["snapshot"]  # meanwhile, same cache
        stored_then = len(insp.stored())
        wait_for(lambda: running.proc.poll() is not None or len(insp.stored()) >= stored_then + 3, 60, "three more packs")
        running.kill()
        assert running.wait().code == -9, "the slow backup finished before it could be killed"
        stored = insp.stored()
        vouched = (set(insp.indexed()) | journaled(cache)) & set(stored)
        orphans = set(stored) - vouched
        assert len(orphans) <= storage.connections, f"{len(orphans)} stored packs are known to no index or journal"
        slow_snap = slow("--json", "backup", str(src_slow)).summary()["snapshot"]
        for src, snap in ((src_slow, slow_snap), (src_quick, quick_snap)):
            target = tmp_path / f"r-{src.name}"
            slow("restore", snap[:12], "--target", str(target))
            assert compare_trees(src, restored(target, src)) == []
    finally:
        repo.close()


def test_snapshot_saved_after_a_reader_opened_the_repository(tmp_path):
    """A reader (restore, ls, dump) loads the index, then lists snapshots; a backup finishing in between
    stores its index before its snapshot, so the reader must refresh the index after listing, or
    'latest' names chunks it believes missing. The reader here is tuckbox's own Restorer, opened before
    a real backup process ran to completion."""
    storage = local_storage(tmp_path / "repo")
    cli = Cli(tmp_path, storage)
    first, second = tmp_path / "first", tmp_path / "second"
    make_tree(first, 301, big=1, big_size=(1 * MiB, 1 * MiB), dirs=1, files_per_dir=5)
    make_tree(second, 302, big=1, big_size=(1 * MiB, 1 * MiB), dirs=1, files_per_dir=5)
    cli(*INIT)
    cli("backup", str(first))
    repo = open_repo(storage, cli.passphrase, tmp_path / "reader-cache")
    try:
        repo.load_index()  # the reader has opened the repository ...
        cli("backup", str(second))  # ... when another backup completes
        snap = repo.find_snapshot("latest")
        assert [os.fsdecode(p) for p in snap.paths] == [str(second)]
        result = Restorer(repo).restore(snap, os.fsencode(tmp_path / "r"))
        assert result.errors == []
        assert compare_trees(second, restored(tmp_path / "r", second)) == []
    finally:
        repo.close()


def test_prune_waits_for_a_running_backup_and_keeps_what_it_deduplicated(storage, tmp_path):
    """forget runs beside a backup (shared locks); prune --lock-wait waits for the backup to end, then
    removes only what no snapshot needs: the running backup deduplicated against the forgotten snapshot's
    data, and that data is still there afterwards."""
    src = tmp_path / "data"
    make_tree(src, 301, big=3, big_size=(1 * MiB, 2 * MiB), dirs=2, files_per_dir=20)
    cli, other = Cli(tmp_path, storage, name="laptop"), Cli(tmp_path, storage, name="admin")
    cli(*INIT)
    first = cli("--json", "backup", str(src)).summary()["snapshot"]
    gone = sorted(src.glob("big-*"))[0]
    gone_size = gone.stat().st_size
    gone.unlink()  # only the first snapshot holds it: prune may remove it
    make_tree(src / "new", 302, big=4, big_size=(2 * MiB, 2 * MiB), dirs=1, files_per_dir=5)
    repo = open_repo(storage, cli.passphrase, tmp_path / "inspect-cache")
    insp = PackInspector(repo)
    try:
        before = len(insp.stored())
        running = cli.start("--json", "--limit-upload", "2MiB", "backup", str(src))
        wait_for(lambda: running.proc.poll() is not None or len(insp.stored()) > before, 60, "the backup storing a pack")
        assert running.proc.poll() is None, "the backup ended before prune could meet it"
        other("forget", first[:12])  # shared lock: beside the backup
        pruned = other("--json", "--lock-wait", "5m", "prune")
        assert running.proc.poll() is not None  # prune ran only once the backup had ended
        res = running.wait(timeout=300)
        assert res.code == 0, res.err[-3000:]
        assert "waiting up to 5 min for the repository lock" in pruned.err
        assert pruned.json()["plan"]["bytes_removed"] >= gone_size  # the forgotten file's data went
        assert other("check", "--read-data", "--json").json()["ok"]
        target = tmp_path / "r"
        other("restore", "latest", "--target", str(target))
        assert compare_trees(src, restored(target, src)) == []
    finally:
        repo.close()
