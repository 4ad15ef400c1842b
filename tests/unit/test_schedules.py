"""The schedules README and contrib/ give (cron, systemd) run as README promises: "Backups and prune wait for
each other (--lock-wait), so neither fails because the other happened to be running"."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).parents[2]


def _scheduled_commands() -> list[list[str]]:
    """The tuckbox command lines of README's cron line and of contrib/systemd's ExecStart lines."""
    lines = [ln for ln in (ROOT / "README.md").read_text().splitlines() if re.match(r"^[0-9*/,-]+ .* root ", ln)]
    for unit in sorted((ROOT / "contrib" / "systemd").glob("*.service")):
        lines += [ln.split("=", 1)[1] for ln in unit.read_text().splitlines() if ln.startswith("ExecStart=")]
    commands = []
    for line in lines:
        text = line.split("exec ", 1)[1].rstrip("'") if "exec tuckbox" in line else line
        commands.append(shlex.split(text))
    return commands


def test_every_scheduled_backup_and_prune_waits_for_the_lock() -> None:
    """README's cron line had no --lock-wait: every run during the weekly prune failed (exit 1, a cron mail)."""
    commands = _scheduled_commands()
    assert len(commands) == 3, commands  # the cron line, the backup unit, the prune unit
    for words in commands:
        assert any(w in words for w in ("backup", "prune", "--prune")), words
        assert "--lock-wait" in words, f"{' '.join(words)}: no --lock-wait"


def test_every_scheduled_command_line_is_one_tuckbox_takes() -> None:
    from tuckbox.cli.main import build_parser

    for words in _scheduled_commands():
        assert Path(words[0]).name == "tuckbox", words
        args = build_parser().parse_args(words[1:])  # (a usage error exits 2)
        assert args.func is not None
