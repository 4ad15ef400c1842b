"""forget and prune through the real command, on a local repository: space is freed, every kept
snapshot still restores exactly and passes ``check --read-data``, nothing is deleted when the
repository cannot be read completely or someone holds a lock, a kill at any removal leaves a valid
repository, and a backup after a prune never deduplicates against data the prune removed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tuckbox.testing.trees import compare_trees

from .conftest import Tuckbox

MiB = 1 << 20


def _write(path: Path, seed: int, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rnd = __import__("random").Random(seed)
    path.write_bytes(rnd.randbytes(size))


def _pack_bytes(tb: Tuckbox) -> int:
    root = Path(tb.repo) / "data"
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def _objects(tb: Tuckbox, kind: str) -> set[str]:
    root = Path(tb.repo) / kind
    return {f.name for f in root.rglob("*") if f.is_file()}


def _snapshot_ids(tb: Tuckbox) -> list[str]:
    return [s["id"] for s in tb("snapshots", "--json").json()]


def _restore_equal(tb: Tuckbox, ref: str, src: Path, tmp: Path) -> None:
    target = tmp / f"restore-{ref}-{len(list(tmp.iterdir()))}"
    tb("restore", ref, "--target", str(target))
    problems = compare_trees(src, Path(str(target) + str(src)), check_atime=False)
    assert problems == [], problems[:5]


def test_forget_and_prune_free_space_and_keep_the_rest_intact(tb: Tuckbox, tmp_path: Path) -> None:
    src = tmp_path / "src"
    tb("init", "--pack-size", "2MiB")
    _write(src / "old.bin", 1, 6 * MiB)  # only in the first snapshot
    _write(src / "kept.bin", 2, 3 * MiB)
    for i in range(200):
        (src / "small" / f"f{i:03}.txt").parent.mkdir(parents=True, exist_ok=True)
        (src / "small" / f"f{i:03}.txt").write_text(f"file {i}\n" * (i + 1))
    tb("backup", str(src))
    first = _snapshot_ids(tb)[0]
    os.unlink(src / "old.bin")
    for i in range(0, 200, 2):  # half the small files go: their packs are partly unused afterwards
        os.unlink(src / "small" / f"f{i:03}.txt")
    _write(src / "new.bin", 3, 2 * MiB)
    tb("backup", str(src))
    second = [s for s in _snapshot_ids(tb) if s != first][0]
    before = _pack_bytes(tb)

    dry = tb("forget", "--keep-last", "1", "--prune", "--dry-run", "--json").json()
    assert [b["id"] for g in dry["groups"] for b in g["remove"]] == [first]
    assert dry["removed"] == 0 and dry["prune"]["dry_run"] is True
    assert dry["prune"]["plan"]["bytes_removed"] >= 6 * MiB
    assert set(_snapshot_ids(tb)) == {first, second} and _pack_bytes(tb) == before  # a dry run changes nothing

    res = tb("forget", "--keep-last", "1", "--prune", "--max-unused", "0", "--json").json()
    assert res["removed"] == 1
    assert res["prune"]["plan"]["packs_repacked"] >= 1  # small files' packs were half unused
    assert _snapshot_ids(tb) == [second]
    after = _pack_bytes(tb)
    assert after <= before - 6 * MiB, (before, after)  # old.bin's data is gone
    assert after >= 5 * MiB  # kept.bin and new.bin are not
    out = tb("check", "--read-data")
    assert "no errors found" in out.out and "not in any index" not in out.out
    _restore_equal(tb, "latest", src, tmp_path)
    assert "nothing to prune" in tb("prune").out  # a second prune finds nothing


def test_forget_by_id_and_usage_errors(tb: Tuckbox, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write(src / "a", 1, 1000)
    tb("init")
    tb("backup", str(src))
    tb("backup", str(src), "--tag", "x")
    ids = _snapshot_ids(tb)
    r = tb("forget", expect=2)
    assert "no --keep-* rule" in r.err and len(r.err.strip().splitlines()) == 1
    assert "not both" in tb("forget", ids[0][:8], "--keep-last", "1", expect=2).err
    assert "-1 means all" in tb("forget", "--keep-daily", "-2", expect=2).err
    assert "cannot group by" in tb("forget", "--keep-last", "1", "--group-by", "user", expect=2).err
    assert "no snapshot" in tb("forget", "abcdef12", expect=2).err
    # a rule that would keep nothing of a group (a misspelt tag) removes nothing
    r = tb("forget", "--keep-tag", "typo", expect=2)
    assert "refusing to remove every snapshot of host" in r.err and len(r.err.strip().splitlines()) == 1
    assert _snapshot_ids(tb) == ids
    tb("forget", ids[0][:8])
    assert _snapshot_ids(tb) == ids[1:]
    # --keep-tag keeps the tagged one even though --keep-last 0 rules nothing else
    tb("backup", str(src))
    kept = tb("forget", "--keep-tag", "x", "--json").json()
    assert [b["reasons"] for g in kept["groups"] for b in g["keep"]] == [["tag x"]]
    assert len(_snapshot_ids(tb)) == 1


def test_forget_says_when_host_tag_or_path_match_no_snapshot(tb: Tuckbox, tmp_path: Path) -> None:
    """A misspelt --host (in a weekly job) thinned out nothing, for good, with not a word; grouping by tags named
    a group of untagged snapshots "tags " (nothing after it)."""
    src = tmp_path / "src"
    _write(src / "a", 1, 1000)
    tb("init")
    tb("backup", str(src))
    tb("backup", str(src))
    ids = _snapshot_ids(tb)
    r = tb("forget", "--keep-last", "1", "--host", "laptpo", "--host", "nas", "--tag", "daily")
    assert r.err == ("warning: no snapshot matches --host laptpo or nas, --tag daily; nothing is removed "
                     "(see 'tuckbox snapshots')\n")
    assert "removed 0 snapshot(s), kept 0" in r.out
    assert "warning: no snapshot matches --path /elsewhere;" in tb("forget", "-n", "--keep-last", "1",
                                                                   "--path", "/elsewhere").err
    assert _snapshot_ids(tb) == ids
    r = tb("forget", "--keep-last", "1", "--group-by", "host,tags", "--path", str(src))
    assert r.err == ""
    assert r.out.splitlines()[0].endswith("; tags (none)")
    assert _snapshot_ids(tb) == ids[1:]


def test_forget_by_id_keeps_to_host_tag_and_path_and_max_unused_needs_prune(tb: Tuckbox, tmp_path: Path) -> None:
    """README: --host, --tag and --path limit which snapshots forget looks at. With ids they were ignored: a
    snapshot of another host named by mistake was removed all the same. --max-unused without --prune changed
    nothing, in silence (the space the user asked for was not freed)."""
    src = tmp_path / "src"
    _write(src / "a", 1, 1000)
    tb("init")
    tb("backup", str(src), "--host", "laptop", "--tag", "daily")
    tb("backup", str(src), "--host", "nas")
    ids = _snapshot_ids(tb)
    for flags in (["--host", "nas"], ["--tag", "weekly"], ["--path", str(tmp_path / "elsewhere")]):
        r = tb("forget", ids[0][:8], *flags, expect=2)
        assert f"snapshot {ids[0][:8]} (host laptop) does not match {flags[0]}" in r.err and "nothing was removed" in r.err
        assert len(r.err.strip().splitlines()) == 1
    assert _snapshot_ids(tb) == ids
    for args in (["forget", "--keep-last", "1"], ["rewrite", "--exclude", "a"]):
        r = tb(*args, "--max-unused", "5%", expect=2)
        assert "add --prune" in r.err and len(r.err.strip().splitlines()) == 1
    assert _snapshot_ids(tb) == ids
    tb("forget", ids[0][:8], "--host", "laptop", "--tag", "daily", "--path", str(src))  # matching: removed
    assert _snapshot_ids(tb) == ids[1:]
    tb("forget", "--keep-last", "1", "--prune", "--max-unused", "100%")


def test_a_damaged_snapshot_is_named_by_check_and_prune_and_forget_removes_it(tb: Tuckbox, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write(src / "a", 1, 1000)
    tb("init")
    tb("backup", str(src))
    _write(src / "b", 2, 1000)
    tb("backup", str(src))
    ids = _snapshot_ids(tb)
    victim = Path(tb.repo) / "snapshots" / ids[0]
    victim.chmod(0o600)
    victim.write_bytes(b"")
    shutil.rmtree(tmp_path / "cache")  # (the cache's good copy would hide the damage)
    hint = f"'tuckbox forget {ids[0][:8]}'"
    checked = tb("check", expect=1).err
    assert hint in checked
    named = [ln for ln in checked.splitlines() if ln.startswith("error: ")]
    assert len(named) == 1 and named[0].count(ids[0][:8]) == 2 and ids[0] in named[0], named  # the snapshot, then the command
    shown = tb("ls", ids[0][:8], expect=None)
    assert shown.code in (1, 2) and shown.err.count(ids[0][:8]) == 4, shown.err  # the warning and the error
    refused = tb("prune", expect=1).err
    assert hint in refused and "deleted nothing" in refused
    assert hint in tb("repair", "snapshots", ids[0][:8], expect=2).err
    # a policy never touches it (nothing is known of it); naming it removes it, saying so
    tb("forget", "--keep-last", "1")
    assert victim.exists()
    dry = tb("forget", ids[0][:6], "--dry-run", "--prune")
    assert "damaged" in dry.out and "would remove 1" in dry.out and victim.exists()
    done = tb("forget", ids[0], "--json").json()
    assert done["removed"] == 1 and done["groups"][0]["remove"][0]["damaged"] is True
    assert not victim.exists()
    assert _snapshot_ids(tb) == ids[1:]
    tb("prune")
    assert "no errors found" in tb("check", "--read-data").out


def test_forget_shows_no_plan_it_cannot_carry_out(tb: Tuckbox, tmp_path: Path) -> None:
    """Where no lock can be written (here an immutable locks/ directory, which even root cannot write
    into), forget fails before it prints a keep/remove plan; a dry run still shows it."""
    import subprocess

    src = tmp_path / "src"
    _write(src / "a", 1, 1000)
    tb("init")
    tb("backup", str(src))
    tb("backup", str(src))
    ids = _snapshot_ids(tb)
    locks = Path(tb.repo) / "locks"
    try:
        subprocess.run(["chattr", "+i", str(locks)], check=True, capture_output=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        pytest.skip(f"cannot make a directory immutable here: {e}")
    try:
        res = tb("forget", "--keep-last", "1", expect=1)
        assert "remove" not in res.out and "keep" not in res.out, res.out
        assert "locks" in res.err and len(res.err.strip().splitlines()) == 1
        assert "remove" in tb("forget", "--keep-last", "1", "--dry-run").out
        assert "removed 0" in tb("forget", "--keep-last", "5").out  # nothing to remove: no lock needed
    finally:
        subprocess.run(["chattr", "-i", str(locks)], capture_output=True)
    assert _snapshot_ids(tb) == ids


def test_prune_refuses_while_a_backup_holds_a_lock(tb: Tuckbox, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write(src / "a", 1, 3 * MiB)
    tb("init")
    tb("backup", str(src))
    tb("forget", "--keep-last", "1")  # nothing to forget; then one snapshot goes by id
    _write(src / "a", 2, 3 * MiB)
    tb("backup", str(src))
    tb("forget", _snapshot_ids(tb)[0][:8])
    packs = _objects(tb, "data")
    # a shared lock of a live process (this test's) on this host: prune must wait for it, i.e. refuse
    from tuckbox.backends.local import LocalBackend
    from tuckbox.crypto.keyfile import open_keyfile
    from tuckbox.repository.locks import Lock
    from tuckbox.types import ObjectType

    backend = LocalBackend(tb.repo)
    key = next(iter(backend.list(ObjectType.KEY))).name
    keys = open_keyfile(backend.load(ObjectType.KEY, key), tb.passfile.read_bytes().strip())
    lock = Lock(backend, keys.index_key, exclusive=False).acquire()
    try:
        r = tb("prune", expect=1)
        assert "repository is locked" in r.err and "shared lock" in r.err and "--lock-wait" in r.err
        assert _objects(tb, "data") == packs
        r = tb("prune", "--lock-wait", "1s", expect=1)
        assert "waiting up to 1 s for the repository lock" in r.err and "(waited 1 s)" in r.err
        assert _objects(tb, "data") == packs
        # the backup finishes while prune waits: prune then goes ahead
        import threading

        threading.Timer(2.0, lock.release).start()
        r = tb("prune", "--lock-wait", "2m")
        assert "waiting up to 2 min for the repository lock" in r.err
    finally:
        lock.release()
    assert _objects(tb, "data") < packs
    tb("check", "--read-data")


def test_prune_deletes_nothing_when_a_tree_cannot_be_read(tb: Tuckbox, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write(src / "a", 1, 3 * MiB)
    tb("init")
    tb("backup", str(src))
    _write(src / "a", 2, 3 * MiB)
    tb("backup", str(src))
    tb("forget", _snapshot_ids(tb)[0][:8])
    # damage every tree pack (and drop the cached copies): used data can no longer be told from unused
    inspect = tb("check", "--read-data", "--json").json()
    assert inspect["ok"]
    shutil.rmtree(tmp_path / "cache")
    packs = _objects(tb, "data")
    damaged = 0
    for f in (Path(tb.repo) / "data").rglob("*"):
        if f.is_file() and f.stat().st_size < 64 * 1024:  # tree packs are the small ones here
            data = bytearray(f.read_bytes())
            data[len(data) // 2] ^= 1
            f.chmod(0o600)
            f.write_bytes(bytes(data))
            damaged += 1
    assert damaged >= 1
    r = tb("prune", expect=1)
    assert "prune deleted nothing" in r.err and "tuckbox check" in r.err
    assert _objects(tb, "data") == packs


@pytest.mark.parametrize("kill_at", [
    "crash_after_data=1",  # a repacked pack stored, not indexed
    "crash_after_index=1",  # the repacked packs' index stored
    "crash_after_index=2",  # the kept packs' new index stored, old indexes all still there
    "crash_after_removes=1",  # an old index removed
    "crash_after_removes=2",
    "crash_after_removes=3",  # packs being removed
    "crash_after_removes=4",
])
def test_prune_killed_at_any_step_leaves_a_valid_repository(tb: Tuckbox, tmp_path: Path, kill_at: str) -> None:
    src = tmp_path / "src"
    tb("init", "--pack-size", "1MiB")
    for i in range(6):
        _write(src / f"f{i}", i, 700 * 1024)
    tb("backup", str(src))
    for i in range(3):
        _write(src / f"f{i}", 100 + i, 700 * 1024)
    tb("backup", str(src))
    tb("forget", "--keep-last", "1")
    r = tb("prune", "--max-unused", "0", env={"TUCKBOX_TEST_FAULTS": kill_at}, expect=None)
    assert r.code == -9  # killed mid-prune
    check = tb("check", "--read-data")
    assert "no errors found" in check.out
    _restore_equal(tb, "latest", src, tmp_path)
    tb("unlock")  # the killed prune's lock names a dead process: stale
    tb("prune")
    tb("check", "--read-data")
    assert "not in any index" not in tb("check").out
    _restore_equal(tb, "latest", src, tmp_path)


def test_backup_after_prune_stores_again_what_the_prune_removed(tb: Tuckbox, tmp_path: Path) -> None:
    """The files cache and the cached index still name the removed data: the next backup must notice."""
    src = tmp_path / "src"
    _write(src / "a", 1, 3 * MiB)
    tb("init")
    tb("backup", str(src))
    first = _snapshot_ids(tb)[0]
    moved = tmp_path / "aside"
    shutil.move(src / "a", moved)
    _write(src / "b", 2, 1000)
    tb("backup", str(src))
    tb("forget", first[:8], "--prune")  # a's data is no longer used by any snapshot: removed
    shutil.move(moved, src / "a")  # same inode, size and times as the files cache remembers
    lines = tb("backup", str(src), "--json").out.splitlines()
    summary = __import__("json").loads(lines[-1])
    assert summary["type"] == "summary"
    assert summary["bytes_new_raw"] >= 3 * MiB  # read and stored again, not deduplicated
    tb("check", "--read-data")
    _restore_equal(tb, "latest", src, tmp_path)


def _hold_a_prune(tb: Tuckbox):
    """The repository opened in this process, with the exclusive lock a running prune holds."""
    from tuckbox.backends.local import LocalBackend
    from tuckbox.repository.locks import Lock
    from tuckbox.repository.repo import Repository

    os.environ["TUCKBOX_CACHE_DIR"] = str(tb.tmp / "prune-cache")
    repo = Repository.open(LocalBackend(tb.repo), lambda: tb.passfile.read_bytes().strip(), load_index=False)
    lock = Lock(repo.backend, repo.keys.index_key, exclusive=True).acquire()
    repo.guard = lock.ensure_held
    return repo, lock


def _started_waiting(tb: Tuckbox, *args: str):
    """Start ``tuckbox ARGS`` and return it once it says it waits for the lock (with --json, on stdout)."""
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "tuckbox.cli.main", *args], env=tb.env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stream = proc.stdout if "--json" in args else proc.stderr
    line = b""
    deadline = time.monotonic() + 60
    while b"waiting up to" not in line and time.monotonic() < deadline:
        line = stream.readline()
        assert line or proc.poll() is None, f"exited {proc.wait()} without waiting for the lock"
    assert b"waiting up to" in line
    return proc


@pytest.mark.parametrize("files_cache", [True, False])
def test_a_backup_waiting_for_a_prune_does_not_deduplicate_against_what_the_prune_removed(
    tb: Tuckbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files_cache: bool
) -> None:
    """backup --lock-wait opens the repository while a prune holds the lock and goes on once it is done:
    the data the prune removed meanwhile must be stored again, not deduplicated against."""
    from tuckbox.maintenance.prune import execute_prune, plan_prune

    monkeypatch.setenv("TUCKBOX_CACHE_DIR", os.environ.get("TUCKBOX_CACHE_DIR", ""))
    src = tmp_path / "src"
    for i in range(3):
        _write(src / f"f{i}", i, MiB)
    tb("init")
    tb("backup", str(src))
    tb("forget", "latest")  # its data is unused now: the prune removes it
    if not files_cache:
        tb.env["TUCKBOX_CACHE_DIR"] = str(tmp_path / "other-cache")
    repo, lock = _hold_a_prune(tb)
    try:
        backup = _started_waiting(tb, "--lock-wait", "2m", "--json", "backup", str(src))
        result = execute_prune(repo, plan_prune(repo, 0.1))
        assert result.packs_removed > 0
    finally:
        lock.release()
        repo.close()
    out, err = backup.communicate(timeout=120)
    assert backup.returncode == 0, err
    summary = __import__("json").loads(out.splitlines()[-1])
    assert summary["bytes_new_raw"] >= 3 * MiB  # stored again
    tb("check", "--read-data")
    _restore_equal(tb, "latest", src, tmp_path)


def test_a_restore_waiting_for_a_prune_reads_the_snapshot_once_the_prune_is_done(tb: Tuckbox, tmp_path: Path) -> None:
    """restore --lock-wait of a snapshot that 'forget --prune' removed while it waited: a clean
    'no such snapshot', not a restore that fails on every file and points to 'repair index'."""
    src = tmp_path / "src"
    _write(src / "a", 1, MiB)
    tb("init")
    tb("backup", str(src))
    gone = _snapshot_ids(tb)[0]
    from tuckbox.maintenance.prune import execute_prune, plan_prune
    from tuckbox.types import ObjectType

    repo, lock = _hold_a_prune(tb)  # ('forget --prune': the snapshot goes, then its data)
    try:
        restore = _started_waiting(tb, "--lock-wait", "2m", "restore", gone[:8], "--target", str(tmp_path / "r"))
        repo.backend.remove(ObjectType.SNAPSHOT, gone)
        assert execute_prune(repo, plan_prune(repo, 0.1)).packs_removed > 0
    finally:
        lock.release()
        repo.close()
    _out, err = restore.communicate(timeout=120)
    assert restore.returncode != 0
    assert "Traceback" not in err.decode() and "repair index" not in err.decode(), err
    assert gone[:8] in err.decode() and "no snapshot" in err.decode().lower(), err


def test_prune_on_full_storage_names_the_prune_that_needs_no_room(tb: Tuckbox, tmp_path: Path) -> None:
    """A full disk is when prune is wanted most, and repacking needs room for the copies first: the error
    said only 'free some space'. It now names `prune --max-unused 100%`, which copies nothing, and that
    frees the wholly unused packs on the same full storage; the repository stays valid throughout."""
    src = tmp_path / "src"
    tb("init", "--pack-size", "1MiB", "--chunk-min", "16KiB", "--chunk-avg", "32KiB", "--chunk-max", "64KiB")
    for i in range(4):
        _write(src / f"f{i}", i, 400_000)
    tb("backup", str(src))
    (src / "f1").unlink()
    (src / "f2").unlink()
    _write(src / "f5", 5, 400_000)
    tb("backup", str(src))
    tb("forget", "--keep-last", "1")
    before = _pack_bytes(tb)
    full = {"TUCKBOX_TEST_FAULTS": "quota_after=0"}  # every pack save fails: the storage is full
    res = tb("prune", env=full, expect=1)
    error = [ln for ln in res.err.splitlines() if ln.startswith("tuckbox: error:")]
    assert len(error) == 1 and "quota" in error[0], res.err
    assert "or first run 'tuckbox prune --max-unused 100%': it copies nothing and only removes the " in error[0]
    assert " unused pack(s) (" in error[0], error[0]
    tb("check", "--read-data")
    res = tb("prune", "--max-unused", "100%", env=full)
    assert "wrote 0 pack(s)" in res.out and _pack_bytes(tb) < before
    tb("check", "--read-data")
    tb("prune")  # with room again, the partly unused packs are repacked
    tb("check", "--read-data")
    _restore_equal(tb, "latest", src, tmp_path)
