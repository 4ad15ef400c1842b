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


def _children(entries: list[dict], root: str) -> dict[str, set[str]]:
    """directory path -> names of the entries listed in it, for ``root`` and every directory below it."""
    out: dict[str, set[str]] = {e["path"]: set() for e in entries if e["type"] == "dir" and e["path"].startswith(root)}
    for e in entries:
        parent, _, name = e["path"].rpartition("/")
        if parent in out:
            out[parent].add(name)
    return out


@pytest.mark.parametrize("how", ["killed after a checkpoint", "ctrl-c"])
def test_a_checkpoint_marks_the_directories_it_holds_only_part_of(how, tmp_path):
    """A directory the backup had not finished looks, restored, like one that held fewer files: ``ls`` must say
    so. A periodic checkpoint (the one a killed run leaves) did not mark the directories still being walked, and
    nothing showed the mark a stop did leave."""
    src = tmp_path / "src"
    make_tree(src, 4, big=1, big_size=(300 * KiB, 400 * KiB), dirs=5, files_per_dir=30, small_size=(0, 30 * KiB))
    cli = Cli(tmp_path, local_storage(tmp_path / "repo"))
    cli(*INIT)
    args = ("--json", "backup", "--checkpoint-interval", "0.001s", str(src))
    if how == "ctrl-c":
        log = tmp_path / "saves.log"
        running = cli.start(*args, env={"TUCKBOX_TEST_FAULTS": "delay=0.02,crash_after_snapshots=100000",
                                        SAVES_LOG_ENV: str(log)})
        wait_for(lambda: len(_snapshot_saves(log)) >= 5 or running.proc.poll() is not None, 120, "checkpoints")
        running.proc.send_signal(signal.SIGINT)
        assert running.wait(timeout=60).code == 130
    else:
        res = cli(*args, env={"TUCKBOX_TEST_FAULTS": "crash_after_snapshots=5"}, expect=None)
        assert res.code == -9, res.err
    snaps = cli("snapshots", "--json").json()
    assert snaps and all(s["partial"] for s in snaps)  # (killed before the run's previous one was removed: two)
    newest = snaps[-1]["id"][:12]
    entries = cli("ls", "--json", newest).json()["entries"]
    warned = {e["path"] for e in entries if e.get("warning") == "incomplete: the backup was interrupted"}
    listed = _children(entries, str(src))
    real = {str(src)} | {str(p) for p in src.rglob("*") if p.is_dir() and not p.is_symlink()}
    short = {d for d, names in listed.items() if names != {p.name for p in (src / d[len(str(src)) + 1:]).iterdir()}}
    assert short, "the checkpoint holds every directory whole: the test stopped the backup too late"
    assert short <= warned, f"directories the checkpoint holds only part of, not marked: {sorted(short - warned)}"
    assert set(listed) <= real
    long = cli("ls", "-l", newest, str(src)).out.splitlines()
    marked = [line for line in long if line.endswith("  (incomplete: the backup was interrupted)")]
    assert {line.split()[-6] for line in marked} >= short, long  # (the path: the field before the note's 5 words)
    # the checkpoint still restores what it lists, and the next run completes it with no mark left
    done = cli("--json", "backup", str(src)).summary()
    final = cli("ls", "--json", done["snapshot"][:12]).json()["entries"]
    assert not [e["path"] for e in final if "warning" in e]
