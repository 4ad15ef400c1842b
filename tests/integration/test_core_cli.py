"""End to end through the real CLI on a local repository: round trips, errors, tampering."""

from __future__ import annotations

import base64
import datetime
import json
import os
import shutil
import time
from pathlib import Path

from tuckbox.testing.trees import compare_trees, sample_tree

from .conftest import Tuckbox


def restored(target: Path, src: Path) -> Path:
    return Path(str(target) + str(src))


def test_sample_tree_round_trip(tb, tmp_path):
    src = tmp_path / "src"
    sample_tree(src)
    tb("init")
    backup = tb("backup", str(src), "--tag", "first", "--json")
    summary = [line for line in backup.out.splitlines() if '"summary"' in line]
    assert summary, backup.out
    snaps = tb("snapshots", "--json").json()
    assert len(snaps) == 1 and snaps[0]["tags"] == ["first"] and snaps[0]["paths"] == [str(src)]
    tb("restore", "latest", "--target", str(tmp_path / "r"))
    assert compare_trees(src, restored(tmp_path / "r", src)) == []
    # --json: progress lines, then the summary; the progress counts files as well as bytes
    lines = [json.loads(ln) for ln in tb("restore", "latest", "--target", str(tmp_path / "j"), "--json").out.splitlines()]
    assert [d["type"] for d in lines][-1] == "summary" and lines[-1]["files"] > 0
    status = [d for d in lines if d["type"] == "status"]
    assert status and 0 < status[0]["files"] <= lines[-1]["files"], lines
    assert compare_trees(src, restored(tmp_path / "j", src)) == []
    check = tb("check", "--read-data", "--json").json()
    assert check["ok"] and check["errors"] == []
    # dump gives the exact bytes of one file
    some_file = next(p for p in sorted(src.rglob("*")) if p.is_file() and not p.is_symlink() and p.stat().st_size > 0)
    assert tb("dump", "latest", str(some_file)).raw == some_file.read_bytes()
    listing = tb("ls", "latest", str(src)).out.splitlines()
    assert str(some_file) in listing


