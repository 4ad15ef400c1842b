"""Ctrl-C and SIGTERM for every command: the first unwinds the command (it releases its lock and exits 130),
a second quits within ``QUIT_GRACE`` seconds whatever the unwinding waits for.

The unwinding talks to the storage (removing the repository lock, finishing or joining transfers), and a
server that accepts connections and then answers nothing holds it for good. Ending the process then is as
safe as a crash (the repository stays valid; a backup's journal names the packs it stored); a lock it may
leave is a dead process's, which ``tuckbox unlock`` removes.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any, NoReturn

from ..errors import EXIT_INTERRUPTED

QUIT_GRACE = 2.0  # seconds the unwinding gets after a second Ctrl-C, or after an interrupted command returned

_armed = threading.Event()
_signalled = False
_returned = False


def exit_after(grace: float) -> None:
    """Exit 130 in ``grace`` seconds unless the process has ended by then (once per process)."""
    if _armed.is_set():
        return
    _armed.set()

    def quit() -> None:
        time.sleep(grace)
        try:
            sys.stderr.write("tuckbox: interrupted (the storage did not answer in time: if the repository lock was "
                             "left behind, 'tuckbox unlock' removes it)\n")
            sys.stderr.flush()
        finally:
            os._exit(EXIT_INTERRUPTED)

    threading.Thread(target=quit, name="tuckbox-quit", daemon=True).start()


def _handle(signum: int, frame: Any) -> None:
    global _signalled
    if _returned:  # the command already unwound and reported; only the interpreter's exit waits
        os._exit(EXIT_INTERRUPTED)
    if _signalled:
        exit_after(QUIT_GRACE)
    _signalled = True
    raise KeyboardInterrupt


def install() -> None:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt (a second one also bounds the wait). A signal the parent
    chose to ignore (a background job's SIGINT, a SIGTERM set to SIG_IGN) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _handle)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _handle)


def json_requested(words: list[str]) -> bool:
    """Whether the command line asks for --json (or an abbreviation argparse accepts, --js), before any '--':
    known before it is parsed, so that a usage error or an interrupt while the command starts is JSON too."""
    words = words[: words.index("--")] if "--" in words else words
    return any(len(w) > 2 and "--json".startswith(w) for w in words)


def stopped_while_starting() -> NoReturn:
    """Ctrl-C or SIGTERM while the program's modules load (its first tenth of a second, before ``main`` runs):
    the one line and exit code of any interrupted command, not a traceback of the import under way."""
    sys.stderr.write("tuckbox: interrupted\n")
    if json_requested(sys.argv[1:]):
        sys.stdout.write(json.dumps({"exit_code": EXIT_INTERRUPTED, "message": "interrupted", "type": "error"}) + "\n")
    raise SystemExit(EXIT_INTERRUPTED)


def interrupted_command_returned() -> None:
    """The command unwound after an interrupt: what is left (threads the interpreter joins at exit, still
    waiting for the storage) gets ``QUIT_GRACE`` seconds, and a further Ctrl-C ends the process at once."""
    global _returned
    _returned = True
    exit_after(QUIT_GRACE)
