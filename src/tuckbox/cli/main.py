"""The ``tuckbox`` command: parses arguments, dispatches to one module per command.

Exit codes: 0 success, 1 fatal error, 2 usage error, 3 backup finished but some
files could not be read, 130 interrupted.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import re
import sys
import traceback
from importlib import import_module
from typing import Any

from .. import __version__
from ..errors import EXIT_FATAL, EXIT_INTERRUPTED, EXIT_PARTIAL, EXIT_USAGE, TuckboxError
from . import interrupt
from .interrupt import json_requested

# a Ctrl-C (or SIGTERM) while the modules below load, the program's first tenth of a second, ends it as it
# ends any command (one line, exit 130), not with a traceback of the import it came in (main installs it again)
interrupt.install()
try:
    from ..redact import redact_debug
    from .common import add_global_options, close_json_list_with_error, display, forget_json_list, report_problems
    from .memory import keep_out_of_core_dumps, tune_allocator
    from .output import Diagnostics, Guarded, OutputError, discard_pending, standard_streams
except KeyboardInterrupt:
    interrupt.stopped_while_starting()

COMMANDS = [
    "init", "backup", "snapshots", "ls", "find", "diff", "restore", "dump", "check", "stats", "unlock",
    "forget", "prune", "rewrite", "repair", "key", "recovery_kit",
]

_NAMES = {name.replace("_", "-") for name in COMMANDS}

DESCRIPTION = """\
tuckbox makes encrypted, deduplicated, compressed, versioned backups of file
trees to storage nobody has to trust, and restores them exactly.

Every command needs a repository (-r/--repo or $TUCKBOX_REPOSITORY) and, except
'init', its passphrase: from --password-file, --password-command,
$TUCKBOX_PASSWORD_FILE, $TUCKBOX_PASSWORD_COMMAND, $TUCKBOX_PASSWORD, or a
prompt on a terminal. The passphrase never appears in arguments or output.
"""

EPILOG = """\
snapshots are named by 'latest' or by a unique prefix (at least 4 hex digits)
of their id. Exit codes: 0 success, 1 error, 2 usage error, 3 backup finished
but some files could not be read (each reported as a warning), 130 interrupted.

examples:
  export TUCKBOX_REPOSITORY=/mnt/usb/backups
  tuckbox init
  tuckbox backup ~/Documents ~/Music --tag daily
  tuckbox snapshots
  tuckbox restore latest --target /tmp/r --include '*.txt'
"""


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # a word that starts with a minus and a digit ("-1d", "-5%", "-1.5") is an option's value, as "-1" is
        # already, never an option (tuckbox has no option like "-1"): so "--keep-within -1d" reaches the
        # option's own check, which says what is wrong, instead of "expected one argument"
        self._negative_number_matcher = re.compile(r"^-\.?\d")

    argv: list[str] = []  # the words being parsed (set by main), for the hint below
    _intermixing = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        """A command's words in any order: 'ls latest -l /home/ann', 'backup ~/a --tag t ~/b' (plain argparse
        gives an optional or a repeated positional only the words before the first option). Not for a parser
        that has commands below it (the top level, 'key', 'repair'), whose words after the command are the
        command's own."""
        if self._intermixing or any(a.nargs in (argparse.PARSER, argparse.REMAINDER) for a in self._actions):
            return super().parse_known_args(args, namespace)
        self._intermixing, usage = True, self.usage
        if usage is None:  # (what argparse would capture itself, but with a '%' of a metavar kept as one)
            self.usage = self.format_usage()[len("usage: "):].rstrip("\n").replace("%", "%%")
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing, self.usage = False, usage

    def error(self, message: str) -> None:  # one line, exit 2 (and under --json the JSON error too)
        hint = _recover_hint(self.argv) if message.startswith("argument COMMAND: invalid choice") else ""
        line = hint or f"tuckbox: usage error: {message} (see '{self.prog} --help')\n"
        if json_requested(self.argv):
            _write_json_error(sys.stdout, line.removeprefix("tuckbox: usage error: ").rstrip("\n"), EXIT_USAGE)
        self.exit(EXIT_USAGE, line)