def test_unchanged_hardlinks_are_not_read_again(tb, tmp_path):
    """Every name of a file with several links is in the files cache after one backup: the next reads
    nothing and counts none of them as new (the second name used to be read again, once)."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a").write_bytes(os.urandom(5000))
    os.link(src / "a", src / "b")
    os.link(src / "a", src / "sub" / "c")
    (src / "plain").write_bytes(b"x" * 100)
    past = 1_600_000_000_000_000_000  # (the files cache trusts no file modified within a second of the read)
    for p in ("a", "plain"):
        os.utime(src / p, ns=(past, past))
    time.sleep(1.05)  # (nor one whose inode changed, by the links, within a second)

    def summary() -> dict:
        return json.loads([ln for ln in tb("backup", str(src), "--json").out.splitlines() if '"summary"' in ln][-1])

    tb("init")
    first = summary()
    assert (first["files_new"], first["files_unmodified"], first["bytes_read"]) == (4, 0, 5100), first  # 4 new names
    second = summary()
    assert (second["files_new"], second["files_changed"], second["files_unmodified"]) == (0, 0, 4), second
    assert second["bytes_read"] == 0
    tb("restore", "latest", "--target", str(tmp_path / "r"))
    assert compare_trees(src, restored(tmp_path / "r", src)) == []


def test_incremental_diff_and_prefix_ids(tb, tmp_path):
    src = tmp_path / "data"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "b.txt").write_text("beta\n")
    tb("init")
    first = [ln for ln in tb("backup", str(src), "--json").out.splitlines() if '"summary"' in ln][0]
    (src / "a.txt").write_text("alpha changed\n")
    (src / "c.txt").write_text("new\n")
    (src / "sub" / "b.txt").unlink()
    tb("backup", str(src))
    snaps = tb("snapshots", "--json").json()
    assert len(snaps) == 2
    d = tb("diff", snaps[0]["short_id"][:6], "latest", "--json").json()
    changes = {(c["change"], c["path"]) for c in d["changes"]}
    assert ("modified", str(src / "a.txt")) in changes
    assert ("added", str(src / "c.txt")) in changes
    assert ("removed", str(src / "sub" / "b.txt")) in changes
    assert (d["added"], d["removed"], d["modified"]) == (1, 1, 1) and len(d["changes"]) == 3
    same = tb("diff", "latest", "latest", "--json").json()  # (streamed: an empty list is still valid JSON)
    assert same["changes"] == [] and (same["added"], same["removed"], same["modified"]) == (0, 0, 0)
    assert same["first"] == same["second"] == snaps[1]["id"]
    assert tb("diff", snaps[0]["short_id"], "latest").out.splitlines()[-1] == "1 added, 1 removed, 1 modified"
    # the old snapshot still restores the old content
    tb("restore", snaps[0]["short_id"], "--target", str(tmp_path / "old"))
    assert (restored(tmp_path / "old", src) / "a.txt").read_text() == "alpha\n"
    assert (restored(tmp_path / "old", src) / "sub" / "b.txt").read_text() == "beta\n"
    assert '"files_new": 2' in first


def test_restore_include_exclude(tb, tmp_path):
    src = tmp_path / "t"
    (src / "keep").mkdir(parents=True)
    (src / "skip").mkdir()
    (src / "keep" / "x.txt").write_text("x")
    (src / "keep" / "y.log").write_text("y")
    (src / "skip" / "z.txt").write_text("z")
    tb("init")
    tb("backup", str(src))
    tb("restore", "latest", "--target", str(tmp_path / "r"), "--include", str(src / "keep"), "--exclude", "*.log")
    out = restored(tmp_path / "r", src)
    assert (out / "keep" / "x.txt").read_text() == "x"
    assert not (out / "keep" / "y.log").exists()
    assert not (out / "skip").exists()


def _one_line_error(res, *words):
    lines = [ln for ln in res.err.splitlines() if ln.strip()]
    assert len(lines) == 1, res.err
    for w in words:
        assert w in lines[0], lines[0]


def test_errors_are_one_line_with_exit_codes(tb, tmp_path):
    src = tmp_path / "s"
    src.mkdir()
    (src / "f").write_text("f")
    # a subcommand's usage error points to its own help; an empty --target is not the current directory
    _one_line_error(tb("restore", "latest", expect=2), "--target", "tuckbox restore --help")
    _one_line_error(tb("restore", "latest", "--target", "", expect=2), "--target needs a directory")
    # missing repository
    _one_line_error(tb("snapshots", expect=1), "no repository at", "is it mounted?", "tuckbox init")
    tb("init")
    # init twice
    _one_line_error(tb("init", expect=1), "already exists")
    _one_line_error(tb("init", env={"TUCKBOX_PASSWORD_FILE": ""}, expect=1), "already exists")  # before asking
    tb("backup", str(src))
    # wrong passphrase
    bad = tmp_path / "bad"
    bad.write_text("wrong\n")
    _one_line_error(tb("snapshots", env={"TUCKBOX_PASSWORD_FILE": str(bad)}, expect=1), "wrong passphrase")
    # init makes a new key: it does not take an existing one (it used to ignore them and ask for a passphrase)
    for flag in ("--key-file", "--recover"):
        _one_line_error(tb("-r", str(tmp_path / "new"), "init", flag, str(bad), expect=2), f"{flag} opens an existing")
    assert not (tmp_path / "new").exists()
    # a --key-file that is not a key file: the message names it
    _one_line_error(tb("--key-file", str(bad), "snapshots", expect=1), f"--key-file {bad}: not a tuckbox key file")
    # a directory that is not a repository
    other = tmp_path / "notrepo"
    other.mkdir()
    _one_line_error(tb("-r", str(other), "snapshots", expect=1), "not a tuckbox repository")
    # a file (or a device) where the repository should be: said at once, no retries, nothing asked
    afile = tmp_path / "afile"
    afile.write_text("x\n")
    for path in (str(afile), "/dev/null"):
        for args in (("init",), ("snapshots",), ("backup", str(src))):
            started = time.monotonic()
            res = tb("-r", path, *args, env={"TUCKBOX_PASSWORD_FILE": ""}, expect=1)
            _one_line_error(res, path, "exists and is not a directory", "not (and cannot become) a tuckbox repository")
            assert time.monotonic() - started < 10
    assert afile.read_text() == "x\n"
    # unknown snapshot id, malformed id
    _one_line_error(tb("restore", "deadbeef", "--target", str(tmp_path / "x"), expect=2), "no snapshot deadbeef")
    _one_line_error(tb("ls", "zz", expect=2), "not a snapshot id")
    # the message quotes what was typed: 'LATEST' is not 'latest'
    _one_line_error(tb("ls", "LATEST", expect=2), "'LATEST' is not a snapshot id; use 'latest' or")
    # target that exists and is not empty
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something").write_text("keep me")
    _one_line_error(tb("restore", "latest", "--target", str(tmp_path / "full"), expect=2), "exists and is not empty")
    assert (tmp_path / "full" / "something").read_text() == "keep me"
    # backing up a path that does not exist
    _one_line_error(tb("backup", str(tmp_path / "nope"), expect=2), "does not exist")
    # no repository configured, bad option
    env = {"TUCKBOX_REPOSITORY": ""}
    _one_line_error(tb("snapshots", env=env, expect=2), "no repository given")
    _one_line_error(tb("backup", expect=2), "usage error")
    # no passphrase source and no terminal
    _one_line_error(tb("snapshots", env={"TUCKBOX_PASSWORD_FILE": ""}, expect=2), "passphrase is needed")
    # a malformed --lock-wait fails every command, also those that take no lock
    for args in (("snapshots", "--lock-wait", "abc"), ("--lock-wait", "abc", "prune", "--dry-run")):
        _one_line_error(tb(*args, expect=2), "argument --lock-wait: 'abc' is not a duration")


def test_empty_arguments_are_usage_errors(tb, tmp_path):
    """An empty path, file or repository argument (an unset "$DIR" in a script) is a usage error naming the
    argument; it used to mean the current directory (backup, forget --path, recovery-kit --output, which
    wrote the unprotected shares there), everything (ls), or "not given" (-r fell back to
    $TUCKBOX_REPOSITORY, --key-file and --password-file to the other passphrase sources)."""
    src = tmp_path / "s"
    src.mkdir()
    (src / "f").write_text("f")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "here").write_text("not to be backed up")
    tb("init")
    tb("backup", str(src))
    for args, name in (
        (("backup", str(src), ""), "argument PATH"),
        (("backup", str(src), "--exclude-file", ""), "argument --exclude-file"),
        (("ls", "latest", ""), "argument path"),
        (("dump", "latest", ""), "argument path"),
        (("forget", "--keep-last", "1", "--path", ""), "argument --path"),
        (("rewrite", "--exclude", "f", "--path", ""), "argument --path"),
        (("-r", "", "snapshots"), "argument -r/--repo"),
        (("snapshots", "--key-file", ""), "argument --key-file"),
        (("--password-file", "", "snapshots"), "argument --password-file"),
        (("recovery-kit", "--output", ""), "argument --output"),
        (("backup", str(src), "--exclude", ""), "argument --exclude"),  # (not: exclude everything)
        (("restore", "latest", "--target", str(tmp_path / "t"), "--include", ""), "argument --include"),
        (("find", ""), "argument PATTERN"),
        (("backup", str(src), "--tag", ""), "argument --tag"),
        (("backup", str(src), "--tag", "two\nlines"), "argument --tag"),  # (it broke the snapshots table)
    ):
        _one_line_error(tb(*args, expect=2, cwd=cwd), name, "empty")
    _one_line_error(tb("backup", str(src), "--host", "evil\x1b]0;title\x07", expect=2, cwd=cwd), "argument --host",
                    "printable text on one line")
    for pattern in ("/", "*", "/*"):
        _one_line_error(tb("backup", str(src), "--exclude", pattern, expect=2, cwd=cwd), "would leave out everything")
    assert sorted(p.name for p in cwd.iterdir()) == ["here"]
    assert len(tb("snapshots", "--json").json()) == 1


def test_passphrase_never_in_output(tb, tmp_path):
    secret = "s3cret-phrase-4711"
    tb.passfile.write_text(secret + "\n")
    src = tmp_path / "s"
    src.mkdir()
    (src / "f").write_text("f")
    outputs = [tb("init"), tb("backup", str(src), "--json"), tb("snapshots", "--json"), tb("check", "--json")]
    outputs.append(tb("snapshots", env={"TUCKBOX_PASSWORD_FILE": "", "TUCKBOX_PASSWORD_COMMAND": "echo wrong-" + secret}, expect=1))
    for res in outputs:
        assert secret not in res.out and secret not in res.err
    for key in (tmp_path / "repo" / "keys").iterdir():
        assert secret.encode() not in key.read_bytes()


def test_password_command_and_env(tb, tmp_path):
    tb("init")
    env = {"TUCKBOX_PASSWORD_FILE": "", "TUCKBOX_PASSWORD_COMMAND": f"cat {tb.passfile}"}
    tb("snapshots", env=env)
    env = {"TUCKBOX_PASSWORD_FILE": "", "TUCKBOX_PASSWORD": tb.passfile.read_text().strip()}
    tb("snapshots", env=env)
    tb("snapshots", "--password-file", str(tb.passfile), env={"TUCKBOX_PASSWORD_FILE": ""})
    empty = tmp_path / "empty-pw"
    empty.write_text("\n")
    _one_line_error(tb("snapshots", env={"TUCKBOX_PASSWORD_FILE": str(empty)}, expect=2), f"{empty} is empty")
    _one_line_error(tb("snapshots", env={"TUCKBOX_PASSWORD_FILE": "", "TUCKBOX_PASSWORD_COMMAND": "true"}, expect=2),
                    "printed no passphrase")


def test_a_password_flag_beats_the_environment_and_two_flags_are_refused(tb, tmp_path):
    """README's order: --password-file, --password-command, then $TUCKBOX_PASSWORD_FILE, ... A
    --password-command used to lose to an exported $TUCKBOX_PASSWORD_FILE: 'init' then made the repository
    with the file's passphrase, not the one the command line named."""
    other = tmp_path / "other-pw"
    other.write_text("the passphrase meant for this repository\n")
    tb("init", "--password-command", f"cat {other}")  # $TUCKBOX_PASSWORD_FILE (tb.passfile) is set too
    tb("snapshots", "--password-file", str(other), env={"TUCKBOX_PASSWORD_FILE": ""})
    assert "wrong passphrase" in tb("snapshots", expect=1).err  # the environment's file is not its passphrase
    tb("snapshots", "--password-command", f"cat {other}")
    env = {"TUCKBOX_PASSWORD_FILE": "", "TUCKBOX_PASSWORD_COMMAND": f"cat {tb.passfile}"}
    tb("snapshots", "--password-file", str(other), env=env)
    _one_line_error(tb("snapshots", "--password-file", str(other), "--password-command", f"cat {other}", expect=2),
                    "either --password-file or --password-command")
    env = {"TUCKBOX_PASSWORD_FILE": str(other), "TUCKBOX_PASSWORD_COMMAND": f"cat {tb.passfile}"}
    tb("snapshots", env=env)  # in the environment, the file comes first


