"""Keep the process's memory flat (the allocator's tuning: tuckbox/allocator.py) and out of core dumps."""

from __future__ import annotations

import ctypes
import resource

from .. import allocator


def tune_allocator() -> None:
    allocator.tune()


_PR_SET_DUMPABLE = 4  # <linux/prctl.h>


def keep_out_of_core_dumps() -> None:
    """No core dump of this process: its memory holds the passphrase, the root secret and derived keys, which a
    crash would otherwise write to a core file (or hand to systemd-coredump / apport). Not dumpable also means
    another process of the same user cannot ptrace it or read its memory (as ssh-agent and gpg-agent do).
    Programs it starts reset this when they exec; the core size limit of 0 stays with them too."""
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_CORE)
        resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    except (OSError, ValueError):
        pass
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux
        pass
