"""Crash consistency: a real ``tuckbox backup`` is SIGKILLed at seeded random points, against a local
repository, the real SFTP server and the real S3 server; every kill leaves a repository that
``check --read-data`` accepts, and the resumed backups finish with a snapshot that restores exactly
without uploading again what was already stored.

Kill points. Three kinds, chosen per run by a seeded RNG:

* ``timer``: the test SIGKILLs the process after a random delay (uploads are slowed with
  ``--limit-upload`` so kills land anywhere in the run: while opening, adopting, walking, uploading,
  writing an index or a checkpoint, saving the snapshot, cleaning up);
* ``crash_before=N`` / ``crash_after=N``: the process SIGKILLs itself right before / right after its
  N-th write reached the storage (test hook ``TUCKBOX_TEST_FAULTS``, see tuckbox.testing.crash), so
  every gap of the write order (lock, packs, index, snapshot, journal, files cache) gets hit exactly.

Several kills happen in a row on one repository (a *segment*): kill, ``check --read-data``, resume and
kill again, ... until a run completes; then the snapshot is restored and compared with the source, and
the source is changed (new, rewritten and deleted files) for the next segment.

The bound on re-uploading. For a run *r* let ``stored_r`` be the packs in the storage when it starts,
``vouched_r`` those among them that an index names or the local pack journal records (the ones a
resumed run can know about and adopt), and ``needed`` the data chunks of the segment's final snapshot.
The *unfinished part* of run r is ``needed - chunks(stored_r)``: what no stored pack held when the
run started. A kill can additionally leave *orphan* packs: stored, but killed before the journal
record was written; at most one per upload connection can be in that window. Asserted:

1. after every kill, at most ``connections`` new orphan packs exist (the CLI's default: 4, 2 for a local disk);
2. no run uploads a data chunk of a vouched pack, and every data chunk it uploads is needed:
   ``uploaded_r ⊆ needed - chunks(vouched_r)``;
3. hence for the run that completes, its ``--json`` summary obeys
   ``bytes_new_raw <= raw(unfinished part) + raw(needed chunks in orphan packs) + raw(trees)``,
   where the orphan term is at most one pack per connection per kill (1.), and its ``bytes_added``
   equals the sizes of the packs it added to the storage (the summary reports real uploads).
(Tree blobs are exempt from 2.: directory atimes change when a killed run lists them, so trees of an
interrupted run may legitimately differ from the final ones; they are small and bounded in 3.)

Default: at least 50 kills over the three storages. ``TUCKBOX_STRESS=1`` makes it 5x more;
``TUCKBOX_CRASH_SEED`` replays another seed.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tuckbox.testing.crash import (
    KiB,
    MiB,
    Cli,
    PackInspector,
    file_hashes,
    journaled,
    local_storage,
    make_tree,
    mutate_tree,
    open_repo,
    restored,
    s3_storage,
    sftp_storage,
    snapshot_blobs,
)
from tuckbox.testing.servers import server_env
from tuckbox.testing.trees import compare_trees
from tuckbox.types import BlobType

STRESS = os.environ.get("TUCKBOX_STRESS") == "1"
SEED = int(os.environ.get("TUCKBOX_CRASH_SEED", "20250101"))
KILLS = {"local": 18, "sftp": 16, "s3": 16}  # 50 in the default run
PACK_SIZE = 1 * MiB
CHUNK_MAX = 256 * KiB
INIT = ("init", "--pack-size", "1MiB", "--chunk-min", "16KiB", "--chunk-avg", "32KiB", "--chunk-max", "256KiB")


@pytest.fixture(params=["local", "sftp", "s3"])
def storage(request, tmp_path):
    name = f"crash-{os.getpid()}-{int(time.time() * 1000) % 10**8}"
    if request.param == "local":
        st = local_storage(tmp_path / "repo")
    elif request.param == "sftp":
        st = sftp_storage(server_env("sshd"), name)
    else:
        st = s3_storage(server_env("seaweedfs"), name)
    yield st
    st.cleanup()


@dataclass
class State:
    stored: dict[str, int]  # pack name -> size
    vouched: set[str]  # indexed or journaled (and stored)
    indexed: set[str]

    @property
    def orphans(self) -> set[str]:
        return set(self.stored) - self.vouched


@dataclass
class Run:
    mode: str
    before: State
    after: State
    code: int
    summary: dict | None = None
    new_orphans: set[str] = field(default_factory=set)


class Tracker:
    def __init__(self, inspector: PackInspector, cache: Path) -> None:
        self.insp = inspector
        self.cache = cache

    def state(self) -> State:
        indexed = set(self.insp.indexed())
        stored = self.insp.stored()
        vouched = (indexed | journaled(self.cache)) & set(stored)
        return State(stored, vouched, indexed)

    def data_blobs(self, packs) -> dict[bytes, int]:
        out: dict[bytes, int] = {}
        for name, size in packs:
            for e in self.insp.blobs(name, size):
                if e.type is BlobType.DATA:
                    out[e.id] = e.raw_length
        return out


def verify_segment(runs: list[Run], tracker: Tracker, repo, cli: Cli, src: Path, restore_to: Path) -> None:
    final = runs[-1]
    assert final.code == 0 and final.summary is not None
    needed, trees = snapshot_blobs(repo, final.summary["snapshot"])
    tree_raw = sum(repo.index.lookup(t).entry.raw_length for t in trees)
    for r in runs:
        new = [(n, s) for n, s in r.after.stored.items() if n not in r.before.stored]
        uploaded = tracker.data_blobs(new)
        vouched = tracker.data_blobs((n, r.before.stored[n]) for n in r.before.vouched)
        again = set(uploaded) & set(vouched)
        assert not again, f"{r.mode}: {len(again)} chunk(s) stored by an earlier run were uploaded again"
        unneeded = set(uploaded) - set(needed)
        assert not unneeded, f"{r.mode}: uploaded {len(unneeded)} data chunk(s) the snapshot does not use"
    # the completed run against the bound stated in the module docstring
    before = final.before
    stored_blobs = tracker.data_blobs(before.stored.items())
    vouched_blobs = tracker.data_blobs((n, before.stored[n]) for n in before.vouched)
    orphan_only = set(tracker.data_blobs((n, before.stored[n]) for n in before.orphans)) - set(vouched_blobs)
    unfinished = sum(raw for b, raw in needed.items() if b not in stored_blobs)
    orphaned = sum(raw for b, raw in needed.items() if b in orphan_only)
    s = final.summary
    assert s["bytes_new_raw"] <= unfinished + orphaned + tree_raw, (
        f"resumed run stored {s['bytes_new_raw']} plaintext bytes; unfinished part {unfinished}, "
        f"orphaned {orphaned}, trees {tree_raw}"
    )
    kills = sum(1 for r in runs if r.code != 0)
    assert orphaned <= max(1, kills) * cli.storage.connections * (PACK_SIZE + CHUNK_MAX)
    added = sum(size for n, size in final.after.stored.items() if n not in final.before.stored)
    assert s["bytes_added"] == added, f"summary says {s['bytes_added']} bytes added, the storage grew by {added}"
    # and the snapshot restores exactly
    cli("restore", final.summary["snapshot"][:12], "--target", str(restore_to))
    problems = compare_trees(src, restored(restore_to, src))
    assert problems == [], "\n".join(problems[:20])
    shutil.rmtree(restore_to)


def verify_newest_checkpoint(cli: Cli, src: Path, target: Path) -> int:
    """A checkpoint left by a killed run restores, and every file in it is exactly the source's file."""
    snaps = cli("snapshots", "--json").json()
    partial = [s for s in snaps if s["partial"]]
    if partial:
        cli("restore", partial[-1]["id"][:12], "--target", str(target))
        got, want = file_hashes(restored(target, src)), file_hashes(src)
        assert got, "an empty checkpoint"
        wrong = [p for p, h in got.items() if want.get(p) != h]
        assert not wrong, f"checkpoint {partial[-1]['id'][:8]} holds files that differ from the source: {wrong[:5]}"
        shutil.rmtree(target)
    return len(snaps)


