"""A snapshot dated ahead of this machine's clock (a host whose clock is wrong) is pointed out: `snapshots`
notes it, and a command that takes it as 'latest' says so (it would otherwise be 'latest' for every host,
silently, until real time caught up)."""

from __future__ import annotations

import dataclasses
import datetime as dt

from tuckbox.testing.crash import Cli, local_storage, open_repo
from tuckbox.types import ObjectType


def test_a_snapshot_from_the_future_is_pointed_out(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("today\n")
    cli = Cli(tmp_path, local_storage(tmp_path / "repo"))
    cli("init")
    cli("backup", str(src))
    assert "ahead of this machine's clock" not in cli("snapshots").err
    assert "ahead of this machine's clock" not in cli("ls", "latest").err
    repo = open_repo(cli.storage, cli.passphrase, tmp_path / "other-cache")
    try:
        (now,) = repo.snapshots()
        when = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=3)).isoformat(timespec="microseconds")
        ahead = repo.save_snapshot(dataclasses.replace(now, time=when, host="fast-clock", id=""))
    finally:
        repo.close()
    listed = cli("snapshots")
    assert f"note: snapshot {ahead[:8]} of fast-clock is dated 3 h ahead of this machine's clock" in listed.err
    assert listed.err.count("ahead of this machine's clock") == 1
    shown = cli("ls", "latest")
    assert f"'latest' is snapshot {ahead[:8]} of fast-clock, dated 3 h ahead" in shown.err
    assert shown.err.startswith("warning: ")


def test_forget_latest_from_the_future_then_prune(tmp_path):
    """'forget latest --prune' of a snapshot dated ahead of the clock: the note about 'latest' is no damage, so
    the prune runs (it refused, exit 1, 'prune deleted nothing (run tuckbox check)', after the forget)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("kept\n")
    cli = Cli(tmp_path, local_storage(tmp_path / "repo"))
    cli("init")
    cli("backup", str(src))
    (src / "g").write_bytes(b"only in the snapshot from the future\n" * 1000)
    cli("backup", str(src))
    repo = open_repo(cli.storage, cli.passphrase, tmp_path / "other-cache")
    try:
        first, second = repo.snapshots()
        when = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=3)).isoformat(timespec="microseconds")
        ahead = repo.save_snapshot(dataclasses.replace(second, time=when, id=""))
        repo.backend.remove(ObjectType.SNAPSHOT, second.id)
    finally:
        repo.close()
    res = cli("forget", "latest", "--prune")
    assert f"'latest' is snapshot {ahead[:8]}" in res.err
    assert res.err.count("ahead of this machine's clock") == 1
    assert "freed" in res.out
    assert [s["id"] for s in cli("snapshots", "--json").json()] == [first.id]
    cli("check", "--read-data")
    assert "nothing to prune" in cli("prune").out


def test_keep_within_is_not_thrown_off_by_a_snapshot_from_the_future(tmp_path):
    """One snapshot of a host dated years ahead (its clock was wrong once): 'forget --keep-within 30d' measured
    the 30 days back from it and removed every real snapshot of the host; now from this machine's clock."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("today\n")
    cli = Cli(tmp_path, local_storage(tmp_path / "repo"))
    cli("init")
    cli("backup", str(src))
    repo = open_repo(cli.storage, cli.passphrase, tmp_path / "other-cache")
    try:
        (today,) = repo.snapshots()
        now = dt.datetime.now(dt.timezone.utc)
        old = repo.save_snapshot(dataclasses.replace(today, time=(now - dt.timedelta(days=40)).isoformat(), id=""))
        ahead = repo.save_snapshot(dataclasses.replace(today, time=(now + dt.timedelta(days=3 * 365)).isoformat(),
                                                       id=""))
    finally:
        repo.close()
    res = cli("forget", "--keep-within", "30d", "--json")
    group = res.json()["groups"][0]
    assert {s["id"] for s in group["keep"]} == {today.id, ahead}
    assert [s["id"] for s in group["remove"]] == [old]
    assert {s["id"] for s in cli("snapshots", "--json").json()} == {today.id, ahead}
