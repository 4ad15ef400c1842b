"""The streaming restore with tiny windows, in worker processes and in threads.

Windows of two files, one pending directory and a small blob cache make every
boundary happen in a small tree: hardlinks whose data is in an earlier (or the
same) window and in another directory, multi-chunk and sparse files split
into several range requests, content shared across windows, directories whose
metadata must wait for later windows. Each case must restore exactly
(``compare_trees``), resume, fail only a damaged file, and honour
--include/--exclude.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import msgpack
import pytest

from tuckbox import directio
from tuckbox.archiver.backup import BackupRequest, run_backup
from tuckbox.backends.local import LocalBackend
from tuckbox.chunker import ChunkerParams
from tuckbox.errors import IntegrityError, UsageError
from tuckbox.fsmeta import ACL_DEFAULT, acl_xattr
from tuckbox.repository.config import Config
from tuckbox.repository.repo import Repository
from tuckbox.restorer import restorer as restorer_module
from tuckbox.restorer import fetch as fetch_module
from tuckbox.restorer import marker as markers
from tuckbox.restorer import writer as writer_module
from tuckbox.restorer.restorer import MARKER, Restorer
from tuckbox.backends import fork as fork_module
from tuckbox.backends.fork import cpus
from tuckbox.snapshot.tree import FILE, TREE_VERSION
from tuckbox.snapshot.walk import decode_maps, find
from tuckbox.testing.crash import Cli, local_storage, wait_for
from tuckbox.testing.trees import compare_trees, sample_tree
from tuckbox.types import BlobType

from .conftest import count_worker_processes

SHARED = os.urandom(3000)  # the same content in many directories: one blob, needed by many windows


@pytest.fixture(params=["processes", "threads"])
def mode(request, monkeypatch):
    monkeypatch.setattr(restorer_module, "PROCESSES", 2 if request.param == "processes" else 1)
    monkeypatch.setattr(restorer_module, "WINDOW_FILES", 2)
    monkeypatch.setattr(restorer_module, "WINDOW_BYTES", 8192)
    monkeypatch.setattr(restorer_module, "PENDING_DIRS", 1)
    monkeypatch.setattr(restorer_module, "BLOB_CACHE", 64 << 10)
    monkeypatch.setattr(restorer_module, "READ_AHEAD", 100 << 10)
    monkeypatch.setattr(fetch_module, "MAX_RANGE", 64 << 10)
    monkeypatch.setattr(fetch_module, "GAP", 4096)
    started = count_worker_processes(monkeypatch)
    yield request.param
    assert (started and set(started) == {2}) if request.param == "processes" else not started, started


def build_tree(src: Path) -> None:
    """The sample tree (every kind of entry and metadata) plus directories of small and shared files and
    hardlinks across directories and windows."""
    sample_tree(src)
    many = src / "many"
    many.mkdir()
    for d in range(6):
        sub = many / f"d{d}"
        sub.mkdir()
        for f in range(5):
            (sub / f"f{f}").write_bytes(os.urandom(100 + 997 * f))
        (sub / "shared").write_bytes(SHARED)
        (sub / "empty").write_bytes(b"")
        (sub / "nested" / "deeper").mkdir(parents=True)
        (sub / "nested" / "deeper" / "x.skip").write_bytes(os.urandom(50))
    os.link(many / "d0" / "f3", many / "d5" / "link-to-d0-f3")  # data in the first windows, link in the last
    os.link(many / "d2" / "f4", many / "d2" / "nested" / "link-to-f4")  # data in the same or the window before
    big = many / "d3" / "big.bin"
    big.write_bytes(os.urandom(300_000))  # many chunks, several range requests
    os.link(big, many / "d4" / "big-link")
    for d in sorted(many.rglob("*"), reverse=True):  # directory mtimes back to something recognisable
        if d.is_dir() and not d.is_symlink():
            os.utime(d, ns=(1_000_000_000_123, 2_000_000_000_456))


@pytest.fixture
def backed_up(tmp_path, monkeypatch):
    monkeypatch.setenv("TUCKBOX_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "src"
    build_tree(src)
    config = Config.new("t", ChunkerParams(4096, 8192, 65536), pack_size=1 << 20)
    repo = Repository.init(LocalBackend(str(tmp_path / "repo")), b"pw", created="t", host="h", user="u", config=config)
    result = run_backup(repo, BackupRequest([str(src)]))
    assert result.warnings == []
    return repo, result.snapshot, src


def out_of(target: Path, src: Path) -> Path:
    return Path(str(target) + str(src))


def test_tiny_windows_restore_everything_exactly(mode, backed_up, tmp_path):
    repo, snap, src = backed_up
    target = tmp_path / "out"
    result = Restorer(repo, connections=2).restore(snap, os.fsencode(target))
    assert result.errors == [] and result.warnings == []
    assert compare_trees(src, out_of(target, src)) == []
    assert not (target / MARKER.decode()).exists()
    assert os.stat(out_of(target, src) / "many" / "d0" / "f3").st_nlink == 2
    assert os.stat(out_of(target, src) / "many" / "d3" / "big.bin").st_ino == os.stat(
        out_of(target, src) / "many" / "d4" / "big-link"
    ).st_ino


def test_direct_writes_restore_exactly(mode, backed_up, tmp_path, monkeypatch):
    """Blobs written with O_DIRECT for their aligned middle and buffered ends (or, where the file system
    refuses O_DIRECT, the buffered fallback) restore every file exactly, holes and hardlinks included."""
    calls: list[tuple[int, int]] = []
    real = directio.write_direct

    def counting(fd, view, offset):
        calls.append((offset, len(view)))
        return real(fd, view, offset)

    monkeypatch.setattr(directio, "worth_it", lambda path: True)
    monkeypatch.setattr(directio, "write_direct", counting)
    monkeypatch.setattr(writer_module, "DIRECT_MIN", 4096)  # this repository's chunks are 4-64 KiB
    repo, snap, src = backed_up
    target = tmp_path / "out"
    result = Restorer(repo, connections=2).restore(snap, os.fsencode(target))
    assert result.errors == [] and result.warnings == []
    assert compare_trees(src, out_of(target, src)) == []
    if mode == "threads":  # (worker processes count in their own memory)
        assert calls and all(off % directio.ALIGN == 0 and n % directio.ALIGN == 0 for off, n in calls)


def test_workers_are_forked_only_from_a_process_with_no_other_thread(backed_up, tmp_path, monkeypatch):
    """A fork beside a running thread can hand the child a lock that nobody releases there (seen: a worker hung
    for good in OpenSSL's lock, taken by a thread that was exiting at the fork). A thread that ends within the
    wait delays the fork; one that stays means threads write the windows. Each restore is exact."""
    monkeypatch.setattr(restorer_module, "PROCESSES", 2)
    monkeypatch.setattr(fork_module, "FORK_WAIT", 1.0)
    started = count_worker_processes(monkeypatch)
    repo, snap, src = backed_up

    release = threading.Event()
    staying = threading.Thread(target=release.wait, name="someone-else's")
    staying.start()
    try:
        t0 = time.monotonic()
        result = Restorer(repo, connections=2).restore(snap, os.fsencode(tmp_path / "beside-a-thread"))
        waited = time.monotonic() - t0
    finally:
        release.set()
        staying.join()
    assert started == [] and waited >= 1.0  # waited for it, then wrote with threads
    assert result.errors == [] and result.warnings == []
    assert compare_trees(src, out_of(tmp_path / "beside-a-thread", src)) == []

    leaving = threading.Thread(target=time.sleep, args=(0.3,), name="about to end")
    leaving.start()
    result = Restorer(repo, connections=2).restore(snap, os.fsencode(tmp_path / "after-a-thread"))
    assert not leaving.is_alive() and started == [2]  # the fork waited for it to end
    assert result.errors == [] and result.warnings == []
    assert compare_trees(src, out_of(tmp_path / "after-a-thread", src)) == []


def test_target_with_default_acl_and_setgid(mode, backed_up, tmp_path):
    """New entries inherit a default ACL and the group of a setgid target: nothing may be taken for granted."""
    repo, snap, src = backed_up
    target = tmp_path / "acl-target"
    target.mkdir()
    os.chmod(target, 0o2775)
    if os.geteuid() == 0:
        os.chown(target, -1, 1)
    os.setxattr(target, ACL_DEFAULT, acl_xattr(7, 5, 5, users=[(4242, 7)]))
    result = Restorer(repo, connections=2).restore(snap, os.fsencode(target))
    assert result.errors == [] and result.warnings == []
    assert compare_trees(src, out_of(target, src)) == []


def test_resume_keeps_what_is_right_and_fixes_the_rest(mode, backed_up, tmp_path):
    repo, snap, src = backed_up
    target = tmp_path / "out"
    Restorer(repo, connections=2).restore(snap, os.fsencode(target))
    out = out_of(target, src) / "many"
    (target / MARKER.decode()).write_bytes(snap.id.encode() + b"\n")  # as if it had been interrupted
    (out / "d1" / "f2").write_bytes(b"X" + (out / "d1" / "f2").read_bytes()[1:])  # same size, wrong bytes
    with open(out / "d2" / "f4", "r+b") as f:
        f.truncate(10)
    (out / "d4" / "f1").unlink()
    (out / "d5" / "f0").unlink()
    os.symlink("elsewhere", out / "d5" / "f0")  # something else where a file belongs
    (out / "d4" / "big-link").unlink()
    os.utime(out / "d3", ns=(5, 5))
    result = Restorer(repo, connections=2).restore(snap, os.fsencode(target))
    assert result.errors == [] and result.warnings == []
    assert result.files_skipped > 20
    assert compare_trees(src, out_of(target, src)) == []
    assert not (target / MARKER.decode()).exists()


def _peek(path: Path) -> bytes:
    """A file's bytes, its atime left alone (the trees are compared afterwards)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOATIME)
    try:
        return os.read(fd, 1 << 20)
    finally:
        os.close(fd)


def test_a_resume_with_only_some_paths_keeps_the_marker_for_the_rest(mode, backed_up, tmp_path):
    """An interrupted restore resumed for part of the tree (--include/--exclude, or patterns that match
    nothing) still resumes afterwards: the marker stays until a restore covering all of it completes."""
    repo, snap, src = backed_up
    target = tmp_path / "out"
    Restorer(repo, connections=2).restore(snap, os.fsencode(target))
    out = out_of(target, src) / "many"
    (target / MARKER.decode()).write_bytes(snap.id.encode() + b"\n")  # as if it had been interrupted
    (out / "d4" / "f1").unlink()
    with open(out / "d2" / "f4", "r+b") as f:
        f.truncate(10)
    result = Restorer(repo, connections=2).restore(snap, os.fsencode(target), includes=[str(src / "many" / "d2")])
    assert result.errors == [] and result.files_skipped > 0
    assert _peek(out / "d2" / "f4") == _peek(src / "many" / "d2" / "f4")
    assert (target / MARKER.decode()).exists()  # d4/f1 is still owed
    result = Restorer(repo, connections=2).restore(snap, os.fsencode(target), excludes=["f0"])
    assert result.errors == [] and (target / MARKER.decode()).exists()
    with pytest.raises(UsageError):
        Restorer(repo).restore(snap, os.fsencode(target), includes=["no-such-name-anywhere"])
    assert (target / MARKER.decode()).exists()
    result = Restorer(repo, connections=2).restore(snap, os.fsencode(target))  # the whole restore again
    assert result.errors == [] and result.warnings == []
    assert compare_trees(src, out_of(target, src)) == []
    assert not (target / MARKER.decode()).exists()


def test_a_selective_restore_is_finished_by_the_same_selection(mode, backed_up, tmp_path):
    """The marker records what an interrupted selective restore was asked for: running that again completes it
    (and removes the marker); another selection in between does not."""
    repo, snap, src = backed_up
    target = tmp_path / "out"
    d2, d4 = str(src / "many" / "d2"), str(src / "many" / "d4")
    Restorer(repo, connections=2).restore(snap, os.fsencode(target), includes=[d2], excludes=["*.skip"])
    out = out_of(target, src) / "many"
    # as if it had been interrupted
    (target / MARKER.decode()).write_bytes(markers.encode(snap.id, markers.Selection.of([d2], ["*.skip"])))
    (out / "d2" / "f3").unlink()
    result = Restorer(repo, connections=2).restore(snap, os.fsencode(target), includes=[d4])
    assert result.errors == [] and (out / "d4" / "f1").exists() and not (out / "d2" / "f3").exists()
    assert (target / MARKER.decode()).exists()  # d2 is still owed
    result = Restorer(repo, connections=2).restore(snap, os.fsencode(target), includes=[d2], excludes=["*.skip"])
    assert result.errors == [] and result.files_skipped > 0
    assert _peek(out / "d2" / "f3") == _peek(src / "many" / "d2" / "f3")
    assert not (target / MARKER.decode()).exists()


def test_the_marker_owes_the_whole_snapshot_unless_it_says_exactly_what_else():
    sel = markers.Selection.of(["/a/b", "x", "x"], ["*.tmp"])
    assert markers.decode(markers.encode("ab12", sel), "ab12") == sel
    assert markers.decode(markers.encode("ab12", sel), "ab13") is None  # another snapshot's: no resume
    assert markers.decode(b"ab12\n", "ab12") == markers.WHOLE  # (as older versions wrote it)
    assert markers.decode(b"ab12\n{not json\n", "ab12") == markers.WHOLE
    assert markers.decode(b'ab12\n{"include": 3}\n', "ab12") == markers.WHOLE
    assert markers.WHOLE.covers(sel) and sel.covers(markers.Selection.of(["x", "/a/b"], ["*.tmp"]))
    assert not sel.covers(markers.WHOLE) and not sel.covers(markers.Selection.of(["x"], []))
    assert sel.merge(markers.Selection.of(["y"], [])) == markers.WHOLE and sel.merge(sel) == sel


def test_a_damaged_blob_costs_only_its_file(mode, backed_up, tmp_path):
    repo, snap, src = backed_up
    victim = src / "many" / "d2" / "f1"
    node = find(lambda t: repo.load_blob(BlobType.TREE, t), snap.tree, os.fsencode(victim))
    assert node is not None and len(node.content) == 1
    loc = repo.index.lookup(node.content[0])
    pack = Path(repo.backend.root) / "data" / loc.pack.name[:2] / loc.pack.name
    data = bytearray(pack.read_bytes())
    data[loc.entry.offset + loc.entry.length // 2] ^= 0x40
    pack.write_bytes(bytes(data))
    target = tmp_path / "out"
    result = Restorer(repo, connections=2).restore(snap, os.fsencode(target))
    assert len(result.errors) == 1, result.errors
    assert result.errors[0].startswith(f"{victim}: not restored: ") and "failed authentication" in result.errors[0]
    assert not (out_of(target, src) / "many" / "d2" / "f1").exists()
    assert (target / MARKER.decode()).exists()  # an incomplete restore keeps its marker
    (out_of(target, src) / "many" / "d2" / "f1").write_bytes(victim.read_bytes())  # what it would have been
    os.utime(out_of(target, src) / "many" / "d2" / "f1", ns=(victim.stat().st_atime_ns, victim.stat().st_mtime_ns))
    os.utime(out_of(target, src) / "many" / "d2", ns=(1_000_000_000_123, 2_000_000_000_456))
    assert compare_trees(src, out_of(target, src)) == []


def _damage(repo, snap, path: Path, which: int = 0) -> None:
    """Flip a byte in the ``which``-th data blob of the file at ``path`` in the snapshot."""
    node = find(lambda t: repo.load_blob(BlobType.TREE, t), snap.tree, os.fsencode(path))
    assert node is not None
    loc = repo.index.lookup([c for c in node.content if isinstance(c, bytes)][which])
    pack = Path(repo.backend.root) / "data" / loc.pack.name[:2] / loc.pack.name
    data = bytearray(pack.read_bytes())
    data[loc.entry.offset + loc.entry.length // 2] ^= 0x40
    pack.write_bytes(bytes(data))


def test_damaged_data_is_not_counted_and_its_hardlinks_are_reported(mode, backed_up, tmp_path):
    """The summary counts the files (and bytes) that were restored, not those that failed; a hardlink to a file
    that failed is reported too."""
    repo, snap, src = backed_up
    clean = Restorer(repo, connections=2).restore(snap, os.fsencode(tmp_path / "clean"))
    assert clean.errors == []
    big, f1 = src / "many" / "d3" / "big.bin", src / "many" / "d2" / "f1"
    lost = big.stat().st_size + f1.stat().st_size  # (neither has holes)
    _damage(repo, snap, big, 2)
    _damage(repo, snap, f1)
    target = tmp_path / "out"
    result = Restorer(repo, connections=2).restore(snap, os.fsencode(target))
    assert sorted(e.split(": not restored: ")[0] for e in result.errors) == sorted(
        [str(big), str(f1), str(src / "many" / "d4" / "big-link")]
    ), result.errors
    assert f"a hardlink to {big}, which was not restored" in " ".join(result.errors)
    out = out_of(target, src) / "many"
    assert not (out / "d3" / "big.bin").exists() and not (out / "d4" / "big-link").exists()
    on_disk = sum(1 for p in out_of(target, src).rglob("*") if p.is_file() and not p.is_symlink())
    assert result.files == on_disk == clean.files - 3
    assert result.bytes_written == clean.bytes_written - lost


def test_include_and_exclude(mode, backed_up, tmp_path):
    repo, snap, src = backed_up
    target = tmp_path / "out"
    keep = src / "many" / "d2"
    result = Restorer(repo, connections=2).restore(
        snap, os.fsencode(target), includes=[str(keep), "link-to-d0-f3"], excludes=["*.skip", str(keep / "f0")]
    )
    assert result.errors == [] and result.warnings == []
    out = out_of(target, src)
    got = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    want = ["many", "many/d2", "many/d5", "many/d5/link-to-d0-f3"] + [
        f"many/d2/{n}"
        for n in ("empty", "f1", "f2", "f3", "f4", "nested", "nested/deeper", "nested/link-to-f4", "shared")
    ]
    assert got == sorted(want)
    assert (out / "many" / "d5" / "link-to-d0-f3").read_bytes() == (src / "many" / "d0" / "f3").read_bytes()
    assert os.stat(out / "many" / "d2").st_mtime_ns == 2_000_000_000_456  # directory times set after their contents
    assert os.stat(out / "many" / "d2" / "nested" / "deeper").st_mtime_ns == 2_000_000_000_456


def test_shared_content_is_fetched_once_while_it_recurs(backed_up, tmp_path, monkeypatch):
    """In threads (where loads can be counted): the shared blob comes from the cache after its first window."""
    repo, snap, src = backed_up
    monkeypatch.setattr(restorer_module, "PROCESSES", 1)
    monkeypatch.setattr(restorer_module, "WINDOW_FILES", 1)
    shared_id = repo.blob_id(SHARED)
    loc = repo.index.lookup(shared_id)
    loads: list[tuple[int, int]] = []
    real_load = repo.backend.load

    def counting_load(type, name, offset=0, length=None):
        end = offset + (length or 0)
        if name == loc.pack.name and offset <= loc.entry.offset and loc.entry.offset + loc.entry.length <= end:
            loads.append((offset, length))
        return real_load(type, name, offset, length)

    monkeypatch.setattr(repo.backend, "load", counting_load)
    result = Restorer(repo, connections=1).restore(snap, os.fsencode(tmp_path / "out"))
    assert result.errors == []
    assert len(loads) == 1, loads
    for d in range(6):
        assert (out_of(tmp_path / "out", src) / "many" / f"d{d}" / "shared").read_bytes() == SHARED


def test_names_that_would_leave_the_target_are_refused():
    for bad in (b"..", b".", b"", b"a/b", b"a\0b"):
        raw = msgpack.packb({"v": TREE_VERSION, "nodes": [{"n": bad, "t": FILE}]})
        with pytest.raises(IntegrityError):
            decode_maps(raw)
    raw = msgpack.packb({"v": TREE_VERSION, "nodes": [{"n": b"fine", "t": FILE}]})
    assert decode_maps(raw)[0]["n"] == b"fine"


def test_directories_waiting_for_metadata_stay_bounded(backed_up, tmp_path, monkeypatch):
    """Directories whose metadata waits (each holding a descriptor) and windows in flight stay bounded."""
    repo, snap, src = backed_up
    seen: list[int] = []
    real = restorer_module._Run._complete_oldest

    def spy(self):
        real(self)
        seen.append(len(self.pending_dirs) + len(self.inflight))

    monkeypatch.setattr(restorer_module, "PROCESSES", 1)
    monkeypatch.setattr(restorer_module, "WINDOW_FILES", 2)
    monkeypatch.setattr(restorer_module, "PENDING_DIRS", 4)
    monkeypatch.setattr(restorer_module._Run, "_complete_oldest", spy)
    Restorer(repo, connections=2).restore(snap, os.fsencode(tmp_path / "out"))
    assert seen and max(seen) <= 4 + 2 + 1
    shutil.rmtree(tmp_path / "out")


def test_no_match_is_a_usage_error_and_leaves_nothing(backed_up, tmp_path):
    repo, snap, _ = backed_up
    target = tmp_path / "nothing"
    with pytest.raises(UsageError):
        Restorer(repo).restore(snap, os.fsencode(target), includes=["no-such-name-anywhere"])
    assert not target.exists()


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_killed_restore_takes_its_workers_along_and_resumes(tmp_path):
    """SIGKILL to a restore that writes with worker processes: the workers die with it; a rerun finishes."""
    if cpus() < 2:
        pytest.skip("worker processes are used only with several CPUs")
    src = tmp_path / "src"
    for d in range(40):
        sub = src / f"d{d:02}"
        sub.mkdir(parents=True)
        for f in range(200):
            (sub / f"f{f:03}").write_bytes(os.urandom(200 + f * 37 % 3000))
    cli = Cli(tmp_path, local_storage(tmp_path / "repo"))
    cli("init")
    cli("backup", str(src))
    target = tmp_path / "target"
    running = cli.start("--json", "restore", "latest", "--target", str(target))

    def files_so_far() -> int:
        return sum(len(files) for _, _, files in os.walk(target)) if target.exists() else 0

    wait_for(lambda: running.proc.poll() is not None or files_so_far() >= 300, 120, "the restore to make progress")
    workers = _children(running.proc.pid)
    running.kill()
    assert running.wait().code == -9, "the restore finished before it could be killed"
    assert len(workers) >= 2, workers  # a local repository on several CPUs is written by worker processes
    wait_for(lambda: all(_gone(p) for p in workers), 30, "the workers to die with the restore")
    final = cli("--json", "restore", "latest", "--target", str(target)).summary()
    assert final["errors"] == [] and final["files_skipped"] > 0
    assert not (target / MARKER.decode()).exists()
    assert compare_trees(src, out_of(target, src)) == []


@pytest.mark.parametrize("umask", [0o077, 0o000, 0o027])
def test_modes_do_not_depend_on_the_umask(backed_up, tmp_path, umask):
    """Calls are skipped only where the created mode is known to be right: any umask restores exact modes."""
    repo, snap, src = backed_up
    old = os.umask(umask)
    try:
        result = Restorer(repo, connections=2).restore(snap, os.fsencode(tmp_path / "out"))
    finally:
        os.umask(old)
    assert result.errors == [] and result.warnings == []
    assert compare_trees(src, out_of(tmp_path / "out", src)) == []


@pytest.fixture
def far_apart_copy(tmp_path, monkeypatch):
    """A file and its copy with many windows between them: more than the blob cache can bridge."""
    monkeypatch.setenv("TUCKBOX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(fetch_module, "COPY_MIN", 1)
    monkeypatch.setattr(restorer_module, "COPY_MIN", 1)
    monkeypatch.setattr(restorer_module, "READ_BACK_LOCAL", True)  # (remote storage: test_restore_remote_workers)
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    (src / "c").mkdir()
    original = os.urandom(200_000)
    (src / "a" / "original.bin").write_bytes(original)
    for k in range(30):
        (src / "b" / f"f{k:02d}").write_bytes(os.urandom(20_000))
    (src / "c" / "copy.bin").write_bytes(original)
    config = Config.new("t", ChunkerParams(4096, 8192, 65536), pack_size=1 << 20)
    repo = Repository.init(LocalBackend(str(tmp_path / "repo")), b"pw", created="t", host="h", user="u", config=config)
    result = run_backup(repo, BackupRequest([str(src)]))
    assert result.warnings == []
    return repo, result.snapshot, src, len(original)


def test_a_copy_far_apart_is_read_back_from_the_restored_original(mode, far_apart_copy, tmp_path):
    """The copy's blobs are not fetched again: they are read from the original, restored windows before."""
    repo, snap, src, size = far_apart_copy
    target = tmp_path / "out"
    result = Restorer(repo, connections=2).restore(snap, os.fsencode(target))
    assert result.errors == [] and result.warnings == []
    assert compare_trees(src, out_of(target, src)) == []
    # every blob of the copy, but for a small one (the blob cache keeps blobs up to an eighth of its 32 or
    # 64 KiB) that the copy's writer may still have had in its cache
    assert size - 8192 <= result.bytes_read_back <= size


def test_a_local_repository_is_not_read_back(far_apart_copy, tmp_path, monkeypatch):
    """From a local disk the blob is fetched like any other (as cheap as reading it back, and read ahead)."""
    monkeypatch.setattr(restorer_module, "READ_BACK_LOCAL", False)
    repo, snap, src, size = far_apart_copy
    target = tmp_path / "out"
    result = Restorer(repo, connections=2).restore(snap, os.fsencode(target))
    assert result.errors == [] and compare_trees(src, out_of(target, src)) == []
    assert result.bytes_read_back == 0


def test_a_wrong_place_to_read_back_is_never_written(mode, far_apart_copy, tmp_path, monkeypatch):
    """Whatever is read back is checked against the blob's id: from a wrong place (here every offset one
    byte off), nothing is read back, the blobs are fetched, and every file is exact."""
    real = fetch_module.Sources.note

    def one_off(self, w, path, content):
        before = dict(self._where)
        real(self, w, path, content)
        for blob_id, (p, offset, n, wid) in list(self._where.items()):
            if blob_id not in before:
                self._where[blob_id] = (p, offset + 1, n, wid)

    monkeypatch.setattr(fetch_module.Sources, "note", one_off)
    repo, snap, src, size = far_apart_copy
    target = tmp_path / "out"
    result = Restorer(repo, connections=2).restore(snap, os.fsencode(target))
    assert result.errors == [] and result.warnings == []
    assert compare_trees(src, out_of(target, src)) == []
    assert result.bytes_read_back == 0


def test_packs_are_read_in_the_order_the_backup_wrote_them(tmp_path, monkeypatch):
    """A directory's files come before its subdirectories in a backup (and so in its packs), while trees list
    entries by name: the restore walks in the backup's order, so consecutive windows ask for consecutive
    ranges of a pack instead of jumping back and forth (each jump one more request to remote storage)."""
    monkeypatch.setenv("TUCKBOX_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "src"
    (src / "b").mkdir(parents=True)
    names = ["a", "b/x", "b/y", "c", "d"]  # name order: a, b/..., c, d; backup order: a, c, d, b/...
    content = {n: os.urandom(3000 + i) for i, n in enumerate(names)}  # one chunk each
    for n, data in content.items():
        (src / n).write_bytes(data)
    config = Config.new("t", ChunkerParams(4096, 8192, 65536), pack_size=1 << 20)
    repo = Repository.init(LocalBackend(str(tmp_path / "repo")), b"pw", created="t", host="h", user="u", config=config)
    snap = run_backup(repo, BackupRequest([str(src)])).snapshot
    monkeypatch.setattr(restorer_module, "PROCESSES", 1)
    monkeypatch.setattr(restorer_module, "WINDOW_FILES", 1)  # a window (and a request) per file
    offsets = {repo.index.lookup(repo.blob_id(data)).entry.offset: n for n, data in content.items()}
    assert [offsets[o] for o in sorted(offsets)] == ["a", "c", "d", "b/x", "b/y"]  # (the backup's order)
    asked: list[int] = []
    real_load = repo.backend.load

    def load(type, name, offset=0, length=None):
        if offset in offsets:
            asked.append(offset)
        return real_load(type, name, offset, length)

    monkeypatch.setattr(repo.backend, "load", load)
    result = Restorer(repo, connections=1).restore(snap, os.fsencode(tmp_path / "out"))
    assert result.errors == []
    assert [offsets[o] for o in asked] == ["a", "c", "d", "b/x", "b/y"]
    for n, data in content.items():
        assert (out_of(tmp_path / "out", src) / n).read_bytes() == data


def test_a_directory_swapped_for_a_symlink_mid_restore_is_never_written_through(mode, backed_up, tmp_path,
                                                                               monkeypatch):
    """Someone who can write in the target (an empty world-writable directory, or a directory of theirs left by
    an interrupted restore) replaces a directory the restore made, before the files below it are written, with
    a symlink out of the target: nothing is written there (worker processes opened a window's directories by
    their paths and followed a symlink on the way, writing, say, root's restore into /etc)."""
    repo, snap, src = backed_up
    target = tmp_path / "out"
    outside = tmp_path / "outside"
    (outside / "d1").mkdir(parents=True)  # what the path of the restore's directory now leads to
    (outside / "d0").mkdir()
    (outside / "d0" / "f3").write_bytes(b"planted")  # where a hardlink's data was restored, by its path
    many = out_of(target, src) / "many"
    real_submit = restorer_module._Run._submit
    swapped: list[bool] = []

    def submit(self):  # type: ignore[no-untyped-def]
        if not swapped and any(d.path.endswith(b"/many/d1") for d, _ in self.window.files):
            os.rename(many, many.with_name("many-moved"))
            many.symlink_to(outside)
            swapped.append(True)
        real_submit(self)

    monkeypatch.setattr(restorer_module._Run, "_submit", submit)
    result = Restorer(repo, connections=2).restore(snap, os.fsencode(target))
    assert swapped
    assert list((outside / "d1").iterdir()) == []
    assert os.stat(outside / "d0" / "f3").st_nlink == 1  # never linked into the restore
    # what could not be written where the restore made it is named (threads write files through the directories
    # the restore holds open, into the moved one; a hardlink to a file of a directory already complete is made
    # by its path, and checked)
    assert all("/many/d" in e for e in result.errors), result.errors
    assert any("/many/d" in e and "directory was replaced during the restore" in e for e in result.errors)
    moved = many.with_name("many-moved")
    assert not (moved / "d5" / "link-to-d0-f3").exists()  # the hardlink to d0/f3, whose path leads elsewhere
