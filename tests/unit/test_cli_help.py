"""Every command's --help prints a manual page (argparse %-formats help strings: a stray % breaks it)."""

from __future__ import annotations

import pytest

from tuckbox.cli.main import COMMANDS, main


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_prints_and_exits_zero(command: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--help"] if command is None else [command.replace("_", "-"), "--help"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: tuckbox") and "options:" in text
