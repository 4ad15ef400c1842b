"""Property: incremental backups stay exact.

Random sequences of real changes are applied to a tree between backups (edits that keep size and mtime,
same-size rewrites within the same second, renames over other files, swaps, files replaced by directories
or symlinks and back, hard links added and removed, metadata-only changes, truncate-and-regrow, a file
deleted and recreated (same inode number, same size and times), whole directories moved, times set into
the past, backups less than a second apart, interrupted backups resumed). After every complete backup
EVERY snapshot so far is restored and compared with a copy of the tree as it was when that snapshot was
taken: a files cache that wrongly calls a file unchanged would show here as a lost edit.

``INCREMENTAL_EXAMPLES`` in the environment raises the number of examples (to hunt; the default keeps CI
time modest).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tuckbox.archiver.backup import BackupRequest, run_backup
from tuckbox.backends.local import LocalBackend
from tuckbox.chunker import ChunkerParams
from tuckbox.repository.config import Config
from tuckbox.repository.repo import Repository
from tuckbox.restorer.restorer import Restorer
from tuckbox.testing.trees import compare_trees

FILES = ["a", "b", "c", "d/x", "d/y", "d/e/w", "g/z"]
DIRS = ["d", "g", "d/e", "h"]
SIZES = [0, 1, 700, 5000, 20000, 70000, 150000]  # with 4-8-64 KiB chunks: one chunk, several, many
OPS = [
    "write", "edit_keep_mtime", "rewrite_same_size", "rename_over", "swap", "to_dir", "to_symlink", "to_file",
    "link", "unlink", "chmod", "chown", "xattr", "truncate_regrow", "recreate", "move_dir", "touch_past",
    "settle", "backup", "interrupted_backup",
]
PASSWORD = b"pw"


def _data(seed: int, size: int) -> bytes:
    block = seed.to_bytes(4, "little") * 16 + bytes(range(256))
    out = bytearray()
    n = 0
    while len(out) < size:
        out += block + n.to_bytes(4, "little")
        n += 1
    return bytes(out[:size])


@dataclass
class World:
    work: Path
    src: Path
    repo: Repository
    snapshots: list[tuple[str, Path]] = field(default_factory=list)  # (snapshot id, copy of the tree then)
    backups: int = 0
    log: list[str] = field(default_factory=list)

    def p(self, rel: str) -> str:
        return str(self.src / rel)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _parents(w: World, rel: str) -> None:
    """Make the directories on the way to ``rel`` (whatever stands in their place goes)."""
    parts = rel.split("/")[:-1]
    at = w.src
    for part in parts:
        at = at / part
        if os.path.lexists(at) and not (at.is_dir() and not at.is_symlink()):
            os.unlink(at)
        if not os.path.lexists(at):
            os.mkdir(at)


def _is_file(path: str) -> bool:
    return os.path.isfile(path) and not os.path.islink(path)


def _keep_times(path: str, st: os.stat_result) -> None:
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def apply(w: World, op: str, i: int, j: int, seed: int) -> None:
    f, g = FILES[i % len(FILES)], FILES[j % len(FILES)]
    pf, pg = w.p(f), w.p(g)
    size = SIZES[seed % len(SIZES)]
    if op == "write":
        _parents(w, f)
        _remove(pf)
        Path(pf).write_bytes(_data(seed, size))
    elif op == "edit_keep_mtime" and _is_file(pf) and os.path.getsize(pf) > 0:
        st = os.lstat(pf)
        with open(pf, "r+b") as fh:
            off = seed % st.st_size
            old = os.pread(fh.fileno(), 1, off)
            fh.seek(off)
            fh.write(bytes([old[0] ^ 0x5A]))
        _keep_times(pf, st)
    elif op == "rewrite_same_size" and _is_file(pf):
        n = os.path.getsize(pf)
        with open(pf, "r+b") as fh:
            fh.write(_data(seed + 1, n))
    elif op == "rename_over" and os.path.lexists(pf) and f != g:
        _parents(w, g)
        if os.path.isdir(pg) and not os.path.islink(pg):
            shutil.rmtree(pg)
        if os.path.lexists(pf) and not (pg + "/").startswith(pf + "/"):
            os.rename(pf, pg)
    elif op == "swap" and os.path.lexists(pf) and os.path.lexists(pg) and f != g:
        if (pg + "/").startswith(pf + "/") or (pf + "/").startswith(pg + "/"):
            return
        tmp = w.p("swap.tmp")
        os.rename(pf, tmp)
        os.rename(pg, pf)
        os.rename(tmp, pg)
    elif op == "to_dir":
        _parents(w, f)
        st = os.lstat(pf) if os.path.lexists(pf) else None
        _remove(pf)
        os.mkdir(pf)
        Path(pf, "inner").write_bytes(_data(seed, size))
        if st is not None:
            os.utime(pf, ns=(st.st_atime_ns, st.st_mtime_ns))
    elif op == "to_symlink":
        _parents(w, f)
        _remove(pf)
        os.symlink(["../a", "b", "/nonexistent", "d/x"][seed % 4], pf)
    elif op == "to_file" and os.path.lexists(pf) and not _is_file(pf):
        st = os.lstat(pf)
        _remove(pf)
        Path(pf).write_bytes(_data(seed, size))
        _keep_times(pf, st)
    elif op == "link" and _is_file(pf) and f != g:
        _parents(w, g)
        if _is_file(pf):
            _remove(pg)
            os.link(pf, pg)
    elif op == "unlink" and os.path.lexists(pf) and not os.path.isdir(pf):
        os.unlink(pf)
    elif op == "chmod" and os.path.lexists(pf) and not os.path.islink(pf):
        os.chmod(pf, [0o600, 0o644, 0o755, 0o400, 0o4755][seed % 5])
    elif op == "chown" and os.path.lexists(pf) and os.geteuid() == 0:
        os.chown(pf, 1000 + seed % 3, 1000 + seed % 2, follow_symlinks=False)
    elif op == "xattr" and os.path.lexists(pf) and not os.path.islink(pf):
        try:
            if seed % 3 == 0:
                os.removexattr(pf, "user.tag")
            else:
                os.setxattr(pf, "user.tag", _data(seed, 1 + seed % 40))
        except OSError as e:
            if e.errno not in (errno.ENODATA, errno.ENOTSUP):
                raise
    elif op == "truncate_regrow" and _is_file(pf) and os.path.getsize(pf) > 1:
        st = os.lstat(pf)
        with open(pf, "r+b") as fh:
            fh.truncate(st.st_size // 2)
            fh.seek(st.st_size // 2)
            fh.write(_data(seed + 7, st.st_size - st.st_size // 2) if seed % 2 else bytes(st.st_size - st.st_size // 2))
        _keep_times(pf, st)
    elif op == "recreate" and _is_file(pf):
        st = os.lstat(pf)
        os.unlink(pf)
        with open(pf, "wb") as fh:
            fh.write(_data(seed + 3, st.st_size))
        os.chmod(pf, st.st_mode & 0o7777)
        _keep_times(pf, st)
    elif op == "move_dir":
        d, e = DIRS[i % len(DIRS)], DIRS[j % len(DIRS)]
        pd, pe = w.p(d), w.p(e)
        if d == e or not os.path.isdir(pd) or os.path.islink(pd) or (pe + "/").startswith(pd + "/"):
            return
        _parents(w, e)
        if os.path.isdir(pe) and not os.path.islink(pe) and (pd + "/").startswith(pe + "/"):
            return
        _remove(pe)
        os.rename(pd, pe)
    elif op == "touch_past" and os.path.lexists(pf):
        past = 1_000_000_000_000_000_000 + seed * 1_000_000_007
        os.utime(pf, ns=(past, past), follow_symlinks=False)
    elif op == "settle":
        time.sleep(1.05)  # files the next backup reads are then old enough for the files cache to trust
    elif op == "backup":
        backup(w)
    elif op == "interrupted_backup":
        interrupted_backup(w, 1 + seed % 12)


def _restore_and_compare(w: World, snap_id: str, expected: Path, *, subset: bool = False) -> None:
    out = w.work / f"restore-{time.monotonic_ns()}"
    snap = w.repo.find_snapshot(snap_id)
    restored = Restorer(w.repo).restore(snap, os.fsencode(out))
    try:
        assert restored.errors == [], restored.errors
        root = Path(str(out) + str(w.src))
        if subset:
            _compare_subset(root, expected)
        else:
            problems = compare_trees(expected, root, check_atime=False)
            shown = "\n".join(w.log)
            assert problems == [], f"snapshot {snap_id[:8]} differs from the tree it was taken of: {problems}\n{shown}"
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _compare_subset(root: Path, expected: Path) -> None:
    """A checkpoint holds part of the tree: every file it holds equals the file then."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            got = Path(dirpath, name)
            want = expected / got.relative_to(root)
            if got.is_symlink():
                assert os.readlink(got) == os.readlink(want), got
            else:
                assert got.read_bytes() == want.read_bytes(), f"checkpoint: {got.relative_to(root)} differs"


