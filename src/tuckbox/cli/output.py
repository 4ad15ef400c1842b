"""Standard output for the commands: a write that fails is a one-line error (exit 1), not an internal one.

``tuckbox dump FILE > /dev/full``, ``tuckbox ls latest > file-on-a-full-disk``: the
write fails with ENOSPC (or EIO, EDQUOT, ...) wherever the command happens to
print. ``Guarded`` stands in for ``sys.stdout`` (and its ``buffer``) and turns
such a failure into a ``TuckboxError`` naming standard output. A closed pipe
(``| head``) is not an error of the command: ``BrokenPipeError`` passes through
unchanged, and the CLI exits quietly — except under a command that only reports
on what it did (backup, restore, prune, ...): its reader going away
(``backup --json | head -1``, a log pipe that died) does not stop it half-way;
the rest of its report is dropped. Neither does a report that cannot be written
(``backup >> log`` on a full disk, an I/O error): the command finishes its work,
then exits 1 saying its report is incomplete (``lost_output``) — a full log disk
must not stop every scheduled backup. Standard error is treated the same way for
every command: a warning that cannot be written never stops the work.

Started with standard output closed (``>&-``), a command whose output is its
purpose (ls, dump, snapshots, ...) stops with the same one-line error at its
first write; one that only reports on what it did (backup, restore, prune, ...)
runs and its report is dropped (see ``standard_streams``).
"""

from __future__ import annotations

import codecs
import os
import sys
from typing import Any

from ..errors import TuckboxError


class OutputError(TuckboxError):
    """Standard output cannot be written (exit 1)."""


def _failed(e: OSError) -> OutputError:
    return OutputError(
        f"cannot write to standard output: {e.strerror or e}; check where it goes (a full disk, a closed file)"
    )


class Guarded:
    """A text or binary output stream whose write and flush errors are ``TuckboxError``s (EPIPE excepted);
    ``closed``: standard output was closed when tuckbox started, and every write is such an error;
    ``optional``: the output only reports on what the command does, and a closed pipe drops the rest of it
    (descriptor 1 goes to /dev/null) instead of raising ``BrokenPipeError`` into the command."""

    def __init__(self, stream: Any, closed: bool = False, optional: bool = False, wrote: list[bool] | None = None,
                 lost: list[OSError] | None = None) -> None:
        self._stream = stream
        self._closed = closed
        self._optional = optional
        self._wrote = [False] if wrote is None else wrote  # (shared with ``buffer``)
        self._lost = [] if lost is None else lost  # (shared with ``buffer``): why an optional report was cut

    @property
    def lost(self) -> OSError | None:
        """The error that cut an optional report short (the rest of it was dropped), if any."""
        return self._lost[0] if self._lost else None

    @property
    def wrote(self) -> bool:
        """Whether anything was written (through this stream or its ``buffer``)."""
        return self._wrote[0]

    def write(self, data: Any) -> Any:
        if self._closed:
            raise OutputError("cannot write to standard output: it is closed; send it to a file, a pipe or /dev/null")
        self._wrote[0] = True
        try:
            return self._stream.write(data)
        except BrokenPipeError:
            if not self._optional:
                raise
            discard_pending(self._stream)
            return len(data)
        except OSError as e:
            if not self._optional:
                raise _failed(e) from None
            self._drop(e)
            return len(data)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            if not self._optional:
                raise
            discard_pending(self._stream)
            self._stream.flush()  # (what was buffered goes to /dev/null now)
        except OSError as e:
            if not self._optional:
                raise _failed(e) from None
            self._drop(e)

    def _drop(self, e: OSError) -> None:
        """An optional report cannot be written (a full disk, an I/O error): note why, send the rest of it
        (and what is buffered) to /dev/null, and let the command finish its work."""
        if not self._lost:
            self._lost.append(e)
        discard_pending(self._stream)
        try:
            self._stream.flush()
        except OSError:
            pass  # (a stream that is not a real file keeps its error: nothing more can be done)

    @property
    def buffer(self) -> "Guarded":
        return Guarded(self._stream.buffer, self._closed, self._optional, self._wrote, self._lost)

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, ...
        return getattr(self._stream, name)


class Diagnostics:
    """Standard error: when its reader goes away (``2>&1 | head``, a log pipe that died) the rest of the messages
    are dropped (descriptor 2 goes to /dev/null); a warning printed then must not stop a backup half-way. Nor
    must one that cannot be written (``2>> log`` on a full disk): the rest is dropped and ``lost`` says why."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.lost: OSError | None = None

    def write(self, data: Any) -> Any:
        try:
            return self._stream.write(data)
        except BrokenPipeError:
            discard_pending(self._stream)
            return len(data)
        except OSError as e:
            self._drop(e)
            return len(data)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            discard_pending(self._stream)
            self._stream.flush()
        except OSError as e:
            self._drop(e)

    def _drop(self, e: OSError) -> None:
        if self.lost is None:
            self.lost = e
        discard_pending(self._stream)
        try:
            self._stream.flush()
        except OSError:
            pass

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, ...
        return getattr(self._stream, name)


def discard_pending(stream: Any) -> None:
    """After a failed write: send file descriptor 1 to /dev/null, so that what is still buffered does not
    fail again (and print a Python message) when the interpreter flushes standard output on exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass  # not a real file (a test's capture): nothing is flushed to a descriptor at exit


def _escape_unencodable(e: UnicodeError) -> tuple[str, int]:
    """A character the output's encoding lacks (an ASCII or Latin-1 locale: ``LANG=de_DE.ISO-8859-1``,
    ``PYTHONIOENCODING=ascii``) is written as ``\\u00ef`` (``\\U0001f600`` above the BMP) - never as
    ``\\xef``, which in tuckbox's output means a byte that is not UTF-8 - instead of ending the command
    in an internal error at the first such name."""
    if not isinstance(e, UnicodeEncodeError):
        raise e
    text = e.object[e.start : e.end]
    return "".join(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}" for c in text), e.end


codecs.register_error("tuckbox-escape", _escape_unencodable)


def _escape_what_the_locale_cannot_show() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if codecs.lookup(stream.encoding).name != "utf-8":
                stream.reconfigure(errors="tuckbox-escape")
        except (AttributeError, LookupError, TypeError, ValueError):
            pass  # (not a text file of the interpreter's: a test's capture)


def standard_streams() -> bool:
    """Open /dev/null on whichever of descriptors 0, 1 and 2 is closed, and give Python streams for them.

    Else the first file tuckbox opens would get the number (a pack, a restored file) and whatever is
    written to "standard output" or "standard error" (by a password command, a library) would land in
    it. Returns whether standard output was closed.
    """
    closed = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            devnull = os.open(os.devnull, os.O_RDWR)
            if devnull != fd:
                os.dup2(devnull, fd)
                os.close(devnull)
            closed.append(fd)
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - lives as long as the process
    if sys.stderr is None:  # (print(file=None) would write to standard output)
        sys.stderr = open(2, "w", errors="backslashreplace", closefd=False)  # noqa: SIM115
    _escape_what_the_locale_cannot_show()
    return 1 in closed
