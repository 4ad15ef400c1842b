"""Restores from remote storage are written by forked worker processes, each with its own connection.

Before the fork the backend drops its connections and (SFTP) its event-loop
thread (``suspend``: SFTP, S3, WebDAV, Tahoe-LAFS); every worker and the restoring process then connect on
their own. Tiny windows make the workers fetch many ranges; the restored tree
must equal the source exactly, a damaged pack must cost only its file, and the
restoring process's backend must still work afterwards.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tuckbox.archiver.backup import BackupRequest, run_backup
from tuckbox.backends import open_backend
from tuckbox.backends.wrappers import wrap_backend
from tuckbox.chunker import ChunkerParams
from tuckbox.repository.config import Config
from tuckbox.repository.repo import Repository
from tuckbox.restorer import fetch as fetch_module
from tuckbox.restorer import restorer as restorer_module
from tuckbox.restorer.restorer import Restorer
from tuckbox.restorer.workers import usable
from tuckbox.snapshot.walk import find
from tuckbox.testing.servers import server_env
from tuckbox.testing.trees import compare_trees, sample_tree
from tuckbox.types import BlobType, ObjectType

from .conftest import count_worker_processes

pytestmark = pytest.mark.servers
DIR_TIMES = (1_000_000_000_123, 2_000_000_000_456)


def _backend(kind: str, monkeypatch: pytest.MonkeyPatch):
    sub = f"rw-{uuid.uuid4().hex[:12]}"
    if kind == "sftp":
        env = server_env("sshd")
        root = env["SFTP_ROOT"] if env["SFTP_ROOT"].startswith("/") else "/" + env["SFTP_ROOT"]
        url = f"sftp://{env['SFTP_USER']}@{env['SFTP_HOST']}:{env['SFTP_PORT']}{root.rstrip('/')}/{sub}"
        opts = {"sftp.identity": env["SFTP_IDENTITY"], "sftp.known_hosts": env["SFTP_KNOWN_HOSTS"],
                "sftp.config": os.devnull}
        return open_backend(url, opts)
    if kind == "s3":
        env = server_env("seaweedfs")
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
            monkeypatch.setenv(k, env[k])
        return open_backend(f"s3://{env['S3_BUCKET']}/{sub}", {"s3.endpoint": env["S3_ENDPOINT"]})
    if kind == "webdav":
        env = server_env("rclone-webdav")
        monkeypatch.setenv("TUCKBOX_WEBDAV_USER", env["WEBDAV_USER"])
        monkeypatch.setenv("TUCKBOX_WEBDAV_PASSWORD", env["WEBDAV_PASSWORD"])
        return open_backend(f"webdav+{env['WEBDAV_URL'].rstrip('/')}/{sub}", {})
    env = server_env("tahoe")
    host = env["TAHOE_URL"].removeprefix("http://").rstrip("/")
    return open_backend(f"tahoe://{host}/{env['TAHOE_DIRCAP']}/{sub}", {})


@pytest.fixture(params=["sftp", "s3", "webdav", "tahoe"])
def remote_backup(request, tmp_path, monkeypatch):
    monkeypatch.setenv("TUCKBOX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(restorer_module, "PROCESSES", 2)
    monkeypatch.setattr(restorer_module, "WINDOW_FILES", 2)
    monkeypatch.setattr(restorer_module, "WINDOW_BYTES", 8192)
    monkeypatch.setattr(restorer_module, "REMOTE_WINDOW_SCALE", 1)
    monkeypatch.setattr(restorer_module, "READ_AHEAD", 100 << 10)
    monkeypatch.setattr(fetch_module, "MAX_RANGE", 64 << 10)
    monkeypatch.setattr(restorer_module, "BLOB_CACHE", 64 << 10)  # (keeps no blob of big.bin until its copy)
    monkeypatch.setattr(fetch_module, "COPY_MIN", 1)
    monkeypatch.setattr(restorer_module, "COPY_MIN", 1)
    started = count_worker_processes(monkeypatch)
    src = tmp_path / "src"
    sample_tree(src)
    for d in range(4):
        sub = src / "many" / f"d{d}"
        sub.mkdir(parents=True)
        for f in range(5):
            (sub / f"f{f}").write_bytes(os.urandom(100 + 1999 * f))
    (src / "many" / "big.bin").write_bytes(os.urandom(400_000))
    (src / "zz").mkdir()
    (src / "zz" / "big-copy.bin").write_bytes((src / "many" / "big.bin").read_bytes())  # windows later
    for d in sorted((src / "many").rglob("*"), reverse=True):
        if d.is_dir():
            os.utime(d, ns=DIR_TIMES)
    backend = wrap_backend(_backend(request.param, monkeypatch), connections=3)
    config = Config.new("t", ChunkerParams(4096, 8192, 65536), pack_size=1 << 20)
    repo = Repository.init(backend, b"pw", created="t", host="h", user="u", config=config)
    try:
        result = run_backup(repo, BackupRequest([str(src)]))
        assert result.warnings == []
        yield repo, result.snapshot, src, started
    finally:
        for t in (ObjectType.PACK, ObjectType.INDEX, ObjectType.SNAPSHOT, ObjectType.KEY, ObjectType.LOCK):
            for info in list(backend.list(t)):
                backend.remove(t, info.name)
        try:
            backend.remove(ObjectType.CONFIG, "config")
        except Exception:  # noqa: BLE001 - best-effort cleanup
            pass
        backend.close()


def _out(target: Path, src: Path) -> Path:
    return Path(str(target) + str(src))


def test_workers_restore_exactly_and_the_parent_reconnects(remote_backup, tmp_path):
    repo, snap, src, started = remote_backup
    assert usable(repo.backend)
    target = tmp_path / "out"
    result = Restorer(repo, connections=3).restore(snap, os.fsencode(target))
    assert started == [2]
    assert result.errors == [] and result.warnings == []
    assert compare_trees(src, _out(target, src)) == []
    # the copy's blobs were read back from the restored original, not fetched again (all but what the
    # small blob cache still held)
    assert 300_000 <= result.bytes_read_back <= 400_000
    # the restoring process's own connection came back after the fork: it still reads and lists
    assert sum(1 for _ in repo.backend.list(ObjectType.SNAPSHOT)) == 1
    again = tmp_path / "again"
    assert Restorer(repo, connections=3).restore(snap, os.fsencode(again)).errors == []
    assert compare_trees(src, _out(again, src)) == []
    assert started == [2, 2]


def test_a_damaged_blob_costs_only_its_file(remote_backup, tmp_path):
    repo, snap, src, started = remote_backup
    victim = src / "many" / "d2" / "f1"
    node = find(lambda t: repo.load_blob(BlobType.TREE, t), snap.tree, os.fsencode(victim))
    assert node is not None and len(node.content) == 1
    loc = repo.index.lookup(node.content[0])
    data = bytearray(repo.backend.load(ObjectType.PACK, loc.pack.name))
    data[loc.entry.offset + loc.entry.length // 2] ^= 0x40
    repo.backend.remove(ObjectType.PACK, loc.pack.name)  # objects are immutable: replace it whole
    repo.backend.save(ObjectType.PACK, loc.pack.name, bytes(data))
    target = tmp_path / "out"
    result = Restorer(repo, connections=3).restore(snap, os.fsencode(target))
    assert started == [2]
    assert len(result.errors) == 1, result.errors
    assert result.errors[0].startswith(f"{victim}: not restored: ") and "failed authentication" in result.errors[0]
    assert not (_out(target, src) / "many" / "d2" / "f1").exists()
    (_out(target, src) / "many" / "d2" / "f1").write_bytes(victim.read_bytes())  # what it would have been
    os.utime(_out(target, src) / "many" / "d2" / "f1", ns=(victim.stat().st_atime_ns, victim.stat().st_mtime_ns))
    os.utime(_out(target, src) / "many" / "d2", ns=DIR_TIMES)
    assert compare_trees(src, _out(target, src)) == []