def _copy(w: World) -> Path:
    copy = w.work / f"copy-{w.backups}"
    subprocess.run(["cp", "-a", str(w.src), str(copy)], check=True)
    assert compare_trees(w.src, copy, check_atime=False) == []
    return copy


def backup(w: World) -> None:
    result = run_backup(w.repo, BackupRequest([str(w.src)]))
    w.backups += 1
    w.log.append(f"  backup {w.backups}: {result.snapshot.id[:8]} {result.snapshot.summary}")
    assert result.warnings == [] and not result.interrupted
    w.snapshots.append((result.snapshot.id, _copy(w)))
    for snap_id, copy in w.snapshots:  # every snapshot so far: none changed, the new one is exact
        _restore_and_compare(w, snap_id, copy)


def interrupted_backup(w: World, after: int) -> None:
    calls = {"n": 0}
    main = threading.main_thread()

    def should_stop() -> bool:
        if threading.current_thread() is main:
            calls["n"] += 1
        return calls["n"] > after

    result = run_backup(w.repo, BackupRequest([str(w.src)]), should_stop=should_stop)
    w.backups += 1
    w.log.append(f"  interrupted backup {w.backups} after {after}: {result.interrupted}")
    if result.interrupted:
        if result.snapshot is not None:  # (none when it stopped before any file was stored)
            _restore_and_compare(w, result.snapshot.id, _copy(w), subset=True)
    else:
        assert result.snapshot is not None
        w.snapshots.append((result.snapshot.id, _copy(w)))


