"""Naming snapshots on the command line: what a command that reads one says about the one it took."""

from __future__ import annotations

import dataclasses

from tuckbox.testing.crash import Cli, local_storage, open_repo
from tuckbox.types import ObjectType


def test_a_checkpoint_read_by_ls_dump_diff_or_restore_is_pointed_out(tmp_path):
    """A checkpoint holds only what its backup had stored when it stopped; restoring one used to look like
    restoring a complete backup ('restored snapshot X: 0 files ...', exit 0, nothing said)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("stored\n")
    cli = Cli(tmp_path, local_storage(tmp_path / "repo"))
    cli("init")
    cli("backup", str(src))
    repo = open_repo(cli.storage, cli.passphrase, tmp_path / "other-cache")
    try:
        (complete,) = repo.snapshots()
        checkpoint = repo.save_snapshot(dataclasses.replace(complete, partial=True, id=""))
        repo.backend.remove(ObjectType.SNAPSHOT, complete.id)  # no backup has finished: 'latest' is the checkpoint
    finally:
        repo.close()
    note = f"'latest' is snapshot {checkpoint[:8]}, a checkpoint, saved at "
    for args in (("ls", "latest"), ("dump", "latest", str(src / "f")), ("diff", "latest", "latest"),
                 ("restore", "latest", "--target", str(tmp_path / "t1"))):
        res = cli(*args)
        assert res.err.count(note) == 1, (args, res.err)
        assert "by a backup that had not finished (no backup has finished yet): it holds only what that backup " \
               "had stored by then" in res.err
        assert res.err.startswith("warning: ")
    assert (tmp_path / "t1" / src.relative_to("/") / "f").read_text() == "stored\n"
    summary = cli("restore", checkpoint[:8], "--target", str(tmp_path / "t2"), "--json").lines()[-1]
    assert summary["type"] == "summary" and summary["partial"] is True
    # with a complete backup, 'latest' is that one (nothing said); the checkpoint named by its id is pointed out
    cli("backup", str(src))
    assert "checkpoint" not in cli("ls", "latest").err
    assert cli("restore", "latest", "--target", str(tmp_path / "t3"), "--json").lines()[-1]["partial"] is False
    res = cli("ls", checkpoint[:8])
    assert f"warning: snapshot {checkpoint[:8]} is a checkpoint, saved at " in res.err
    assert "by a backup that had not finished: it holds only" in res.err
    # forgetting a checkpoint by its id is not reading it: nothing to point out
    assert "checkpoint, saved" not in cli("forget", checkpoint[:8]).err


def test_dump_of_what_is_not_a_file_names_the_restore_that_makes_it(tmp_path):
    """dump of a symlink said "use 'tuckbox restore --include' for directories"."""
    src = tmp_path / "my src"
    (src / "dir").mkdir(parents=True)
    (src / "link").symlink_to("dir")
    cli = Cli(tmp_path, local_storage(tmp_path / "repo"))
    cli("init")
    cli("backup", str(src))
    short = cli("snapshots", "--json").json()[0]["short_id"]
    for name, what in (("link", "symbolic link"), ("dir", "directory")):
        res = cli("dump", "latest", str(src / name), expect=2)
        assert res.out == ""
        restore = f"'tuckbox restore {short} --target DIR --include '{src / name}''"
        assert res.err == (f"tuckbox: error: {src / name} is a {what}, not a file; {restore} restores it\n" if name == "dir"
                           else f"tuckbox: error: {src / name} is a symbolic link to dir, not a file: dump {src / 'dir'}, "
                           f"or restore the link with {restore}\n")
        # the command it names does that
        cli("restore", short, "--target", str(tmp_path / name), "--include", str(src / name))
        restored = tmp_path / name / src.relative_to("/") / name
        assert restored.is_symlink() if name == "link" else restored.is_dir()
        assert not (tmp_path / name / src.relative_to("/") / ("dir" if name == "link" else "link")).exists()


def test_latest_among_several_hosts_is_pointed_out_and_chosen_by_host_tag_or_path(tmp_path):
    """Hosts that back up into one repository (write-only keys, deduplication across hosts) see each other's
    snapshots: 'restore latest' on one host took another host's newest snapshot, without a word, and no option
    chose whose. Now --host/--tag/--path choose, and an unfiltered 'latest' names the host it took."""
    a, b = tmp_path / "a", tmp_path / "b"
    for d, text in ((a, "from host alpha\n"), (b, "from host beta\n")):
        d.mkdir()
        (d / "f").write_text(text)
    cli = Cli(tmp_path, local_storage(tmp_path / "repo"))
    cli("init")
    cli("backup", "--host", "alpha", "--tag", "daily", str(a))
    cli("backup", "--host", "beta", str(b))
    snaps = cli("snapshots", "--json").json()
    alpha = next(s["short_id"] for s in snaps if s["host"] == "alpha")

    plain = cli("ls", "latest")
    assert str(b / "f") in plain.out
    assert plain.err == ("warning: 'latest' is snapshot " + next(s["short_id"] for s in snaps if s["host"] == "beta")
                         + " of host beta; the repository also holds snapshots of 1 other host: --host chooses whose\n")
    for filters in (("--host", "alpha"), ("--tag", "daily"), ("--path", str(a))):
        target = tmp_path / ("t" + filters[0])
        res = cli("restore", "latest", "--target", str(target), *filters)
        assert res.err == ""  # (chosen: nothing to point out)
        assert (target / a.relative_to("/") / "f").read_text() == "from host alpha\n"
        assert not (target / b.relative_to("/")).exists()
        assert cli("dump", "latest", str(a / "f"), *filters).out == "from host alpha\n"
    assert cli("diff", alpha, "latest", "--host", "alpha").out == "0 added, 0 removed, 0 modified\n"  # alpha: one snapshot

    missing = cli("ls", "latest", "--host", "gamma", expect=2)
    assert missing.err == f"tuckbox: error: no snapshot matches --host gamma in {tmp_path / 'repo'}; see 'tuckbox snapshots'\n"
    wrong = cli("ls", alpha, "--host", "beta", expect=2)
    assert wrong.err.startswith(f"tuckbox: error: snapshot {alpha} (host alpha) does not match --host beta;")
    assert len(wrong.err.splitlines()) == 1
