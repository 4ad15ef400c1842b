"""The streamed files cache: walk-order merge join, raw copies, no rewrite when nothing changed, partial runs."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace

from tuckbox.archiver.files_cache import FilesCache, _Cursor, _order

OLD = 1_500_000_000_000_000_000  # ns: long ago, so never "racy"


def make(root: Path, rels: list[str]) -> list[bytes]:
    paths = []
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rel.encode())
        os.utime(p, ns=(OLD, OLD))
        paths.append(os.fsencode(p))
    return paths


def node_of(path: bytes, st: os.stat_result) -> dict:
    """A file's node, as far as the files cache compares it with the file's stat."""
    return {"n": os.path.basename(path), "t": "file", "m": st.st_mode & 0o7777, "u": st.st_uid, "g": st.st_gid,
            "s": st.st_size}


def walk_order(paths: list[bytes]) -> list[bytes]:
    return sorted(paths, key=_order)


def keys(paths: list[bytes]) -> list[bytes]:
    return [_order(p) for p in walk_order(paths)]


def run(state: Path, root: Path, paths: list[bytes], changed: set[bytes] = frozenset(), complete: bool = True):
    cache = FilesCache(state, [os.fsencode(root)])
    hits, misses = [], []
    for p in walk_order(paths):
        st = os.lstat(p)
        node = cache.lookup(p, st)
        if node is not None and p not in changed:
            assert node["n"] == os.path.basename(p)
            cache.keep(p)
            hits.append(p)
        else:
            misses.append(p)
            cache.remember(p, st, node_of(p, st), time.time_ns() + 10**10)
    cache.finish(complete)
    return hits, misses


def stored(state: Path) -> list[bytes]:
    files = [f for f in state.iterdir() if not f.name.endswith(".partial") and ".new-" not in f.name]
    assert len(files) == 1
    cur, out = _Cursor(files[0]), []
    while cur.current is not None:
        out.append(cur.current[0])
        cur._advance()
    return out


def test_walk_order_key_puts_files_before_subdirectories():
    assert _order(b"/d/z.txt") < _order(b"/d/a/x")
    assert _order(b"/d/a/x") < _order(b"/d/b/x")
    assert _order(b"/d/a/x") < _order(b"/d/ab/x")
    assert _order(b"/d/a/z") < _order(b"/d/a/sub/x")


def test_unchanged_run_hits_everything_and_rewrites_nothing(tmp_path):
    root, state = tmp_path / "src", tmp_path / "state"
    paths = make(root, ["z.txt", "a/x", "a/sub/y", "b/q", "0.txt"])
    hits, misses = run(state, root, paths)
    assert hits == [] and len(misses) == 5
    assert stored(state) == keys(paths)
    cache_file = next(state.iterdir())
    before = cache_file.stat()
    hits, misses = run(state, root, paths)
    assert len(hits) == 5 and misses == []
    after = cache_file.stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)  # untouched


def test_changes_deletions_and_additions(tmp_path):
    root, state = tmp_path / "src", tmp_path / "state"
    paths = make(root, [f"d{i}/f{j}" for i in range(4) for j in range(5)])
    run(state, root, paths)
    gone = paths[7]
    os.unlink(gone)
    kept = [p for p in paths if p != gone]
    added = make(root, ["d2/new", "d9/extra"])
    changed = {paths[12]}
    hits, misses = run(state, root, kept + added, changed=changed)
    assert set(misses) == set(added) | changed
    assert stored(state) == keys(kept + added)
    hits, misses = run(state, root, kept + added)
    assert misses == []


def test_interrupted_run_leaves_a_partial_stream_used_next_time(tmp_path):
    root, state = tmp_path / "src", tmp_path / "state"
    paths = make(root, [f"d{i}/f{j}" for i in range(3) for j in range(4)])
    first_half = walk_order(paths)[:5]
    hits, misses = run(state, root, first_half, complete=False)
    assert len(misses) == 5
    assert any(f.name.endswith(".partial") for f in state.iterdir())
    hits, misses = run(state, root, paths)
    assert set(hits) == set(first_half) and len(misses) == len(paths) - 5
    assert not any(f.name.endswith(".partial") for f in state.iterdir())
    assert stored(state) == keys(paths)


def test_killed_run_stream_is_adopted(tmp_path):
    root, state = tmp_path / "src", tmp_path / "state"
    paths = make(root, ["a", "b", "c", "d"])
    cache = FilesCache(state, [os.fsencode(root)])
    for p in walk_order(paths)[:2]:
        st = os.lstat(p)
        assert cache.lookup(p, st) is None
        cache.remember(p, st, node_of(p, st), time.time_ns() + 10**10)
    cache.flush()
    # simulate kill -9: the ".new-<pid>" file stays; give it a dead pid
    new = next(f for f in state.iterdir() if ".new-" in f.name)
    new.rename(new.with_name(new.name.rsplit("-", 1)[0] + "-999999999"))
    hits, misses = run(state, root, paths)
    assert set(hits) == set(walk_order(paths)[:2])


def test_killed_run_stream_is_adopted_when_its_pid_is_another_program_s_after_a_reboot(tmp_path):
    """Power cut, reboot: the killed run's pid (in its stream's name) is soon a kernel thread's or a daemon's.
    The stream was taken for a running backup's, never adopted (every file it had finished read again) and
    left in the cache for as long as that program lived. A program started after the stream's last write
    is not its writer; a tuckbox that is one (started before) keeps it."""
    import subprocess
    import sys

    root, state = tmp_path / "src", tmp_path / "state"
    paths = make(root, ["a", "b", "c", "d"])
    cache = FilesCache(state, [os.fsencode(root)])
    for p in walk_order(paths)[:2]:
        st = os.lstat(p)
        assert cache.lookup(p, st) is None
        cache.remember(p, st, node_of(p, st), time.time_ns() + 10**10)
    cache.flush()
    new = next(f for f in state.iterdir() if ".new-" in f.name)
    written = new.stat().st_mtime
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "tuckbox", "backup"])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        os.utime(new, (written - 5, written - 5))  # (the other program started after its last write)
        mine = new.rename(new.with_name(new.name.rsplit("-", 1)[0] + f"-{writer.pid}"))
        hits, _ = run(state, root, paths, complete=False)
        assert hits == [] and mine.exists()  # a running tuckbox's stream is left alone
        theirs = mine.rename(mine.with_name(mine.name.rsplit("-", 1)[0] + f"-{other.pid}"))
        os.utime(theirs, (written - 5, written - 5))
        (state / (theirs.name.split(".new-")[0] + ".partial")).unlink(missing_ok=True)
        hits, misses = run(state, root, paths)
    finally:
        for p in (writer, other):
            p.kill()
            p.wait()
    assert set(hits) == set(walk_order(paths)[:2])
    assert not any(".new-" in f.name for f in state.iterdir())


def test_records_hold_the_encoded_node_its_chunks_and_atime(tmp_path):
    import msgpack

    root, state = tmp_path / "src", tmp_path / "state"
    (p,) = make(root, ["a"])
    st = os.lstat(p)
    node = {**node_of(p, st), "at": st.st_atime_ns, "c": [b"\1" * 32, 4096, b"\2" * 32]}
    cache = FilesCache(state, [os.fsencode(root)])
    assert cache.lookup_raw(p, st) is None and not cache.last_known
    cache.remember(p, st, node, time.time_ns() + 10**10)
    cache.finish(True)
    cache = FilesCache(state, [os.fsencode(root)])
    raw = cache.lookup_raw(p, st)
    assert raw == msgpack.packb(node)  # exactly the bytes a tree encodes for this entry
    assert cache.last_chunks == [b"\1" * 32, b"\2" * 32] and cache.last_atime == st.st_atime_ns
    cache.keep(p)
    cache.finish(True)
    # a file modified within RACY_NS of being read: known, never trusted
    racy = FilesCache(state, [os.fsencode(root)])
    assert racy.lookup(p, st) == node
    racy.remember(p, st, node, st.st_mtime_ns)
    racy.finish(True)
    again = FilesCache(state, [os.fsencode(root)])
    assert again.lookup_raw(p, st) is None and again.last_known


def test_a_version_4_cache_is_read_and_rewritten_as_version_6(tmp_path):
    import msgpack

    root, state = tmp_path / "src", tmp_path / "state"
    paths = walk_order(make(root, ["a", "d/b", "d/c"]))
    run(state, root, paths)  # makes the (version 5) file; rewrite it as an older tuckbox would have
    cache_file = next(state.iterdir())
    nodes = {}
    with open(cache_file, "wb") as f:
        f.write(msgpack.packb({"v": 4}))
        for p in paths:
            st = os.lstat(p)
            nodes[p] = {**node_of(p, st), "at": st.st_atime_ns, "c": [bytes(32)]}
            f.write(msgpack.packb([_order(p), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, nodes[p]]))
    cache = FilesCache(state, [os.fsencode(root)])
    for p in paths:
        assert cache.lookup_raw(p, os.lstat(p)) == msgpack.packb(nodes[p])
        assert cache.last_chunks == [bytes(32)]
        cache.keep(p)
    cache.finish(True)
    with open(cache_file, "rb") as f:
        unpacker = msgpack.Unpacker(f)
        assert next(unpacker) == {"v": 6}
        *records, trailer = unpacker
        assert [r[8] for r in records] == [msgpack.packb(nodes[p]) for p in paths]
        assert list(trailer) == ["end"]
    hits, misses = run(state, root, paths)
    assert len(hits) == 3 and misses == []


def test_the_cache_directories_it_makes_are_private(tmp_path: Path) -> None:
    """mkdir's parents came out 0755 (umask 022): the per-repository directory, whose name is the repository
    id and whose subdirectories hold plaintext metadata, was listable by every user."""
    from tuckbox.repository.cache import Cache

    old = os.umask(0o022)
    try:
        cache = Cache("0123abcd", tmp_path / "home" / ".cache" / "tuckbox")
    finally:
        os.umask(old)
    assert cache.enabled
    for d in (cache.dir, cache.dir.parent, cache.dir / "state", cache.dir / "index"):
        assert d.stat().st_mode & 0o777 == 0o700, (d, oct(d.stat().st_mode))


def _fat_stat(written_ns: int, size: int = 10) -> SimpleNamespace:
    """The stat of a file on FAT (a USB stick, an SD card): mtime in 2-second steps, ctime the same field."""
    t = written_ns // 2_000_000_000 * 2_000_000_000
    return SimpleNamespace(
        st_dev=7, st_ino=3, st_size=size, st_mtime_ns=t, st_ctime_ns=t, st_atime_ns=t, st_mode=0o100755, st_uid=0, st_gid=0
    )


def test_a_file_on_a_file_system_with_2_second_times_is_not_trusted_within_2_seconds(tmp_path):
    """FAT keeps mtime in 2-second steps (and ctime is that same field): a file written at 100.3 s shows
    100 s, a backup reading it at 101.4 s saw it 1.4 s "old", and a same-size write at 101.8 s still shows
    100 s. Trusted, that edit would be lost from every later snapshot."""
    base = 1_700_000_000_000_000_000
    st = _fat_stat(base + 300_000_000)
    cache = FilesCache(tmp_path, [b"/media/usb"])
    cache.remember(b"/media/usb/f", st, {"n": b"f", "t": "file", "m": 0o755, "s": 10}, base + 1_400_000_000)
    cache.finish(True)
    later = FilesCache(tmp_path, [b"/media/usb"])
    assert later.lookup_raw(b"/media/usb/f", _fat_stat(base + 1_800_000_000)) is None
    assert later.last_known  # (known: counted as changed, not new)
    later.finish(True)


def test_a_file_with_whole_second_times_is_trusted_once_old_enough(tmp_path):
    base = 1_700_000_000_000_000_000
    st = _fat_stat(base)
    cache = FilesCache(tmp_path, [b"/media/usb"])
    cache.remember(b"/media/usb/f", st, {"n": b"f", "t": "file", "m": 0o755, "s": 10}, base + 3_100_000_000)
    cache.finish(True)
    later = FilesCache(tmp_path, [b"/media/usb"])
    assert later.lookup_raw(b"/media/usb/f", st) is not None
    later.finish(True)


def test_a_mode_or_owner_change_that_leaves_ctime_is_not_taken_for_unchanged(tmp_path):
    """On FAT ("ctime updates are ignored": chmod a-w sets its read-only bit) and on sshfs and many FUSE file
    systems (ctime is mtime) chmod and chown leave ctime as it was: the stored node, with the old mode or
    owner, went into every later snapshot (a file made private restored as readable by all)."""
    import msgpack

    old = 1_600_000_000_123_456_789
    st = SimpleNamespace(
        st_dev=7, st_ino=3, st_size=10, st_mtime_ns=old, st_ctime_ns=old, st_atime_ns=old,
        st_mode=0o100644, st_uid=1000, st_gid=1000,
    )
    node = {"n": b"f", "t": "file", "m": 0o644, "u": 1000, "g": 1000, "s": 10}
    cache = FilesCache(tmp_path, [b"/mnt"])
    cache.remember(b"/mnt/f", st, node, time.time_ns())
    cache.finish(True)
    for change in ({"st_mode": 0o100600}, {"st_uid": 0}, {"st_gid": 0}):
        later = FilesCache(tmp_path, [b"/mnt"])
        assert later.lookup_raw(b"/mnt/f", SimpleNamespace(**{**vars(st), **change})) is None, change
        assert later.last_known
        later.finish(True)
    later = FilesCache(tmp_path, [b"/mnt"])
    assert later.lookup_raw(b"/mnt/f", st) == msgpack.packb(node)
    later.finish(True)


def test_a_version_5_cache_is_still_used(tmp_path):
    """The cache the previous tuckbox wrote (no mode, uid and gid of their own: taken from the node): the
    first run after an upgrade reads no unchanged file again, and a chmod is still seen."""
    import msgpack

    root, state = tmp_path / "src", tmp_path / "state"
    paths = walk_order(make(root, ["a", "d/b", "d/c"]))
    run(state, root, paths)
    cache_file = next(state.iterdir())
    with open(cache_file, "wb") as f:
        f.write(msgpack.packb({"v": 5}))
        for p in paths:
            st = os.lstat(p)
            node = {**node_of(p, st), "at": st.st_atime_ns}
            f.write(msgpack.packb([_order(p), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                                   st.st_atime_ns, [], msgpack.packb(node)]))
    cache = FilesCache(state, [os.fsencode(root)])
    st = os.lstat(paths[0])
    assert cache.lookup_raw(paths[0], st) is not None
    st1 = os.lstat(paths[1])
    chmodded = SimpleNamespace(**{k: getattr(st1, k) for k in dir(st1) if k.startswith("st_")})
    chmodded.st_mode = 0o100000  # (ctime kept, as FAT and sshfs do)
    assert cache.lookup_raw(paths[1], chmodded) is None and cache.last_known
    cache.finish(False)
    hits, misses = run(state, root, paths)
    assert len(hits) == 3 and misses == []
