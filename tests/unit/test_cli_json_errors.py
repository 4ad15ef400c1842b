"""Under --json a failure before the command runs (a usage error argparse finds, an interrupt while the command
starts) is the documented JSON error on standard output too, and its one line on standard error (docs/json.md)."""

from __future__ import annotations

import json

import pytest

from tuckbox.cli import main as main_module
from tuckbox.cli.main import main


def _error_doc(out: str) -> dict:
    lines = out.splitlines()
    assert len(lines) == 1, out  # one document, nothing else
    doc = json.loads(lines[0])
    assert doc["type"] == "error" and isinstance(doc["message"], str)
    return doc


@pytest.mark.parametrize("argv, named", [
    (["--json", "ls", "latest", "--bogus"], "--bogus"),
    (["ls", "latest", "--bogus", "--json"], "--bogus"),
    (["diff", "1234", "--json"], "second"),
    (["backup", "--json"], "PATH"),
    (["snapshots", "--connections", "many", "--json"], "many"),
    (["--json"], "command"),
    (["--js", "nosuchcommand"], "nosuchcommand"),
])
def test_a_usage_error_under_json_is_a_json_error(argv: list[str], named: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    doc = _error_doc(captured.out)
    assert doc["exit_code"] == 2 and named in doc["message"]
    assert captured.err.startswith("tuckbox: usage error:") and named in captured.err


def test_without_json_a_usage_error_writes_nothing_to_standard_output(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["ls", "latest", "--bogus", "--", "--json"])  # (after '--' it is a word, not the option)
    assert capsys.readouterr().out == ""


def test_an_interrupt_while_the_command_starts_is_exit_130_and_a_json_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGTERM from systemd a moment after start (the command's modules still importing) was a Python traceback
    and no JSON on standard output."""

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(main_module, "tune_allocator", interrupted)
    assert main(["--json", "-r", "/nonexistent", "snapshots"]) == 130
    captured = capsys.readouterr()
    assert _error_doc(captured.out) == {"type": "error", "message": "interrupted", "exit_code": 130}
    assert captured.err == "tuckbox: interrupted\n"