def test_kill_backup_at_random_points(storage, tmp_path):
    kind = storage.kind
    quota = KILLS[kind] * (5 if STRESS else 1)
    rng = random.Random(f"{SEED}-{kind}")
    src = tmp_path / "src"
    total = make_tree(src, rng.randrange(1 << 30), big=4, big_size=(2 * MiB, 5 * MiB), dirs=10, files_per_dir=50)
    cli = Cli(tmp_path, storage)
    cli(*INIT)
    repo = open_repo(storage, cli.passphrase, tmp_path / "inspect-cache")
    tracker = Tracker(PackInspector(repo), cli.cache)
    extra = ["--checkpoint-interval", "1s"] if kind == "local" else []  # kills also land in checkpoints
    kills = segments = checkpoints_seen = verified = 0
    modes: dict[str, int] = {}
    runs: list[Run] = []
    seg_start = sum(tracker.state().stored.values())
    todo = total
    try:
        while True:
            before = tracker.state()
            if kills >= quota:
                mode, env, args = "complete", {}, []
            else:
                mode = rng.choice(["timer", "timer", "crash_after", "crash_before"])
                left = max(PACK_SIZE, todo - (sum(before.stored.values()) - seg_start))  # a rough estimate
                if mode == "timer":
                    env, args = {}, ["--limit-upload", "6MiB"]
                else:
                    n = rng.randint(1, left // PACK_SIZE + 4)  # lock, packs, indexes, snapshot
                    env, args = {"TUCKBOX_TEST_FAULTS": f"{mode}={n}"}, []
                    mode = f"{mode}={n}"
            running = cli.start("--json", *args, "backup", *extra, str(src), env=env)
            if mode == "timer":
                delay = rng.uniform(0.15, min(3.0, 0.5 + left / (6 * MiB)))
                time.sleep(delay)
                running.kill()
                mode = f"timer={delay:.2f}s"
            res = running.wait()
            after = tracker.state()
            run = Run(mode, before, after, res.code)
            runs.append(run)
            if res.code == -9:
                kills += 1
                modes[mode.split("=")[0]] = modes.get(mode.split("=")[0], 0) + 1
                run.new_orphans = after.orphans - before.orphans
                assert len(run.new_orphans) <= storage.connections, f"{mode}: {len(run.new_orphans)} orphan packs"
                check = cli("check", "--read-data", "--json", expect=None)
                assert check.code == 0, f"after kill #{kills} ({mode}) check failed:\n{check.out}\n{check.err}"
                assert check.json()["ok"]
                if extra and check.json()["counts"]["snapshots"] > checkpoints_seen:
                    checkpoints_seen = verify_newest_checkpoint(cli, src, tmp_path / f"cp-{kills}")
                    verified += 1
                continue
            assert res.code == 0, f"{mode}: backup exited {res.code}\n{res.err}"
            run.summary = res.summary()
            verify_segment(runs, tracker, repo, cli, src, tmp_path / f"restore-{segments}")
            segments += 1
            runs = []
            if kills >= quota:
                break
            seg_start = sum(after.stored.values())
            todo = 7 * MiB
            mutate_tree(src, rng.randrange(1 << 30), new_bytes=6 * MiB)
        # the final state: the newest snapshot is complete, checkpoints of these paths were superseded
        snaps = cli("snapshots", "--json").json()
        assert not snaps[-1]["partial"]
        final_check = cli("check", "--read-data", "--json").json()
        assert final_check["ok"] and not final_check["errors"]
    finally:
        repo.close()
    print(f"{kind}: {kills} kills {modes} in {segments} segments; {verified} checkpoint(s) restored and verified")
    assert kills >= quota


def test_kill_right_after_a_checkpoint_is_saved(tmp_path):
    """A kill in the gap between saving a checkpoint snapshot and recording it locally must not leave
    that checkpoint behind for ever: the next complete snapshot of the same paths supersedes it."""
    src = tmp_path / "src"
    make_tree(src, 7, big=2, big_size=(200 * KiB, 300 * KiB), dirs=1, files_per_dir=3)
    args = ("--json", "backup", "--checkpoint-interval", "0.001s", str(src))  # a checkpoint after every entry
    cli = Cli(tmp_path, local_storage(tmp_path / "repo"))
    cli(*INIT)
    res = cli(*args, env={"TUCKBOX_TEST_FAULTS": "crash_after_snapshots=1"}, expect=None)  # dies right after it
    assert res.code == -9, res.err
    left = cli("snapshots", "--json").json()
    assert [s["partial"] for s in left] == [True]  # the checkpoint was saved, then the process died
    cli("check", "--read-data")
    done = cli(*args[:2], str(src)).summary()
    snaps = cli("snapshots", "--json").json()
    assert [(s["id"], s["partial"]) for s in snaps] == [(done["snapshot"], False)], "a checkpoint was left behind"


@pytest.mark.parametrize("point", ["crash_before=1", "crash_after=1", "crash_after=2"])
def test_kill_during_init_then_init_again(point, tmp_path):
    """init writes its key, then its config. Killed in between, the location is "not a tuckbox repository"
    and init may be run again; the repository that results opens with the passphrase every time (the
    dead run's key, made with the same passphrase for a repository that never existed, must not be
    taken for this one's; which key is tried first depends on the names, so try a few times)."""
    src = tmp_path / "src"
    make_tree(src, 3, big=1, big_size=(100 * KiB, 100 * KiB), dirs=1, files_per_dir=3)
    for attempt in range(4 if point == "crash_after=1" else 1):
        cli = Cli(tmp_path, local_storage(tmp_path / f"repo-{attempt}"), name=f"cli-{attempt}")
        assert cli(*INIT, env={"TUCKBOX_TEST_FAULTS": point}, expect=None).code == -9
        if point == "crash_after=2":  # the config was stored: the repository exists and works
            assert "already exists" in cli(*INIT, expect=1).err
        else:
            assert "not a tuckbox repository" in cli("snapshots", expect=1).err
            cli(*INIT)
            # the dead run's key opens nothing here: 'key list' showed it as a second full key
            assert [k["in_use"] for k in cli("key", "list", "--json").json()] == [True]
        cli("backup", str(src))
        cli("restore", "latest", "--target", str(tmp_path / f"r-{attempt}"))
        assert file_hashes(restored(tmp_path / f"r-{attempt}", src)) == file_hashes(src)


def test_prune_keeps_the_packs_a_killed_backup_resumes_from(tmp_path):
    """A backup killed mid-way (kill -9, power loss) leaves stored packs no index names, which its next run
    adopts instead of uploading them again. A prune in between (a weekly timer) used to delete them: while
    the killed backup's lock is left, prune keeps them and says why; the next backup of that host and user
    adopts them and takes the stale lock away, and later prunes remove whatever is still unindexed."""
    src = tmp_path / "src"
    make_tree(src, 21, big=3, big_size=(2 * MiB, 3 * MiB), dirs=3, files_per_dir=20)
    cli = Cli(tmp_path, local_storage(tmp_path / "repo"))
    cli(*INIT)
    repo = open_repo(cli.storage, cli.passphrase, tmp_path / "inspect-cache")
    insp = PackInspector(repo)
    try:
        res = cli("backup", str(src), env={"TUCKBOX_TEST_FAULTS": "crash_after_data=3"}, expect=None)
        assert res.code == -9, res.err
        stored = insp.stored()
        waiting = set(stored) - set(insp.indexed())
        resumable = waiting & journaled(cli.cache)  # (one stored in the instant before the kill may not be)
        assert resumable, "the killed run left no stored, unindexed pack"
        locks = tmp_path / "repo" / "locks"
        assert len(list(locks.iterdir())) == 1  # the killed backup's

        pruned = cli("--json", "prune").json()
        assert pruned["plan"]["packs_unindexed_kept"] == len(waiting) and pruned["plan"]["packs_unindexed_removed"] == 0
        assert any("adopts them when it runs again" in n for n in pruned["notes"]), pruned
        assert set(insp.stored()) >= waiting, "prune deleted the packs the killed backup resumes from"

        done = cli("--json", "backup", str(src)).summary()
        assert done["packs_adopted"] == len(resumable), done
        kept = {n: s for n, s in stored.items() if n not in waiting - resumable}
        again = _blob_ids(insp, {n: s for n, s in insp.stored().items() if n not in stored}) & _blob_ids(insp, kept)
        assert not again, f"{len(again)} blob(s) of packs stored before the kill were uploaded again"
        assert not list(locks.iterdir()), "the killed backup's stale lock was left"
        cli("restore", "latest", "--target", str(tmp_path / "r"))
        assert compare_trees(src, restored(tmp_path / "r", src)) == []

        # no killed backup's lock is left: a stored pack no journal named is removed, as before
        pruned = cli("--json", "prune").json()
        assert pruned["plan"]["packs_unindexed_kept"] == 0
        assert pruned["plan"]["packs_unindexed_removed"] == len(waiting - resumable)
        assert set(insp.stored()) == set(insp.indexed())
        cli("check", "--read-data")
    finally:
        repo.close()


def _blob_ids(insp: PackInspector, packs: dict[str, int]) -> set[bytes]:
    return {e.id for name, size in packs.items() for e in insp.blobs(name, size) if e.type is BlobType.DATA}


def test_a_backup_killed_before_a_reboot_resumes_when_its_pid_is_another_program_s(tmp_path):
    """Power cut mid-backup, reboot: the killed run's pid (named in its pack journal) soon belongs to another
    program - a kernel thread, a daemon. The journal was taken for a running backup's and left alone for as
    long as that program lived: the packs it names were uploaded again (and the next prune removed them)."""
    import subprocess
    import sys

    src = tmp_path / "src"
    make_tree(src, 22, big=3, big_size=(2 * MiB, 3 * MiB), dirs=2, files_per_dir=10)
    cli = Cli(tmp_path, local_storage(tmp_path / "repo"))
    cli(*INIT)
    res = cli("backup", str(src), env={"TUCKBOX_TEST_FAULTS": "crash_after_data=3"}, expect=None)
    assert res.code == -9, res.err
    (journal,) = [p for d in cli.cache.glob("*/state/journal") for p in d.iterdir()]
    resumable = journaled(cli.cache)
    assert resumable
    time.sleep(1.5)  # (the other program starts after the journal's last record, as after a reboot)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        journal.rename(journal.with_name(f"{journal.name.rsplit('-', 1)[0]}-{other.pid}"))
        done = cli("--json", "backup", str(src)).summary()
    finally:
        other.kill()
        other.wait()
    assert done["packs_adopted"] == len(resumable), done
    assert not [p for d in cli.cache.glob("*/state/journal") for p in d.iterdir()]
    cli("check", "--read-data")