def test_password_file_with_windows_line_ending(tb, tmp_path):
    """One "\r\n" at the end of a password file is a line ending, like "\n" (it used to be read as part of
    the passphrase: 'wrong passphrase'); a repository made when it was still read so opens as before."""
    tb("init")
    crlf = tmp_path / "crlf"
    crlf.write_bytes(tb.passfile.read_text().rstrip("\n").encode() + b"\r\n")
    tb("snapshots", env={"TUCKBOX_PASSWORD_FILE": str(crlf)})
    tb("snapshots", env={"TUCKBOX_PASSWORD_FILE": "", "TUCKBOX_PASSWORD_COMMAND": f"cat {crlf}"})
    # a repository whose passphrase ends in "\r" (made from a "\r\n" file by an older tuckbox)
    (tmp_path / "old").mkdir()
    old = Tuckbox(tmp_path / "old")
    old.passfile.write_bytes(b"pw-from-windows\r\r\n")  # (read now as "pw-from-windows\r")
    old("init")
    old.passfile.write_bytes(b"pw-from-windows\r\n")
    old("snapshots")
    old.passfile.write_bytes(b"pw-from-windows\n")
    assert "wrong passphrase" in old("snapshots", expect=1).err


def test_passphrase_that_is_not_utf8_is_its_raw_bytes_from_every_source(tb, tmp_path):
    """A passphrase is bytes: one that is not UTF-8 opens the repository from $TUCKBOX_PASSWORD as from a
    password file or command (the variable used to fail with an internal error)."""
    tb.passfile.write_bytes(b"abc\xff\n")
    tb("init")
    tb("snapshots", env={"TUCKBOX_PASSWORD_FILE": "", "TUCKBOX_PASSWORD": os.fsdecode(b"abc\xff")})
    tb("snapshots", env={"TUCKBOX_PASSWORD_FILE": "", "TUCKBOX_PASSWORD_COMMAND": f"cat {tb.passfile}"})
    wrong = tb("snapshots", env={"TUCKBOX_PASSWORD_FILE": "", "TUCKBOX_PASSWORD": os.fsdecode(b"abd\xff")}, expect=1)
    assert "wrong passphrase" in wrong.err and "abd" not in wrong.err


def test_write_order_leaves_only_complete_objects(tb, tmp_path):
    """After a backup, every snapshot's trees and chunks are indexed and every index's packs exist."""
    src = tmp_path / "s"
    src.mkdir()
    for i in range(30):
        (src / f"f{i}").write_bytes(os.urandom(50_000))
    tb("init")
    tb("backup", str(src))
    repo = tmp_path / "repo"
    assert not list(repo.rglob(".tmp-*"))
    check = tb("check", "--json").json()
    assert check["ok"] and check["counts"]["snapshots"] == 1