def _initial(w: World) -> None:
    for k, rel in enumerate(FILES):
        _parents(w, rel)
        Path(w.p(rel)).write_bytes(_data(k, SIZES[k % len(SIZES)]))


def run_ops(ops: list[tuple[str, int, int, int]]) -> None:
    work = Path(tempfile.mkdtemp(prefix="tuckbox-incr-"))
    try:
        os.environ["TUCKBOX_CACHE_DIR"] = str(work / "cache")
        src = work / "src"
        src.mkdir()
        config = Config.new("t", ChunkerParams(4096, 8192, 65536), pack_size=1 << 20)
        backend = LocalBackend(str(work / "repo"))
        repo = Repository.init(backend, PASSWORD, created="t", host="h", user="u", config=config)
        w = World(work, src, repo)
        _initial(w)
        time.sleep(1.05)
        backup(w)
        for op, i, j, seed in ops:
            w.log.append(f"{op} {i} {j} {seed}")
            apply(w, op, i, j, seed)
        backup(w)
    finally:
        shutil.rmtree(work, ignore_errors=True)


operations = st.lists(
    st.tuples(st.sampled_from(OPS), st.integers(0, 6), st.integers(0, 6), st.integers(0, 1000)), max_size=25
)


@settings(
    max_examples=int(os.environ.get("INCREMENTAL_EXAMPLES", "5")), deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(operations)
# the changes that matter most, each made to files the files cache trusts (old enough: "settle")
@example([
    ("settle", 0, 0, 0), ("backup", 0, 0, 0), ("edit_keep_mtime", 0, 0, 5), ("rewrite_same_size", 1, 0, 3),
    ("recreate", 2, 0, 9), ("truncate_regrow", 4, 0, 1), ("truncate_regrow", 5, 0, 2), ("touch_past", 3, 0, 3),
    ("backup", 0, 0, 0), ("edit_keep_mtime", 0, 0, 6), ("backup", 0, 0, 0),
])
@example([
    ("settle", 0, 0, 0), ("backup", 0, 0, 0), ("swap", 0, 1, 0), ("rename_over", 3, 2, 0), ("move_dir", 0, 1, 0),
    ("link", 1, 6, 0), ("chmod", 2, 0, 1), ("chown", 1, 0, 1), ("xattr", 0, 0, 1), ("settle", 0, 0, 0),
    ("backup", 0, 0, 0), ("unlink", 6, 0, 0), ("swap", 0, 1, 0), ("link", 0, 2, 0),
])
@example([
    ("settle", 0, 0, 0), ("to_dir", 0, 0, 4), ("to_symlink", 3, 0, 1), ("backup", 0, 0, 0), ("to_file", 0, 0, 2),
    ("to_file", 3, 0, 5), ("backup", 0, 0, 0), ("to_symlink", 0, 0, 0), ("to_dir", 3, 0, 0),
])
@example([
    ("settle", 0, 0, 0), ("interrupted_backup", 0, 0, 2), ("write", 0, 0, 4), ("interrupted_backup", 0, 0, 5),
    ("edit_keep_mtime", 5, 0, 7), ("interrupted_backup", 0, 0, 11), ("settle", 0, 0, 0), ("backup", 0, 0, 0),
])
def test_incremental_backups_stay_exact(ops):
    run_ops(ops)
