"""Repository locks: objects under ``locks/`` announcing who is using the repository.

Backups, restores and checks take *shared* locks: any number run at once.
Only operations that delete data (prune) take an *exclusive* lock. A lock
object is sealed with the index key and holds host, pid, user, time and kind.
Objects are immutable, so a lock is refreshed by writing a new one and removing
the old. A lock is stale when it was not refreshed for ``STALE_AFTER`` seconds,
or when it was taken on this host by a process that no longer exists.

A holder whose lock went unrefreshed for ``SAFE_FOR`` seconds at any moment
(the machine slept, the storage was unreachable) may have been judged stale
by a prune on another machine, which may then have deleted data this run
deduplicated against. ``Lock.ensure_held`` tells it so: a backup calls it
before every index and snapshot it writes, a prune before every deletion, and
stops rather than record anything that might name deleted data.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import random
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable

from ..crypto.aead import open_sealed, seal
from ..errors import IntegrityError, Interrupted, LockLost, ObjectNotFound, RepositoryLocked
from ..procs import alive, runs_tuckbox
from ..text import display_path
from ..types import Backend, ObjectType

LOCK_AD = b"tuckbox lock v1"
LAST_TIME = 1 << 37  # seconds: a lock's time is before this (the year 6325; NaN and infinity are not)
REFRESH_EVERY = 300.0
STALE_AFTER = 1800.0
RETRY_EVERY = 10.0  # seconds between attempts while waiting for a lock (--lock-wait), on average
SAFE_FOR = STALE_AFTER - 300.0  # a holder trusts its lock only while no refresh gap exceeded this


AHEAD_NOTED = 300.0  # a lock this much ahead of this machine's clock is said to be (a clock is wrong)


def _span(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def _elapsed() -> float:
    """Seconds on a clock that keeps counting while the machine sleeps (and never jumps with the wall clock)."""
    return time.clock_gettime(getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC))


@dataclass(frozen=True)
class LockInfo:
    name: str
    host: str
    pid: int
    user: str
    time: float
    exclusive: bool
    command: str = ""  # "backup" for a backup's lock (older locks and other commands: "")

    def describe(self) -> str:
        when = _dt.datetime.fromtimestamp(self.time).isoformat(timespec="seconds")
        kind = "exclusive" if self.exclusive else "shared"
        by = f"{display_path(self.user)}@{display_path(self.host)}"
        text = f"{self.name[:8]} {kind} lock by {by} pid {self.pid} since {when}"
        ahead = self.time - time.time()
        if ahead > AHEAD_NOTED:
            text += (f" ({_span(ahead)} ahead of this machine's clock: a clock is wrong; it goes stale only "
                     f"{_span(STALE_AFTER)} after that time)")
        return text

    def if_gone(self) -> str:
        """What to do about this live-looking lock if its process is known to be gone."""
        if self.host == socket.gethostname():
            return f"pid {self.pid} is still running on this machine"
        return (f"if that process on {display_path(self.host)} is gone, 'tuckbox unlock --all' removes its lock now "
                f"('tuckbox unlock' only once it is stale, {_span(STALE_AFTER)} after its time)")

    def is_stale(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        if self.host == socket.gethostname():
            if not alive(self.pid):
                return True
            # its process runs here: a tuckbox is the holder, whatever its lock's time says (this machine's
            # clock jumped ahead since its last refresh: a bad RTC set right by NTP after boot); another
            # program took over the pid of a holder that died (after a reboot): its time decides
            if runs_tuckbox(self.pid):
                return False
        return now - self.time > STALE_AFTER


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (KeyError, ImportError):
        return str(os.getuid())


def read_locks(backend: Backend, index_key: bytes, mine: str = "") -> list[LockInfo]:
    """Every lock in the repository but ``mine`` (the caller's own, not read back)."""
    out: list[LockInfo] = []
    for info in backend.list(ObjectType.LOCK):
        if info.name == mine:
            continue
        try:
            raw = backend.load(ObjectType.LOCK, info.name)
            doc = json.loads(open_sealed(index_key, raw, LOCK_AD, "lock"))
            when, pid = doc["time"], doc["pid"]
            # (a lock is written by any key, a compromised host's too: a time that is no time, or a pid that
            # is no pid, must not stop the prune or unlock that is to remove it)
            if type(when) not in (int, float) or not 0 <= when < LAST_TIME or type(pid) is not int \
                    or not 0 <= pid < 1 << 31:
                raise ValueError("not a lock's time or pid")
            out.append(
                LockInfo(info.name, str(doc["host"]), pid, str(doc["user"]), float(when),
                         bool(doc["exclusive"]), str(doc.get("command", "")))
            )
        except ObjectNotFound:
            continue
        except (IntegrityError, ValueError, KeyError, TypeError):
            # unreadable lock: treat as stale-by-age using a zero time so 'unlock' can show and remove it
            out.append(LockInfo(info.name, "?", 0, "?", 0.0, False))
    return out


class Lock:
    """A held lock, refreshed in the background until released."""

    def __init__(self, backend: Backend, index_key: bytes, exclusive: bool, background: bool = True,
                 command: str = "") -> None:
        """``background``: refresh from a thread; otherwise the holder calls ``tick`` often (a restore that
        forks worker processes must not have another thread running at the fork). ``command``: recorded in
        the lock ("backup": a prune keeps the unindexed packs while a killed backup's lock is left)."""
        self.background = background
        self.command = command
        self.others: list[LockInfo] = []  # the other locks seen when this one was taken
        self.backend = backend
        self.index_key = index_key
        self.exclusive = exclusive
        self.name = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()
        self._written_at = 0.0  # _elapsed() when the current lock object was written
        self._longest_gap = 0.0  # the longest time the held lock went unrefreshed so far

    def _write(self) -> str:
        doc = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "user": _user(),
            "time": time.time(),
            "exclusive": self.exclusive,
        }
        if self.command:
            doc["command"] = self.command
        name = secrets.token_hex(16)
        self.backend.save(ObjectType.LOCK, name, seal(self.index_key, json.dumps(doc).encode(), LOCK_AD))
        return name

    def acquire(
        self,
        wait: float = 0.0,
        on_wait: Callable[[str], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> "Lock":
        """Take the lock; while a conflicting one is held, retry for up to ``wait`` seconds (``on_wait`` is
        told once whom it waits for), then raise RepositoryLocked; Interrupted once ``should_stop`` says so."""
        deadline = _elapsed() + wait
        told = False
        while True:
            self.name = self._write()
            self._written_at = _elapsed()
            self.others = read_locks(self.backend, self.index_key, mine=self.name)
            conflicts = [lk for lk in self.others if (self.exclusive or lk.exclusive) and not lk.is_stale()]
            if not conflicts:
                break
            self._remove(self.name)
            self.name = ""
            left = deadline - _elapsed()
            if left <= 0:
                waited = f" (waited {_span(wait)})" if wait else ""
                raise RepositoryLocked(
                    f"repository is locked: {conflicts[0].describe()}{waited}; wait for it to finish "
                    f"(--lock-wait 30m waits for you); {conflicts[0].if_gone()}"
                )
            if on_wait is not None and not told:
                on_wait(f"waiting up to {_span(left)} for the repository lock: {conflicts[0].describe()}")
                told = True
            # a random pause: two waiters whose attempts met (each saw the other's lock and stepped back) must
            # not meet again at every retry until both give up, with the repository free all along
            until = _elapsed() + min(left, RETRY_EVERY * random.uniform(0.5, 1.5))
            while _elapsed() < until:
                if should_stop is not None and should_stop():
                    raise Interrupted("interrupted while waiting for the repository lock; nothing was changed")
                time.sleep(min(0.1, max(0.0, until - _elapsed())))
        if self.background:
            self.refresh_in_background()
        return self

    def take_over_killed_backups(self) -> int:
        """Remove the stale locks of this host's and user's killed backups (seen when this lock was taken):
        while they are left, prune keeps the packs no index names, which the next backup adopts. A backup
        holding this lock adopts them now, and its own lock protects them from here on."""
        host, user, removed = socket.gethostname(), _user(), 0
        for lk in self.others:
            if lk.command == "backup" and lk.host == host and lk.user == user and lk.is_stale():
                self._remove(lk.name)
                removed += 1
        return removed

    def refresh_in_background(self) -> None:
        """Refresh from a thread from now on (a lock taken with ``background=False`` before a fork)."""
        if self._thread is None and self.name:
            self.background = True
            self._thread = threading.Thread(target=self._refresh_loop, name="tuckbox-lock", daemon=True)
            self._thread.start()

    def _remove(self, name: str) -> None:
        try:
            self.backend.remove(ObjectType.LOCK, name)
        except Exception:  # noqa: BLE001 - a lock we cannot remove goes stale on its own
            pass

    def _refresh_loop(self) -> None:
        while not self._stop.wait(REFRESH_EVERY):
            self._refresh()

    def tick(self) -> None:
        """Refresh the lock if it is due (for a holder without the background thread)."""
        if self.name and _elapsed() - self._written_at >= REFRESH_EVERY:
            self._refresh()

    def _refresh(self) -> None:
        try:
            new = self._write()
        except Exception:  # noqa: BLE001 - retry at the next interval
            return
        now = _elapsed()
        with self._mutex:
            old, self.name = self.name, new
            self._longest_gap = max(self._longest_gap, now - self._written_at)
            self._written_at = now
        self._remove(old)

    def ensure_held(self) -> None:
        """Raise LockLost if the lock may have looked stale to another machine at any moment so far."""
        with self._mutex:  # (held across the stat: a refresh swaps names under it, then removes the old one)
            gap = max(self._longest_gap, _elapsed() - self._written_at)
            gone = False
            if self.name and gap <= SAFE_FOR:
                try:
                    self.backend.stat(ObjectType.LOCK, self.name)
                except ObjectNotFound:
                    gone = True
        if gone:
            raise LockLost(
                "the repository lock of this run was removed (by 'tuckbox unlock --all'?), so a prune may have "
                "started; it stops without saving; run it again (what was stored is reused)"
            )
        if gap > SAFE_FOR:
            raise LockLost(
                f"the repository lock went unrefreshed for {gap / 60:.0f} minutes (was this machine asleep, or the "
                "storage unreachable?), so a prune elsewhere may have removed data this run relies on; it stops "
                "without saving; run it again (what was stored is reused)"
            )

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._mutex:
            if self.name:
                self._remove(self.name)
                self.name = ""

    def __enter__(self) -> "Lock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
