"""Progress display: a rich bar on a terminal, JSON lines with --json, nothing otherwise."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from ..archiver.report import Progress
from .common import display, emit_json, human


class CliProgress(Progress):
    """Used by backup and restore; thread-safe counters, rendered at most a few times a second.

    The bar is redrawn only when progress is reported (by whichever thread
    reports it), never by a thread of its own.
    """

    def __init__(self, json_mode: bool, quiet: bool, verb: str) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        self.verb = verb
        self.files = 0
        self.bytes = 0
        self._path = b""
        self.started = time.monotonic()
        self._last = 0.0
        self._lock = threading.Lock()
        self._bar: Any = None
        self._task: Any = None
        if not json_mode and not quiet and sys.stderr.isatty():
            from rich.progress import Progress as Bar, TextColumn, TimeElapsedColumn

            self._bar = Bar(
                TextColumn("[bold]{task.description}"),
                TextColumn("{task.fields[files]} files"),
                TextColumn("{task.fields[size]}"),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[current]}"),
                transient=True,
                # redrawn by _render, on the threads that report progress: no refresh thread of rich's, so a
                # restore can fork its workers from a process with no other thread (backends.fork.alone)
                auto_refresh=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(verb, files=0, size="0 B", rate="", current="")

    def file_started(self, path: bytes, size: int) -> None:
        self.files += 1
        if self._bar is not None:
            self._path = path
            self._render()

    def files_unchanged(self, last_path: bytes, count: int, size: int) -> None:
        self.files += count
        with self._lock:
            self.bytes += size
        if self._bar is not None or self.json_mode:
            self._path = last_path
            self._render()

    def files_done(self, n: int) -> None:
        """A restore's count of files so far (a backup counts them one by one, in ``file_started``)."""
        self.files = n
        self._render()

    def bytes_done(self, n: int) -> None:
        with self._lock:
            self.bytes += n
        if self._bar is not None or self.json_mode:
            self._render()

    def warning(self, message: str, kind: str = "warning") -> None:
        if self.json_mode:
            emit_json({"type": kind, "message": message})
        elif self._bar is not None:
            style = "red" if kind == "error" else "yellow"
            self._bar.console.print(f"{kind}: {message}", style=style, markup=False, highlight=False)
        else:
            print(f"{kind}: {message}", file=sys.stderr)

    def note(self, message: str) -> None:
        """Something worth saying that is not a problem (e.g. waiting for a lock)."""
        if not self.quiet or self.json_mode:
            self.warning(message, "note")

    def error(self, message: str) -> None:
        """A restore's entry that was not restored: said as it happens, and again in the summary."""
        self.warning(message, "error")

    def _render(self, force: bool = False) -> None:
        now = time.monotonic()
        interval = 1.0 if self.json_mode else 0.25
        if (not force and now - self._last < interval) or (self._bar is None and not self.json_mode):
            return
        self._last = now
        elapsed = max(now - self.started, 1e-6)
        if self.json_mode:
            emit_json({"type": "status", "files": self.files, "bytes": self.bytes, "seconds": round(elapsed, 1)})
        elif self._bar is not None:
            cur = display(self._path)[-60:]
            self._bar.update(self._task, files=self.files, size=human(self.bytes), rate=f"{human(self.bytes / elapsed)}/s", current=cur)
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
