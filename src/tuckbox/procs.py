"""Whether a process named by its pid (in a lock, a pack journal's or a files-cache stream's name) is still
the tuckbox that wrote it.

A pid alone does not say so: after a power cut or a reboot its number is soon another program's (a kernel
thread's, a daemon's, which may live for good), and what the killed run left would be taken for a running
one's and left alone.
"""

from __future__ import annotations

import os
import time


def alive(pid: int) -> bool:
    """Whether a process of that pid exists (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def runs_tuckbox(pid: int) -> bool:
    """Whether process ``pid`` of this machine runs tuckbox (its command line names it); False where that
    cannot be read (no /proc)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"tuckbox" in f.read()
    except OSError:
        return False


def started(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), from /proc; None where that cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()  # (after the command name, which may hold anything)
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        now = time.time()
        # (field 22: the start, in clock ticks since boot; measured back from now through the uptime, both to
        # a hundredth of a second: /proc/stat's boot time is whole seconds, off by up to one)
        return now - (uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def still_writing(pid: int, written: float) -> bool:
    """Whether process ``pid`` may be the writer of a file last written at ``written`` (its mtime): it exists,
    and runs tuckbox or started before that write (a program started after it cannot have written it)."""
    if pid == os.getpid():
        return True
    if not alive(pid):
        return False
    if runs_tuckbox(pid):
        return True
    began = started(pid)
    return began is None or began <= written + 1.0
