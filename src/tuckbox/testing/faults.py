"""Test-only fault injection into real runs of the ``tuckbox`` command.

``tuckbox.cli.common.open_storage`` calls :func:`inject_faults` when the
environment variable ``TUCKBOX_TEST_FAULTS`` is set (only the test suite sets
it). The value is a comma-separated list of ``key=value``:

    seed=N          seed of every random choice (default 0)
    rate=P          FaultyBackend: each call fails with a "dropped connection" TransientError with probability P
    lost_ack=P      FaultyBackend: a save stores the object, then reports a dropped connection anyway
    truncate=P      FaultyBackend: a load silently returns a prefix of the bytes
    delay=S         FaultyBackend: each call first sleeps up to S seconds
    retry_delay=S   base delay of the retry wrapper (default: the wrapper's own, 0.5 s)
    crash_after=N   SIGKILL this process right after the N-th save has reached the storage
    crash_before=N  SIGKILL this process right before the N-th save reaches the storage
    crash_after_snapshots=N (or _data, _index, _locks, _keys): SIGKILL right after the N-th save of that kind
    crash_after_removes=N   SIGKILL right after the N-th removal of a pack, index or snapshot (prune, forget)
    quota_after=N   after N pack saves, every save fails with NoSpace (a storage quota)
    hang_after=N    after N saves, every call blocks for good, as on a server that stopped answering
    hang_data=1     from the first load of a pack (a restore's or check's data), every call blocks for good
    down_data=N     from the N-th load of a pack on, every call fails as on a server that went down (TransientError)

The crash/quota wrapper sits directly on the real backend, the FaultyBackend
above it, and the normal retry / rate-limit / connection wrappers above both,
so faults are seen and handled exactly like real storage failures.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import zlib
from typing import Iterator

from ..backends.wrappers import _Wrapper
from ..errors import NoSpace, TransientError, UsageError
from ..types import Backend, ObjectInfo, ObjectType

FAULTS_ENV = "TUCKBOX_TEST_FAULTS"
SAVES_LOG_ENV = "TUCKBOX_TEST_SAVES_LOG"  # with a crash_* or quota_after key: one line "n type name" per save
FAULTS_REPORT_ENV = "TUCKBOX_TEST_FAULTS_REPORT"  # append {"error": n, "lost_ack": n, "truncate": n} per process


# ----------------------------------------------------------------------------- fault injection hook


def parse_faults(spec: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{FAULTS_ENV}: '{item}' is not key=value")
        out[key.strip()] = float(value)
    known = {"seed", "rate", "lost_ack", "truncate", "delay", "retry_delay", "crash_after", "crash_before", "quota_after",
             "crash_after_removes", "hang_after", "hang_data", "down_data"}
    known |= {f"crash_after_{t.value}" for t in ObjectType}
    unknown = set(out) - known
    if unknown:
        raise ValueError(f"{FAULTS_ENV}: unknown key(s) {', '.join(sorted(unknown))}")
    return out


class CrashBackend(_Wrapper):
    """SIGKILLs the process at an exact write: before or after the N-th save (counting from 1).

    The counts live in shared memory, so a process forked from this one (the backup's pack process,
    which stores the packs) counts with it, and its crash kills the process it was forked from too:
    the N-th save is the N-th of the whole command, and the whole command dies, as a real crash would.
    """

    _KINDS = list(ObjectType)

    def __init__(
        self,
        inner: Backend,
        *,
        crash_after: int = 0,
        crash_before: int = 0,
        quota_after: int = -1,
        crash_after_kind: dict[ObjectType, int] | None = None,
        crash_after_removes: int = 0,
        hang_after: int = 0,
        hang_data: bool = False,
        down_data: int = 0,
    ) -> None:
        super().__init__(inner)
        self.hang_after = hang_after
        self.hang_data = hang_data
        self.down_data = down_data
        import multiprocessing

        self.crash_after_removes = crash_after_removes
        self.crash_after_kind = crash_after_kind or {}
        self.crash_after = crash_after
        self.crash_before = crash_before
        self.quota_after = quota_after
        # saves, packs counted against the quota, full (0/1), removes, then one count per object type
        # (and last: 1 once hang_data started hanging)
        self._counts = multiprocessing.get_context("fork").Array("q", 4 + len(self._KINDS) + 2)
        self._owner = os.getpid()

    def save(self, type: ObjectType, name: str, data: bytes | memoryview) -> None:
        c = self._counts
        with c.get_lock():
            c[0] += 1
            n = c[0]
            slot = 4 + self._KINDS.index(type)
            c[slot] += 1
            k = c[slot]
            if type is ObjectType.PACK and self.quota_after >= 0 and c[1] >= self.quota_after:
                c[2] = 1
            if type is ObjectType.PACK and not c[2]:
                c[1] += 1
            full = bool(c[2])
        self._maybe_hang(n - 1)
        if full:
            raise NoSpace(f"storage quota of {self.location} exceeded; free some space or raise the quota")
        if self.crash_before and n == self.crash_before:
            self._crash()
        self.inner.save(type, name, data)
        log = os.environ.get(SAVES_LOG_ENV)
        if log:
            with open(log, "a") as fh:
                fh.write(f"{n} {type.value} {name}\n")
        if (self.crash_after and n == self.crash_after) or self.crash_after_kind.get(type) == k:
            self._crash()

    def _maybe_hang(self, saves: int | None = None) -> None:
        """Block for good (a server that accepted the connection and then went silent) once ``hang_after``
        saves have reached the storage, or once ``hang_data`` saw a pack loaded; or fail at once (a server
        that went down) once ``down_data`` saw a pack loaded."""
        if self.down_data:
            if self._counts[-2]:
                raise TransientError(f"connection refused by {self.location} (test fault: down_data)")
            return
        if not self.hang_after and not self.hang_data:
            return
        with self._counts.get_lock():
            hanging = bool(self._counts[-2])
            if saves is None:
                saves = self._counts[0]
        if hanging or (self.hang_after and saves >= self.hang_after):
            while True:
                time.sleep(3600)

    def load(self, type: ObjectType, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if (self.hang_data or self.down_data) and type is ObjectType.PACK:
            with self._counts.get_lock():
                self._counts[-1] += 1
                if self.hang_data or self._counts[-1] >= self.down_data:
                    self._counts[-2] = 1
        self._maybe_hang()
        return self.inner.load(type, name, offset, length)

    def stat(self, type: ObjectType, name: str) -> ObjectInfo:
        self._maybe_hang()
        return self.inner.stat(type, name)

    def list(self, type: ObjectType) -> Iterator[ObjectInfo]:
        self._maybe_hang()
        return self.inner.list(type)

    def _crash(self) -> None:
        if os.getpid() != self._owner:
            os.kill(self._owner, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)


    def remove(self, type: ObjectType, name: str) -> None:
        self._maybe_hang()
        self.inner.remove(type, name)
        if type is ObjectType.LOCK:
            return
        c = self._counts
        with c.get_lock():
            c[3] += 1
            n = c[3]
        if self.crash_after_removes and n == self.crash_after_removes:
            self._crash()


def _command() -> str:
    """The tuckbox command this process runs (backup, restore, ...), for per-command fault seeds."""
    from ..cli.main import COMMANDS

    return next((a for a in sys.argv[1:] if a in COMMANDS), "")


def inject_faults(backend: Backend, spec: str, retries: bool | dict[str, float]) -> tuple[Backend, bool | dict[str, float]]:
    """Wrap ``backend`` as ``spec`` asks; return it and the retry configuration to use above it."""
    from ..backends.wrappers import FaultyBackend

    try:
        f = parse_faults(spec)
    except ValueError as e:
        raise UsageError(str(e)) from None
    b: Backend = backend
    kinds = {t: int(f[f"crash_after_{t.value}"]) for t in ObjectType if f"crash_after_{t.value}" in f}
    if kinds or any(
        k in f for k in ("crash_after", "crash_before", "quota_after", "crash_after_removes", "hang_after", "hang_data",
                         "down_data")
    ):
        b = CrashBackend(
            b,
            crash_after=int(f.get("crash_after", 0)),
            crash_before=int(f.get("crash_before", 0)),
            quota_after=int(f.get("quota_after", -1)),
            crash_after_kind=kinds,
            crash_after_removes=int(f.get("crash_after_removes", 0)),
            hang_after=int(f.get("hang_after", 0)),
            hang_data=bool(f.get("hang_data", 0)),
            down_data=int(f.get("down_data", 0)),
        )
    if any(f.get(k, 0) > 0 for k in ("rate", "lost_ack", "truncate", "delay")):
        faulty = FaultyBackend(
            b,
            seed=int(f.get("seed", 0)) ^ zlib.crc32(_command().encode()),  # per command, replayable
            error_rate=f.get("rate", 0.0),
            lost_ack_rate=f.get("lost_ack", 0.0),
            truncate_rate=f.get("truncate", 0.0),
            max_delay=f.get("delay", 0.0),
        )
        b = faulty
        report = os.environ.get(FAULTS_REPORT_ENV)
        if report:  # tell the test how many faults were really injected

            def write_report() -> None:
                with open(report, "a") as fh:
                    fh.write(json.dumps({"pid": os.getpid(), "argv": sys.argv[1:], **faulty.injected}) + "\n")

            import atexit

            atexit.register(write_report)
    if "retry_delay" in f and retries:
        retries = {**(retries if isinstance(retries, dict) else {}), "base_delay": f["retry_delay"]}
    return b, retries
