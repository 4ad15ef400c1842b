"""Standard output for the commands: a write that fails is a one-line error (exit 1), not an internal one.

``tuckbox dump FILE > /dev/full``, ``tuckbox ls latest > file-on-a-full-disk``: the
write fails with ENOSPC (or EIO, EDQUOT, ...) wherever the command happens to
print. ``Guarded`` stands in for ``sys.stdout`` (and its ``buffer``) and turns
such a failure into a ``TuckboxError`` naming standard output. A closed pipe
(``| head``) is not an error of the command: ``BrokenPipeError`` passes through
unchanged, and the CLI exits quietly — except under a command that only reports
on what it did (backup, restore, prune, ...): its reader going away
(``backup --json | head -1``, a log pipe that died) does not stop it half-way;
the rest of its report is dropped.

Started with standard output closed (``>&-``), a command whose output is its
purpose (ls, dump, snapshots, ...) stops with the same one-line error at its
first write; one that only reports on what it did (backup, restore, prune, ...)
runs and its report is dropped (see ``standard_streams``).
"""

from __future__ import annotations

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

    def __init__(self, stream: Any, closed: bool = False, optional: bool = False, wrote: list[bool] | None = None) -> None:
        self._stream = stream
        self._closed = closed
        self._optional = optional
        self._wrote = [False] if wrote is None else wrote  # (shared with ``buffer``)

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
            raise _failed(e) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            if not self._optional:
                raise
            discard_pending(self._stream)
            self._stream.flush()  # (what was buffered goes to /dev/null now)
        except OSError as e:
            raise _failed(e) from None

    @property
    def buffer(self) -> "Guarded":
        return Guarded(self._stream.buffer, self._closed, self._optional, self._wrote)

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, ...
        return getattr(self._stream, name)


class Diagnostics:
    """Standard error: when its reader goes away (``2>&1 | head``, a log pipe that died) the rest of the messages
    are dropped (descriptor 2 goes to /dev/null); a warning printed then must not stop a backup half-way."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, data: Any) -> Any:
        try:
            return self._stream.write(data)
        except BrokenPipeError:
            discard_pending(self._stream)
            return len(data)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            discard_pending(self._stream)
            self._stream.flush()

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
    return 1 in closed