def test_huge_sparse_file_costs_only_its_data(tb, tmp_path):
    src = tmp_path / "s"
    src.mkdir()
    big = src / "sparse.img"
    with open(big, "wb") as f:
        f.truncate(10 << 30)  # 10 GiB apparent
        f.seek(5 << 30)
        f.write(os.urandom(1 << 20))  # 1 MiB of data in the middle
    tb("init")
    line = [ln for ln in tb("backup", str(src), "--json").out.splitlines() if '"summary"' in ln][0]
    import json

    summary = json.loads(line)
    assert summary["bytes_total"] == (10 << 30)
    assert summary["bytes_read"] <= 2 << 20  # only the data extent was read
    tb("restore", "latest", "--target", str(tmp_path / "r"))
    out = Path(str(tmp_path / "r") + str(big))
    st = out.stat()
    assert st.st_size == 10 << 30
    assert st.st_blocks * 512 <= 8 << 20  # holes stay holes
    with open(out, "rb") as f, open(big, "rb") as g:
        f.seek(5 << 30)
        g.seek(5 << 30)
        assert f.read(1 << 20) == g.read(1 << 20)


def test_unknown_format_version_or_feature_is_refused(tb, tmp_path, monkeypatch):
    import json

    import dataclasses

    from tuckbox.backends.local import LocalBackend
    from tuckbox.repository.repo import Repository

    tb("init")
    cfg_path = Path(tb.repo) / "config"
    original = cfg_path.read_bytes()
    doc = json.loads(original)
    cfg_path.write_text(json.dumps({**doc, "version": 2}))  # (a newer format: its MAC cannot be checked)
    res = tb("snapshots", expect=1)
    assert "format version 2" in res.err and "upgrade tuckbox" in res.err
    # an unknown feature is told once the config's MAC holds, as a newer tuckbox writes it (else: damaged)
    cfg_path.write_bytes(original)
    monkeypatch.setenv("TUCKBOX_CACHE_DIR", str(tmp_path / "test-cache"))
    repo = Repository.open(LocalBackend(tb.repo), lambda: tb.passfile.read_bytes().rstrip(b"\n"), load_index=False)
    cfg_path.write_bytes(dataclasses.replace(repo.config, features=["shiny-new-thing"]).encode(repo.keys.config_key))
    repo.close()
    res = tb("snapshots", expect=1)
    assert "shiny-new-thing" in res.err and "upgrade tuckbox" in res.err
    cfg_path.write_text(json.dumps({**doc, "features": ["shiny-new-thing"]}))  # the same, its MAC not updated
    assert "failed authentication" in tb("snapshots", expect=1).err
    cfg_path.write_bytes(original)
    tb("snapshots")


