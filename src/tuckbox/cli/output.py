"""Standard output for the commands: a write that fails is a one-line error (exit 1), not an internal one.

``tuckbox dump FILE > /dev/full``, ``tuckbox ls latest > file-on-a-full-disk``: the
write fails with ENOSPC (or EIO, EDQUOT, ...) wherever the command happens to
print. ``Guarded`` stands in for ``sys.stdout`` (and its ``buffer``) and turns
such a failure into a ``TuckboxError`` naming standard output. A closed pipe
(``| head``) is not an error of the command: ``BrokenPipeError`` passes through
unchanged, and the CLI exits quietly.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import TuckboxError


class OutputError(TuckboxError):
    """Standard output cannot be written (exit 1)."""


def _failed(e: OSError) -> OutputError:
    return OutputError(
        f"cannot write to standard output: {e.strerror or e}; check where it goes (a full disk, a closed file)"
    )


class Guarded:
    """A text or binary output stream whose write and flush errors are ``TuckboxError``s (EPIPE excepted)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, data: Any) -> Any:
        try:
            return self._stream.write(data)
        except BrokenPipeError:
            raise
        except OSError as e:
            raise _failed(e) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as e:
            raise _failed(e) from None

    @property
    def buffer(self) -> "Guarded":
        return Guarded(self._stream.buffer)

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
