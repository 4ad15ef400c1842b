"""Checkpoints of interrupted backups as a user sees them: how many a run leaves, what each holds, and how
``snapshots`` shows them with a full key and with a write-only key.

A run saves a checkpoint every ``--checkpoint-interval``; each holds everything the one before it held (the
walk only adds entries, and the trees of a stop are trimmed only of files whose data was never stored), so a
run leaves one checkpoint, its newest, and not one per interval: a first backup that takes days over a slow
line used to list hundreds of them in ``tuckbox snapshots``, all kept by ``forget``.
"""

from __future__ import annotations

import signal

import pytest

from tuckbox.testing.crash import KiB, Cli, file_hashes, local_storage, make_tree, restored, wait_for
from tuckbox.testing.faults import SAVES_LOG_ENV
from tuckbox.testing.trees import compare_trees

INIT = ("init", "--pack-size", "1MiB", "--chunk-min", "16KiB", "--chunk-avg", "32KiB", "--chunk-max", "256KiB")


def _snapshot_saves(log) -> list[str]:
    if not log.exists():
        return []
    return [line.split()[2] for line in log.read_text().splitlines() if line.split()[1] == "snapshots"]


@pytest.mark.parametrize("key", ["full", "write-only"])
def test_a_run_leaves_one_checkpoint_not_one_per_interval(key, tmp_path):
    src = tmp_path / "src"
    make_tree(src, 3, big=2, big_size=(300 * KiB, 400 * KiB), dirs=4, files_per_dir=40, small_size=(0, 30 * KiB))
    cli = Cli(tmp_path, local_storage(tmp_path / "repo"))
    cli(*INIT)
    key_args: tuple[str, ...] = ()
    if key == "write-only":
        cli("key", "add", "--write-only", "--output", str(tmp_path / "wo.key"))
        key_args = ("--key-file", str(tmp_path / "wo.key"))
    log = tmp_path / "saves.log"
    # a checkpoint after every entry, each flush and save slowed down, so that several are saved before the stop
    env = {"TUCKBOX_TEST_FAULTS": "delay=0.02,crash_after_snapshots=100000", SAVES_LOG_ENV: str(log)}
    running = cli.start(*key_args, "--json", "backup", "--checkpoint-interval", "0.001s", str(src), env=env)
    wait_for(lambda: len(_snapshot_saves(log)) >= 3 or running.proc.poll() is not None, 120, "three checkpoints")
    assert running.proc.poll() is None, "the backup ended before it could be interrupted"
    running.proc.send_signal(signal.SIGINT)  # our own child, by pid
    res = running.wait(timeout=60)
    assert res.code == 130, res.err
    stop = res.summary()["snapshot"]
    saved = _snapshot_saves(log)
    assert len(saved) >= 4 and saved[-1] == stop, saved

    listed = cli(*key_args, "snapshots", "--json").json()
    assert [(s["id"], s["partial"]) for s in listed] == [(stop, True)], "the run's earlier checkpoints are still listed"
    if key == "write-only":
        assert [s["present"] for s in listed] == [True]
    else:
        # the one left holds what it lists, with the source's bytes
        cli("check", "--read-data")
        cli("restore", stop[:12], "--target", str(tmp_path / "cp"))
        got, want = file_hashes(restored(tmp_path / "cp", src)), file_hashes(src)
        assert got and not [p for p, h in got.items() if want.get(p) != h]

    done = cli(*key_args, "--json", "backup", str(src)).summary()
    listed = cli(*key_args, "snapshots", "--json").json()
    assert [(s["id"], s["partial"]) for s in listed] == [(done["snapshot"], False)], "superseded checkpoints are listed"
    cli("restore", "latest", "--target", str(tmp_path / "final"))
    assert compare_trees(src, restored(tmp_path / "final", src)) == []