def test_output_that_cannot_be_written_is_a_one_line_error(tb, tmp_path):
    """Standard output on a full device (/dev/full): exit 1 and one line naming standard output, whichever
    command was printing (dump streams a file, ls and --json print as they go); a closed pipe is quiet."""
    import subprocess
    import sys

    src = tmp_path / "s"
    src.mkdir()
    data = os.urandom(3 << 20)
    (src / "f.bin").write_bytes(data)
    tb("init")
    tb("backup", str(src))

    def run(*args: str, stdout) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tuckbox.cli.main", *args], env=tb.env, stdin=subprocess.DEVNULL,
                              stdout=stdout, stderr=subprocess.PIPE, timeout=600)

    with open("/dev/full", "wb") as full:
        for args in (("dump", "latest", str(src / "f.bin")), ("ls", "latest"), ("--json", "snapshots"), ("stats",)):
            p = run(*args, stdout=full)
            err = p.stderr.decode()
            lines = [ln for ln in err.splitlines() if ln.strip()]
            assert p.returncode == 1 and len(lines) == 1, (args, p.returncode, err)
            assert lines[0].startswith("tuckbox: error: cannot write to standard output: No space left"), lines[0]
    # a reader that stops early (| head) ends the command quietly
    p = subprocess.Popen([sys.executable, "-m", "tuckbox.cli.main", "dump", "latest", str(src / "f.bin")],
                         env=tb.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stdout.read(10) == data[:10]
    p.stdout.close()
    assert p.wait(timeout=600) == 1 and p.stderr is not None and p.stderr.read() == b""
    # and the output itself is intact when it can be written
    assert tb("dump", "latest", str(src / "f.bin")).raw == data


def test_closed_standard_output(tb, tmp_path):
    """Started with standard output closed (``>&-``): a backup or restore runs and exits 0 (what it prints only
    reports on what it did); a command whose output is its purpose stops with one line (both used to end in
    an internal error, the backup after saving its snapshot)."""
    import subprocess
    import sys

    src = tmp_path / "s"
    src.mkdir()
    (src / "a.txt").write_text("hello\n")
    tb("init")

    def closed(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tuckbox.cli.main", *args], env=tb.env, stdin=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, preexec_fn=lambda: os.close(1), timeout=600)

    p = closed("backup", str(src))
    assert p.returncode == 0 and p.stderr == b"", p.stderr
    assert len(tb("snapshots", "--json").json()) == 1
    p = closed("restore", "latest", "--target", str(tmp_path / "r"))
    assert p.returncode == 0 and p.stderr == b"", p.stderr
    assert restored(tmp_path / "r", src / "a.txt").read_text() == "hello\n"
    for args in (("dump", "latest", str(src / "a.txt")), ("ls", "latest"), ("snapshots",),
                 ("forget", "--keep-last", "1", "--dry-run")):
        p = closed(*args)
        lines = p.stderr.decode().splitlines()
        assert p.returncode == 1 and len(lines) == 1, (args, p.returncode, lines)
        assert lines[0].startswith("tuckbox: error: cannot write to standard output: it is closed"), lines[0]
    # standard error closed: an error message is not written to standard output instead
    p = subprocess.run([sys.executable, "-m", "tuckbox.cli.main", "ls", "latest", "/nope"], env=tb.env,
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, preexec_fn=lambda: os.close(2), timeout=600)
    assert p.returncode == 2 and p.stdout == b"", p.stdout


def test_repository_and_cache_inside_the_source_are_left_out(tmp_path):
    """Backing up a tree that holds the (local) repository and tuckbox's cache: the repository's object
    directories and the cache do not go into the snapshot, so no run stores the previous run's packs again;
    everything else, including the user's files next to the repository's, is backed up as usual."""
    import time

    from .conftest import Tuckbox

    src = tmp_path / "disk"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "a.bin").write_bytes(os.urandom(2 << 20))
    cache = src / ".cache" / "tuckbox"
    tb = Tuckbox(tmp_path, repo=str(src))  # a repository made at the top of the disk, next to the user's files
    tb.env["TUCKBOX_CACHE_DIR"] = str(cache)
    tb("init")
    (src / "notes.txt").write_text("mine\n")
    time.sleep(1.1)  # (files changed within a second of being read are read again by the next run)
    first = [json.loads(line) for line in tb("--json", "backup", str(src)).out.splitlines()][-1]
    repo_id = next(cache.iterdir()).name
    own = [str(src / d) for d in ("data", "index", "keys", "locks", "snapshots")] + [str(cache / repo_id)]
    assert sorted(first["skipped_own"]) == sorted(own)
    second = [json.loads(line) for line in tb("--json", "backup", str(src)).out.splitlines()][-1]
    assert second["bytes_new_raw"] < 64 << 10, second  # only trees: not the first run's packs
    paths = [e["path"] for e in tb("--json", "ls", "latest", str(src)).json()["entries"]]
    assert str(src / "docs" / "a.bin") in paths and str(src / "notes.txt") in paths
    assert not [p for p in paths if p.startswith(tuple(d + "/" for d in own))]
    tb("restore", "latest", "--target", str(tmp_path / "r"))
    got = tmp_path / "r" / str(src).lstrip("/")
    assert (got / "docs" / "a.bin").read_bytes() == (src / "docs" / "a.bin").read_bytes()
    assert (got / "notes.txt").read_text() == "mine\n" and (got / "config").is_file()
    assert not (got / "data").exists() and not (got / ".cache" / "tuckbox" / repo_id).exists()


def test_pseudo_files_whose_size_says_zero(tb):
    """/proc files say size 0 and have content (and /proc/sys refuses one read of 4 MiB): their content is
    stored, with no warning that they changed while being read."""
    files = ["/proc/sys/kernel/ostype", "/proc/sys/kernel/osrelease"]
    want = {f: Path(f).read_bytes() for f in files}
    assert all(os.stat(f).st_size == 0 and want[f] for f in files)
    tb("init")
    res = tb("backup", *files)
    assert "warning" not in res.err, res.err
    for f in files:
        assert tb("dump", "latest", f).raw == want[f]


def test_trees_deeper_than_the_interpreter_recursion_limit(tb, tmp_path):
    """A directory 1,200 levels deep (the longest path allows ~2,000) backs up, lists, diffs, checks, dumps
    and restores: every walk over the trees goes without recursion (ls, diff and check failed here with an
    internal RecursionError)."""
    src = tmp_path / "deep"
    depth = 1200
    leaf = Path(str(src) + "/d" * depth)
    leaf.mkdir(parents=True)
    (leaf / "f").write_bytes(b"deep down\n")
    tb("init")
    tb("backup", str(src))
    (leaf / "f").write_bytes(b"deep down, changed\n")
    (leaf / "new").write_bytes(b"new\n")
    tb("backup", str(src))
    listing = tb("ls", "latest").out.splitlines()
    assert str(leaf / "f") in listing and str(leaf / "new") in listing
    assert len(listing) == len(str(tmp_path).strip("/").split("/")) + depth + 3  # parents, src, the dirs, 2 files
    first = tb("snapshots", "--json").json()[0]["short_id"]
    changes = {(c["change"], c["path"]) for c in tb("diff", first, "latest", "--json").json()["changes"]}
    assert changes == {("modified", str(leaf / "f")), ("added", str(leaf / "new"))}
    check = tb("check", "--read-data", "--json").json()
    assert check["ok"] and check["errors"] == []
    assert tb("dump", first, str(leaf / "f")).raw == b"deep down\n"
    assert [m["path"] for m in tb("find", "--json", "new").json()["matches"]] == [str(leaf / "new")]
    tb("restore", "latest", "--target", str(tmp_path / "r"))
    assert compare_trees(src, restored(tmp_path / "r", src)) == []


def test_backup_says_when_its_cache_cannot_be_used(tb, tmp_path):
    """Without a usable cache a backup still succeeds, but reads every file again and cannot resume its
    uploads: it says so, once, with what to do (it used to say nothing)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"data\n")
    (tmp_path / "plain-file").write_bytes(b"")
    env = {"TUCKBOX_CACHE_DIR": str(tmp_path / "plain-file" / "cache")}  # under a file: cannot be made
    tb("init", env=env)
    res = tb("backup", str(src), env=env)
    notices = [ln for ln in res.err.splitlines() if "cache directory" in ln]
    assert len(notices) == 1 and "Not a directory" in notices[0] and "TUCKBOX_CACHE_DIR" in notices[0], res.err
    assert "cache directory" not in tb("backup", str(src)).err  # a usable cache: no notice
    tb("restore", "latest", "--target", str(tmp_path / "r"), env=env)
    assert (restored(tmp_path / "r", src) / "f").read_bytes() == b"data\n"


def test_backup_of_a_symlink_says_that_only_the_link_is_kept(tb, tmp_path):
    """A path given on the command line that is a symlink is stored as the link (like restic and tar), and
    the backup says so with the target to give instead: a scheduled backup of a symlinked folder must not
    quietly keep nothing but a link."""
    real = tmp_path / "real"
    real.mkdir()
    (real / "f").write_bytes(b"data\n")
    link = tmp_path / "link"
    link.symlink_to(real)
    tb("init")
    res = tb("backup", str(link) + "/")
    notes = [ln for ln in res.err.splitlines() if "symbolic link" in ln]
    assert len(notes) == 1 and str(real) in notes[0], res.err
    entries = {e["path"]: e["type"] for e in tb("ls", "--json", "latest").json()["entries"]}
    assert entries[str(link)] == "symlink" and str(link / "f") not in entries
    assert "symbolic link" not in tb("backup", str(real)).err


def test_names_with_control_characters_are_listed_one_per_line(tb, tmp_path):
    """A name holding a newline, an escape sequence or a right-to-left override is shown escaped in text
    (one line per entry, nothing a terminal acts on) and exactly in JSON; it restores byte for byte."""
    src = tmp_path / "src"
    src.mkdir()
    names = [b"new\nline", b"\x1b[31mred", "\u202etxt.exe".encode(), b"tab\there", b"bad\xff"]
    for n in names:
        with open(os.path.join(os.fsencode(src), n), "wb") as f:
            f.write(n)
    tb("init")
    tb("backup", str(src))
    lines = tb("ls", "latest", str(src)).out.splitlines()
    assert len(lines) == 1 + len(names), lines
    assert f"{src}/new\\x0aline" in lines and f"{src}/\\x1b[31mred" in lines and f"{src}/\\u202etxt.exe" in lines
    assert all(ln.isprintable() for ln in lines)
    exact = {e["path"] for e in tb("ls", "--json", "latest", str(src)).json()["entries"]}
    assert f"{src}/new\nline" in exact and f"{src}/\u202etxt.exe" in exact and f"{src}/bad\\xff" in exact
    tb("restore", "latest", "--target", str(tmp_path / "r"))
    assert sorted(os.listdir(os.fsencode(restored(tmp_path / "r", src)))) == sorted(names)


def test_a_byte_and_its_escape_written_out_are_told_apart(tb, tmp_path):
    """A name holding the byte 0xFF and one holding the four characters \\xff were shown alike by ls, find
    and diff, in text and in JSON: the backslash is now doubled on screen, and JSON gives a name that is not
    UTF-8 its exact bytes in path_bytes."""
    src = tmp_path / "src"
    src.mkdir()
    byte, text = b"x\xff", b"x\\xff"
    for n in (byte, text):
        with open(os.path.join(os.fsencode(src), n), "wb") as f:
            f.write(n)
    tb("init")
    tb("backup", str(src))
    assert set(tb("ls", "latest", str(src)).out.splitlines()[1:]) == {f"{src}/x\\xff", f"{src}/x\\\\xff"}
    entries = tb("ls", "--json", "latest", str(src)).json()["entries"][1:]
    exact = {base64.b64decode(e["path_bytes"]) if "path_bytes" in e else e["path"].encode() for e in entries}
    assert exact == {bytes(src) + b"/" + byte, bytes(src) + b"/" + text}
    found = tb("find", "--json", "x*").json()["matches"]
    assert sorted("path_bytes" in m for m in found) == [False, True]
    shown = {ln.rsplit("  ", 1)[1] for ln in tb("find", "x*").out.splitlines()[:-1]}
    assert shown == {f"{src}/x\\xff", f"{src}/x\\\\xff"}
    os.remove(os.path.join(os.fsencode(src), byte))
    tb("backup", str(src))
    snaps = [s["id"] for s in tb("snapshots", "--json").json()]
    changes = tb("diff", "--json", *snaps).json()["changes"]
    assert [(c["change"], base64.b64decode(c["path_bytes"])) for c in changes] == [("removed", bytes(src) + b"/" + byte)]
    assert tb("diff", *snaps).out.splitlines()[0] == f"-  {src}/x\\xff"


def test_a_name_is_given_back_as_ls_shows_it(tb, tmp_path):
    """ls, find and diff show a byte that is not UTF-8 as \\xff; dump, ls, restore --include and --path took
    only the raw bytes, so such a file could not be chosen by the name the user sees. Both work now, and a
    name holding a backslash is still found as it is typed."""
    src = tmp_path / "sub\\xff"  # (the directory's own name holds a backslash)
    os.makedirs(os.path.join(os.fsencode(src), b"d\xfe"))
    for name, data in ((b"x\xff", b"byte"), (b"x\\xff", b"text"), (b"d\xfe/in", b"inside")):
        with open(os.path.join(os.fsencode(src), name), "wb") as f:
            f.write(data)
    tb("init")
    tb("backup", str(src))
    shown = tb("ls", "latest").out.splitlines()
    base = f"{tmp_path}/sub\\\\xff"  # as ls shows the directory
    assert f"{base}/x\\xff" in shown and f"{base}/x\\\\xff" in shown and f"{base}/d\\xfe/in" in shown
    assert tb("dump", "latest", f"{base}/x\\xff").raw == b"byte"
    assert tb("dump", "latest", f"{base}/x\\\\xff").raw == b"text"
    assert tb("dump", "latest", f"{src}/x\\xff").raw == b"text"  # typed as on disk: each backslash itself
    assert tb("ls", "latest", f"{base}/d\\xfe").out.splitlines() == [f"{base}/d\\xfe", f"{base}/d\\xfe/in"]
    assert tb("ls", "--path", base, "latest", f"{base}/d\\xfe/in").out.splitlines() == [f"{base}/d\\xfe/in"]
    missing = tb("dump", "latest", f"{base}/x\\xfd", expect=2).err
    assert f"{base}/x\\xfd is not in snapshot" in missing
    tb("restore", "latest", "--target", str(tmp_path / "r"), "--include", "d\\xfe")
    assert os.listdir(os.fsencode(restored(tmp_path / "r", src))) == [b"d\xfe"]
    found = tb("find", f"{base}/d\\xfe/in").out.splitlines()
    assert len(found) == 2 and found[0].endswith(f"{base}/d\\xfe/in")


def test_names_that_are_not_utf8_in_json_and_messages(tb, tmp_path):
    """A byte that is not UTF-8 in a path is written as \\xff in forget's JSON (as in every other command's;
    it used to be a lone surrogate, which strict JSON parsers reject) and in error messages."""
    src = Path(os.fsdecode(bytes(tmp_path) + b"/sp ace\xff"))
    src.mkdir()
    (src / "f").write_text("f")
    tb("init")
    tb("backup", str(src))
    raw = tb("forget", "--keep-last", "1", "--dry-run", "--json").raw
    assert b"\\ud" not in raw
    doc = json.loads(raw.decode("utf-8", "strict"))
    assert doc["groups"][0]["key"]["paths"] == [str(tmp_path) + "/sp ace\\xff"]
    assert [s["paths"] for s in tb("snapshots", "--json").json()] == [[str(tmp_path) + "/sp ace\\xff"]]
    nope = os.fsdecode(b"/nope\xfd")
    for args, shown in ((("ls", "latest", nope), "/nope\\xfd is not in snapshot"),
                        (("-r", nope, "snapshots"), "no repository at /nope\\xfd"),
                        (("--key-file", nope, "snapshots"), "cannot read the key file /nope\\xfd"),
                        (("dump", "latest", str(src)), "sp ace\\xff is a dir")):
        res = tb(*args, expect=None)
        assert res.code in (1, 2) and shown in res.err and "\\udc" not in res.err and "\udcfd" not in res.err, res.err


def test_exclude_patterns_with_a_trailing_slash_or_a_relative_path(tb, tmp_path):
    """`--exclude '.cache/'` and `--exclude 'a/tmp'` exclude what they name (both silently excluded nothing)."""
    src = tmp_path / "src"
    for d in ("a/.cache", "a/tmp", "b/tmp", "b/keep"):
        (src / d).mkdir(parents=True)
        (src / d / "f").write_bytes(d.encode())
    tb("init")
    tb("backup", str(src), "--exclude", f"{src}/a/.cache/", "--exclude", "a/tmp")
    listed = set(tb("ls", "latest", str(src)).out.splitlines())
    assert f"{src}/a/.cache" not in listed and f"{src}/a/tmp" not in listed
    assert {f"{src}/b/tmp/f", f"{src}/b/keep/f"} <= listed
    tb("restore", "latest", "--target", str(tmp_path / "r"), "--include", "b/tmp/")
    got = restored(tmp_path / "r", src)
    assert (got / "b" / "tmp" / "f").read_bytes() == b"b/tmp" and not (got / "b" / "keep").exists()


def test_exclude_patterns_from_the_current_directory_or_with_dots(tb, tmp_path):
    """'--exclude ./a' (with 'backup .'), 'src//a', 'src/b/../a' silently excluded nothing, and so did
    'restore --include ./a/f': a pattern starting with ./ or ../ is now a path from the current directory
    (as backup's paths are), and . / .. / // inside a pattern are read as in a path. An exclude file cannot
    mean a current directory: such a line is refused, naming the file."""
    src = tmp_path / "src"
    for d in ("a", "b", "c/a"):
        (src / d).mkdir(parents=True)
        (src / d / "f").write_bytes(d.encode())
    tb("init")
    for args in (("--exclude", "./a"), ("--exclude", "../src/a/"), ("--exclude", f"{src}//a"),
                 ("--exclude", f"{src}/b/../a"), ("--exclude", f"{src}/./a")):
        tb("backup", ".", *args, cwd=src)
        listed = set(tb("ls", "latest", str(src)).out.splitlines())
        assert f"{src}/a" not in listed and {f"{src}/b/f", f"{src}/c/a/f"} <= listed, (args, listed)
    tb("backup", str(src))
    tb("restore", "latest", "--target", str(tmp_path / "r"), "--include", "./c/a/f", cwd=src)
    got = restored(tmp_path / "r", src)
    assert (got / "c" / "a" / "f").read_bytes() == b"c/a" and not (got / "a").exists() and not (got / "b").exists()
    (tmp_path / "excludes").write_text("# comment\n./a\n")
    res = tb("backup", str(src), "--exclude-file", str(tmp_path / "excludes"), expect=2)
    assert f"exclude file {tmp_path}/excludes has the pattern ./a" in res.err, res.err


def test_snapshot_times_are_shown_in_the_viewers_time_zone(tb, tmp_path):
    """A snapshot records its host's time and offset; `snapshots` shows it in this machine's zone, as `ls -l`
    shows file times (it showed the recording host's wall clock, so hosts in other zones looked hours off)."""
    import datetime as dt

    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    tb("init")
    tb("backup", str(src), env={"TZ": "UTC"})
    recorded = dt.datetime.fromisoformat(tb("snapshots", "--json").json()[0]["time"])
    for zone, hours in (("JST-9", 9), ("XST+5", -5)):  # POSIX zones: no time zone database needed
        shown = recorded.astimezone(dt.timezone(dt.timedelta(hours=hours))).strftime("%Y-%m-%d %H:%M:%S")
        assert shown in tb("snapshots", env={"TZ": zone}).out, zone


def test_exclude_caches_and_exclude_file(tb, tmp_path):
    """--exclude-caches stores a directory tagged by a valid CACHEDIR.TAG empty (a tag without the signature
    does not count); --exclude-file reads patterns, skipping blank lines and comments; a missing file is a
    usage error."""
    src = tmp_path / "src"
    for d in ("cache/sub", "fake-cache", "keep", "logs"):
        (src / d).mkdir(parents=True)
    (src / "cache" / "CACHEDIR.TAG").write_bytes(
        b"Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag.\n")
    (src / "cache" / "sub" / "blob").write_bytes(b"cached")
    (src / "fake-cache" / "CACHEDIR.TAG").write_bytes(b"not the signature\n")
    (src / "fake-cache" / "data").write_bytes(b"kept")
    (src / "keep" / "a.txt").write_bytes(b"a")
    (src / "logs" / "x.log").write_bytes(b"log")
    (src / "keep" / "b.tmp").write_bytes(b"tmp")
    excludes = tmp_path / "excludes"
    excludes.write_text("# scratch files\n*.tmp\n\n   logs/  \n")
    tb("init")
    tb("backup", str(src), "--exclude-caches", "--exclude-file", str(excludes))
    listed = set(tb("ls", "latest", str(src)).out.splitlines())
    assert f"{src}/cache" in listed and not [p for p in listed if p.startswith(f"{src}/cache/")]
    assert {f"{src}/fake-cache/data", f"{src}/keep/a.txt"} <= listed
    assert f"{src}/keep/b.tmp" not in listed and f"{src}/logs" not in listed
    res = tb("backup", str(src), "--exclude-file", str(tmp_path / "nope"), expect=2)
    assert "cannot read the exclude file" in res.err and len(res.err.strip().splitlines()) == 1


def test_find_a_file_across_snapshots(tb, tmp_path):
    """find lists every snapshot holding a matching entry, with its size: unchanged directories shared by the
    snapshots are read once but reported for each; --host and --snapshot narrow the search."""
    src = tmp_path / "src"
    (src / "docs" / "old").mkdir(parents=True)
    (src / "docs" / "old" / "report.docx").write_bytes(b"v1" * 10)
    (src / "docs" / "notes.txt").write_bytes(b"notes")
    tb("init")
    tb("backup", str(src), "--host", "laptop")
    (src / "docs" / "notes.txt").write_bytes(b"notes, longer now")
    tb("backup", str(src), "--host", "desktop")
    snaps = tb("snapshots", "--json").json()
    found = tb("find", "--json", "*.docx", "notes.txt").json()
    got = sorted((m["short_id"], m["path"], m["size"]) for m in found["matches"])
    docx, notes = str(src / "docs" / "old" / "report.docx"), str(src / "docs" / "notes.txt")
    assert got == sorted([(snaps[0]["short_id"], docx, 20), (snaps[1]["short_id"], docx, 20),
                          (snaps[0]["short_id"], notes, 5), (snaps[1]["short_id"], notes, 17)])
    assert found["count"] == 4
    by_path = tb("find", "--json", f"{src}/docs/old/*", "--host", "desktop").json()["matches"]
    assert [(m["short_id"], m["path"]) for m in by_path] == [(snaps[1]["short_id"], docx)]
    text = tb("find", "old/report.docx", "--snapshot", snaps[0]["short_id"]).out.splitlines()
    assert len(text) == 2 and docx in text[0] and text[-1] == "1 match(es) in 1 snapshot(s)"
    twice = ("--snapshot", snaps[0]["short_id"], "--snapshot", snaps[0]["id"][:10])  # the same one, named twice
    assert tb("find", "old/report.docx", *twice).out.splitlines() == text
    assert tb("find", "nothing*").out.strip() == "0 match(es) in 2 snapshot(s)"


def test_ls_long_and_find_show_a_time_just_before_a_second_as_that_second(tb, tmp_path):
    """The time was made from a float of seconds: 12:34:39.999999999 showed as 12:34:40 (and 12:59:59.9999999 as
    the next minute in find)."""
    src = tmp_path / "src"
    src.mkdir()
    f = src / "f"
    f.write_text("x")
    whole = int(datetime.datetime(2021, 3, 4, 12, 59, 59).timestamp())
    os.utime(f, ns=(whole * 10**9 + 999_999_999,) * 2)
    tb("init")
    tb("backup", str(src))
    line = next(ln for ln in tb("ls", "latest", str(src), "--long").out.splitlines() if ln.endswith("/f"))
    assert "2021-03-04 12:59:59" in line, line
    assert "2021-03-04 12:59 " in tb("find", "f").out


def test_json_failures_are_a_json_document_too(tb, tmp_path):
    """Under --json a failure was only a text line on standard error: a script parsing standard output got
    nothing (or a stream of backup lines that just stopped). It is now also {"type": "error", ...}."""
    tb("init")
    for args, code in ((("ls", "deadbeef"), 2), (("backup", str(tmp_path / "missing")), 2),
                       (("restore", "latest", "--target", str(tmp_path / "t")), 2)):
        res = tb("--json", *args, expect=code)
        doc = json.loads(res.out)
        assert doc == {"type": "error", "exit_code": code, "message": res.err.strip().removeprefix("tuckbox: error: ")}
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    tb("backup", str(src))
    # a command that succeeds prints its document alone
    assert json.loads(tb("--json", "snapshots").out)[0]["paths"] == [str(src)]
    other = tb("--json", "-r", str(tmp_path / "nothing-here"), "snapshots", expect=1)
    assert json.loads(other.out)["type"] == "error" and "no repository at" in json.loads(other.out)["message"]


def test_stats_dedup_ratio_counts_file_data_not_trees(tb: Tuckbox, tmp_path: Path) -> None:
    """A tree of many small distinct files has nothing to deduplicate: the ratio was below 1 (0.96x for
    200,000 small files) because the trees' bytes counted as "unique data". Twice the same tree is 2x."""
    src = tmp_path / "src"
    for d in range(20):
        (src / f"d{d:02}").mkdir(parents=True)
        for i in range(30):
            (src / f"d{d:02}" / f"file-with-a-longish-name-{i:03}.txt").write_bytes(os.urandom(40))
    tb("init")
    tb("backup", str(src))
    doc = tb("--json", "stats").json()
    assert doc["unique_data_bytes"] == 20 * 30 * 40 < doc["unique_bytes"]
    assert doc["original_bytes"] == 20 * 30 * 40 and doc["dedup_ratio"] == 1.0
    assert "dedup ratio:          1.00x" in tb("stats").out
    shutil.copytree(src, tmp_path / "copy")
    tb("backup", str(tmp_path / "copy"))
    assert tb("--json", "stats").json()["dedup_ratio"] == 2.0