def _recover_hint(words: list[str]) -> str:
    """'tuckbox --recover a.txt b.txt snapshots': before the command name --recover takes one file, so the
    second share file was taken for the command. Say so, instead of "invalid choice: 'b.txt'"."""
    for i, word in enumerate(words):
        if word in _NAMES:
            return ""
        if word == "--recover" and i + 2 < len(words) and not words[i + 2].startswith("-") \
                and any(w in _NAMES for w in words[i + 3 :]):
            return (f"tuckbox: usage error: before the command name, --recover takes one share file: give "
                    f"'--recover FILE' for each one, or put '--recover FILE FILE...' after the command name "
                    f"(the file '{display(words[i + 2])}' was taken for the command)\n")
    return ""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; ``only``: the command to expect, whose module alone is imported.

    Each command's module imports what that command runs (restore's workers,
    prune, check, ...): tens of milliseconds a command of another kind need not
    pay. The other commands get stand-in parsers that take anything and mark
    the result ``stand_in`` (``main`` then parses again with every command).
    """
    parser = _Parser(
        prog="tuckbox",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tuckbox {__version__}")
    add_global_options(parser)
    common = argparse.ArgumentParser(add_help=False)
    add_global_options(common, suppress=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        if only is not None and name.replace("_", "-") != only:
            stand_in = sub.add_parser(name.replace("_", "-"), add_help=False)
            stand_in.add_argument("rest", nargs=argparse.REMAINDER)
            stand_in.set_defaults(stand_in=True)
            continue
        module = import_module(f".cmd_{name}", __package__)
        p = sub.add_parser(
            name.replace("_", "-"),
            parents=[common],
            help=module.HELP,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.register(p)
        p.set_defaults(func=module.run, output_optional=getattr(module, "output_optional", None))
    return parser


def main(argv: list[str] | None = None) -> int:
    interrupt.install()  # SIGTERM (systemd, cron, kill) stops every command as Ctrl-C does
    words = sys.argv[1:] if argv is None else argv
    reported = [False]  # the command ran and reported its outcome (set by _main)
    try:
        code = _main(argv, words, reported)
    except KeyboardInterrupt:  # while the command was starting (its imports, the parsing) or after it reported
        print("tuckbox: interrupted", file=sys.stderr)
        if not reported[0] and json_requested(words):
            _write_json_error(sys.stdout, "interrupted", EXIT_INTERRUPTED)
        code = EXIT_INTERRUPTED
    if code == EXIT_INTERRUPTED and argv is None:  # (the real command, not a test calling main in-process)
        interrupt.interrupted_command_returned()
    return code


def _main(argv: list[str] | None, words: list[str], reported: list[bool]) -> int:
    stdout_closed = standard_streams()
    tune_allocator()
    keep_out_of_core_dumps()
    # the walking thread makes many short system calls while workers compress and encrypt: hand the
    # GIL back sooner than the default 5 ms so it does not queue behind them after every call
    sys.setswitchinterval(0.001)
    # a backup holds a node per entry of the directories being walked and creates millions of short-lived
    # objects with few reference cycles: CPython's default collector thresholds (700 allocations) make
    # it re-scan the live heap over and over (measured: ~9 % of a 200k-file backup)
    gc.set_threshold(100_000, 50, 100)
    # libraries (asyncio, asyncssh, botocore) log warnings such as "socket.send() raised exception." when a
    # connection drops; with no handler Python prints them raw to stderr next to our one-line errors.
    # The CLI reports every problem itself: keep library logging quiet unless debugging.
    if os.environ.get("TUCKBOX_DEBUG"):
        _debug_logging()
    else:
        logging.getLogger().addHandler(logging.NullHandler())
    _Parser.argv = list(words)
    parser = build_parser(next((w for w in words if w in _NAMES), None))
    args = parser.parse_args(argv)
    if getattr(args, "stand_in", False):  # (the word taken for the command was an option's value)
        parser = build_parser()
        args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        if getattr(args, "json", False):  # (standard output holds JSON alone)
            parser.error("a command is needed")
        parser.print_help()
        return EXIT_USAGE
    real_stdout, real_stderr = sys.stdout, sys.stderr
    # started with standard output closed: a command that only reports on what it did runs (its report is
    # dropped); one whose output is its purpose stops at its first write with a one-line error
    optional = args.output_optional is not None and args.output_optional(args)
    stdout = Guarded(real_stdout, closed=stdout_closed and not optional, optional=optional)
    stderr = Diagnostics(real_stderr)
    sys.stdout, sys.stderr = stdout, stderr  # type: ignore[assignment]
    try:
        code = _run(args)
        reported[0] = True
        code = _lost_output(args, code, stdout.lost, stderr.lost)
    finally:
        sys.stdout, sys.stderr = real_stdout, real_stderr
    return code


class _RedactingFormatter(logging.Formatter):
    """Library debug logs quote request URLs and headers (botocore: Authorization, X-Amz-Security-Token; httpx:
    a Tahoe-LAFS request's capability): each line is shown without them."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_debug(super().format(record))


def _debug_logging() -> None:
    """TUCKBOX_DEBUG=1: every library's log on standard error, secrets removed (the internal-error message
    asks for this output in a bug report)."""
    logging.basicConfig(level=logging.DEBUG)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_RedactingFormatter(logging.BASIC_FORMAT))


