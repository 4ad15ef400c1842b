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


def test_only_the_named_command_s_module_is_imported() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from tuckbox.cli.main import build_parser; build_parser('snapshots'); "
        "print(sorted(m for m in sys.modules if m.startswith('tuckbox.cli.cmd_')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['tuckbox.cli.cmd_snapshots']"


def test_a_command_word_used_as_an_option_value_still_finds_the_command(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`-r check snapshots`: 'check' is the repository, the command is 'snapshots'."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TUCKBOX_PASSWORD", "pw")
    monkeypatch.setenv("TUCKBOX_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["-r", "check", "-q", "init"]) == 0
    capsys.readouterr()
    assert main(["-r", "check", "--json", "snapshots"]) == 0
    assert capsys.readouterr().out.strip() == "[]"
    with pytest.raises(SystemExit) as exit_info:
        main(["-r", "check", "restore"])  # restore's own usage error, not a stand-in's
    assert exit_info.value.code == 2
    assert "-t/--target" in capsys.readouterr().err


def test_a_missing_argument_names_only_what_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["repair"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "required: what" in err and "SNAPSHOT" not in err


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("15m", 900), ("1h", 3600), ("1h30m", 5400),
                                           ("2m 30s", 150), ("45", 45), ("1.5h", 5400)])
def test_durations_of_checkpoints_and_lock_waits(text: str, seconds: float) -> None:
    from tuckbox.cli.common import parse_duration

    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["abc", "1x", "h", "1h30", "", "-1m"])
def test_what_is_not_a_duration(text: str) -> None:
    from tuckbox.cli.common import parse_duration
    from tuckbox.errors import UsageError

    with pytest.raises(UsageError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize("argv, message", [
    (["forget", "--keep-within", "-1d"], "--keep-within: invalid duration '-1d': a duration cannot be negative"),
    (["forget", "--keep-daily", "-1.5"], "--keep-daily: '-1.5' is not a whole number"),
    (["forget", "--keep-last", "1", "--max-unused", "-5%"], "--max-unused: '-5%' is not between 0 and 100"),
])
def test_a_value_starting_with_minus_and_a_digit_is_checked_as_a_value(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not argparse's "expected one argument": the option's own check says what is wrong with the value."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "expected one argument" not in err


def test_options_may_come_between_a_command_s_words() -> None:
    """'ls latest -l /home/ann' and 'backup ~/a --tag t ~/b' were refused (exit 2, "unrecognized arguments"):
    argparse gave the optional path, or the further paths, only the words before the first option."""
    from tuckbox.cli.main import build_parser

    args = build_parser().parse_args(["ls", "latest", "-l", "/home/ann"])
    assert (args.snapshot, args.path, args.long) == ("latest", "/home/ann", True)
    args = build_parser().parse_args(["ls", "latest", "--host", "h", "/x", "--tag", "t"])
    assert (args.path, args.host, args.tag) == ("/x", ["h"], ["t"])
    args = build_parser().parse_args(["backup", "/a", "--tag", "t", "/b", "--exclude", "*.tmp", "/c"])
    assert (args.paths, args.tag, args.exclude) == (["/a", "/b", "/c"], ["t"], ["*.tmp"])
    args = build_parser().parse_args(["find", "--host", "h", "*.tmp", "--snapshot", "latest", "*.bak"])
    assert args.patterns == ["*.tmp", "*.bak"]
    args = build_parser().parse_args(["key", "add", "--comment", "c"])  # (a command with commands below it)
    assert args.comment == "c"
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["ls", "latest", "/a", "/b"])
    assert exit_info.value.code == 2
