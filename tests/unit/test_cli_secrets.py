"""A secret given on the command line (a Tahoe capability in -r, -o tahoe.cap, -o webdav.password) is readable
by every user of the machine in the process list: tuckbox says so and names the environment variable to use,
without repeating the secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuckbox.cli.main import main

# a file cap, not a directory cap: refused at once, after the warning, without a network round trip
CAP = "URI:CHK:" + "a" * 26 + ":" + "b" * 52 + ":3:10:1024"


def test_a_tahoe_cap_in_the_repository_argument_is_warned_about(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-r", f"tahoe://127.0.0.1:1/{CAP}/repo", "snapshots"]) == 2
    err = capsys.readouterr().err
    assert "process list" in err and "TUCKBOX_TAHOE_CAP" in err
    assert "a" * 26 not in err and "b" * 52 not in err


def test_secret_options_are_warned_about(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["-o", "tahoe.cap=" + CAP, "-o", "webdav.password=hunter2", "-r", "tahoe://127.0.0.1:1/repo", "snapshots"])
    assert code == 2
    err = capsys.readouterr().err
    assert "-o tahoe.cap=... " in err and "TUCKBOX_TAHOE_CAP" in err
    assert "-o webdav.password=... " in err and "TUCKBOX_WEBDAV_PASSWORD" in err
    assert "hunter2" not in err and "b" * 52 not in err


def test_secrets_from_the_environment_are_not_warned_about(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUCKBOX_REPOSITORY", f"tahoe://127.0.0.1:1/{CAP}/repo")
    assert main(["snapshots"]) == 2
    assert "process list" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("repo", "option", "named"),
    [
        ("/tmp/tuckbox-no-such-repository", "s3.endpoint=http://127.0.0.1:1", "is for an s3:// repository"),
        ("s3://bucket/prefix", "s3.endpont=http://127.0.0.1:1", "-o s3.endpont is not an option"),
        ("sftp://127.0.0.1:1/srv/repo", "sftp.identiy=/root/.ssh/id", "-o sftp.identiy is not an option"),
        ("rclone:remote:path", "rclone.conf=/x", "-o rclone.conf is not an option"),
    ],
)
def test_an_option_the_repository_does_not_take_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, repo: str, option: str, named: str
) -> None:
    """A misspelt -o key used to be ignored in silence: -o s3.endpont=... sent the backup (and the credentials)
    to AWS's default endpoint; -o s3.endpoint with a path that was meant to be s3://bucket made a local
    repository. Refused before anything is opened or connected to, naming the option."""
    assert main(["-r", repo, "-o", option, "--password-file", "/dev/null", "snapshots"]) == 2
    err = capsys.readouterr().err.strip()
    assert named in err and len(err.splitlines()) == 1
    assert "127.0.0.1:1" not in err and "/root/.ssh/id" not in err  # (an option's value may be a secret)
    monkeypatch.setenv("TUCKBOX_TAHOE_CAP", CAP)  # (tahoe.https=on-ish was taken as plain http)
    assert main(["-r", "tahoe://127.0.0.1:1/repo", "-o", "tahoe.https=on-ish", "snapshots"]) == 2
    assert "tahoe.https" in capsys.readouterr().err


def test_every_documented_option_is_taken() -> None:
    """Each -o key README names is one a backend takes, and the reverse."""
    import re
    from pathlib import Path

    from tuckbox.backends import OPTIONS

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    documented = set(re.findall(r"`(?:-o )?((?:s3|sftp|tahoe|webdav|rclone)\.[a-z_-]+)", readme))
    assert documented == set().union(*OPTIONS.values())


@pytest.mark.parametrize(("option", "hint"), [
    ("sftp.password", "TUCKBOX_SFTP_PASSWORD"), ("sftp.passphrase", "TUCKBOX_SFTP_PASSPHRASE"),
    ("s3.secret-access-key", "AWS_SECRET_ACCESS_KEY"), ("webdav.pass", "TUCKBOX_WEBDAV_PASSWORD"),
    ("rclone.token", "rclone config"), ("s3.endpiont", "s3.endpoint"),
])
def test_an_option_no_backend_reads_is_refused_without_its_value(
    option: str, hint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Silently ignored, a password given as an option sat in the process list unused, and a misspelt
    s3.endpoint sent the backup to AWS."""
    assert main(["--json", "-r", str(tmp_path / "repo"), "-o", f"{option}=Zq81xk", "init"]) == 2
    res = capsys.readouterr()
    assert f"-o {option} is not an option" in res.err and hint in res.err
    assert "Zq81xk" not in res.err + res.out
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize("cap", [CAP.replace(":", "%3A"), "uri:DIR2:" + "a" * 26 + ":" + "b" * 52])
def test_a_tahoe_cap_percent_encoded_or_in_lower_case_is_warned_about_and_never_shown(
    cap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-r", f"tahoe://127.0.0.1:1/{cap}/repo", "snapshots"]) == 2
    err = capsys.readouterr().err
    assert "process list" in err and "TUCKBOX_TAHOE_CAP" in err
    assert "a" * 26 not in err and "b" * 52 not in err
