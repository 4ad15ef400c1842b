"""Programs tuckbox starts (a password command, rclone) run with its environment minus its own secrets: the
passphrase and storage passwords in TUCKBOX_* would otherwise sit in their /proc/PID/environ while they run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuckbox.cli.main import main

SECRETS = {
    "TUCKBOX_PASSWORD": "pw-Zq81xk", "TUCKBOX_WEBDAV_PASSWORD": "dav-Zq81xk", "TUCKBOX_SFTP_PASSWORD": "ssh-Zq81xk",
    "TUCKBOX_SFTP_PASSPHRASE": "key-Zq81xk", "TUCKBOX_TAHOE_CAP": "URI:DIR2:Zq81xk:Zq81xk",
}


def _secrets_in(path: Path) -> list[str]:
    text = path.read_text()
    return [name for name, value in SECRETS.items() if value in text]


def test_the_password_command_gets_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TUCKBOX_CACHE_DIR", str(tmp_path / "cache"))
    seen = tmp_path / "seen-env"
    monkeypatch.setenv("TUCKBOX_PASSWORD_COMMAND", f"env > {seen}; echo correct-horse")
    assert main(["-r", str(tmp_path / "repo"), "-q", "init"]) == 0
    assert main(["-r", str(tmp_path / "repo"), "snapshots"]) == 0  # (the command's passphrase opened it)
    assert _secrets_in(seen) == []
    assert "TUCKBOX_CACHE_DIR=" in seen.read_text()  # (the rest of the environment is handed on)


def test_rclone_gets_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    seen = tmp_path / "seen-env"
    fake = tmp_path / "rclone"
    fake.write_text(f"#!/bin/sh\nenv > {seen}\necho 'CRITICAL: no such remote' >&2\nexit 1\n")
    fake.chmod(0o700)
    assert main(["-r", "rclone:remote:repo", "-o", f"rclone.binary={fake}", "snapshots"]) == 1
    assert "could not serve" in capsys.readouterr().err
    assert _secrets_in(seen) == [] and "RCLONE_PASS=" in seen.read_text()