def _run(args: argparse.Namespace) -> int:
    """Run the command; every failure becomes a one-line message and an exit code."""
    forget_json_list()
    try:
        code = args.func(args)
        report_problems()
        sys.stdout.flush()
    except TuckboxError as e:
        print(f"tuckbox: error: {e.message}", file=sys.stderr)
        code = e.exit_code
        if isinstance(e, OutputError):
            discard_pending(sys.stdout)
        else:
            report_problems()
            _json_error(args, e.message, code)
    except KeyboardInterrupt:
        print("tuckbox: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
        report_problems()
        _json_error(args, "interrupted", code)
    except BrokenPipeError:  # the reader of our output went away (| head): nothing to say
        discard_pending(sys.stdout)
        code = EXIT_FATAL
    except Exception as e:  # noqa: BLE001 - a traceback in front of a user is a bug
        if os.environ.get("TUCKBOX_DEBUG"):  # (what a user is asked to paste into a report: no secret in it)
            print(redact_debug("".join(traceback.format_exception(e))), end="", file=sys.stderr)
        # the exception text is not shown: a library's message may quote a URL or credential
        tb = e.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = f" at {os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}" if tb else ""
        message = f"internal error: {type(e).__name__}{where} (set TUCKBOX_DEBUG=1 for details; please report it)"
        print(f"tuckbox: {message}", file=sys.stderr)
        code = EXIT_FATAL
        report_problems()
        _json_error(args, message, code)
    return int(code or 0)


def _lost_output(args: argparse.Namespace, code: int, stdout: OSError | None, stderr: OSError | None) -> int:
    """A report or warning that could not be written (``>> log`` on a full disk) did not stop the command; it
    finished its work, and says now (where it still can) that its output is incomplete: exit 1, not 0 or 3."""
    if stdout is None and stderr is None or code not in (0, EXIT_PARTIAL):
        return code
    which, e = ("standard output", stdout) if stdout is not None else ("standard error", stderr)
    assert e is not None
    message = (f"{args.command} finished, but its messages could not all be written to {which}: "
               f"{e.strerror or e}; check where it goes (a full disk, a closed file)")
    print(f"tuckbox: error: {message}", file=sys.stderr)
    sys.stderr.flush()
    _json_error(args, message, EXIT_FATAL)
    return EXIT_FATAL


_JSON_LINES = ("backup", "restore")  # commands whose --json output is a stream of lines, each with a "type"


def _json_error(args: argparse.Namespace, message: str, code: int) -> None:
    """Under --json, a failure is also a JSON document on standard output, ``{"type": "error", "message",
    "exit_code"}`` (as well as the line on standard error): the last line of backup's and restore's stream,
    the ``"error"`` that ends a document of ls, find or diff cut short, or the whole output of another command
    that had printed nothing yet (never a second document)."""
    if not getattr(args, "json", False):
        return
    stdout = sys.stdout
    error = {"type": "error", "message": message, "exit_code": int(code)}
    try:
        if close_json_list_with_error(error):  # (ls, find, diff: the list streamed so far, then the error)
            return
    except (OSError, TuckboxError):
        discard_pending(stdout)
        return
    if args.command not in _JSON_LINES and getattr(stdout, "wrote", True):
        return
    _write_json_error(stdout, message, code)


def _write_json_error(stdout: Any, message: str, code: int) -> None:
    try:
        stdout.write(json.dumps({"type": "error", "message": message, "exit_code": int(code)}, sort_keys=True) + "\n")
        stdout.flush()
    except (OSError, TuckboxError):
        discard_pending(stdout)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
