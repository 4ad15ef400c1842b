"""A secret given on the command line (a Tahoe capability in -r, -o tahoe.cap, -o webdav.password) is readable
by every user of the machine in the process list: tuckbox says so and names the environment variable to use,
without repeating the secret."""

from __future__ import annotations

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
