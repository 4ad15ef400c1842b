"""The pack journal: local, durable record of packs uploaded but perhaps not yet indexed.

After every pack upload, the backup appends the pack's record (name, epk,
kind, size, blob entries) to ``state/journal/<run id>`` and fsyncs it. An
index object naming the packs is written every few packs and at the end; if
the process dies in between, the next backup on this machine *adopts* the
journaled packs — each is confirmed to exist with the recorded size, then an
index naming them is written — so no pack that was fully stored is ever
uploaded again. A journal is deleted once everything in it is indexed.

Format: one msgpack map per record, appended; a torn last record (crash
while appending) is ignored.
"""

from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path
from typing import Iterator

import msgpack

from ..pack.format import BlobEntry
from ..procs import still_writing
from ..types import BlobType
from .cache import make_state_dir
from .index import PackRecord


def encode_record(p: PackRecord) -> bytes:
    """A pack's record as the journal holds it (also how the pack process reports a stored pack)."""
    return msgpack.packb(
        {"id": p.name, "epk": p.epk, "kind": int(p.kind), "size": p.size, "blobs": p.blobs}
    )


def decode_record(doc: dict) -> PackRecord:
    return PackRecord(
        name=str(doc["id"]),
        epk=bytes(doc["epk"]),
        kind=BlobType(doc["kind"]),
        size=int(doc["size"]),
        blobs=tuple(BlobEntry.from_list(b) for b in doc["blobs"]),
    )


class PackJournal:
    def __init__(self, directory: Path | None) -> None:
        self.dir = directory
        self.path: Path | None = None
        self._fd: int | None = None
        self._lock = threading.Lock()  # upload threads record while the run's thread may close
        self._removed = False
        self.problem = ""  # why a record could not be written (an interrupted run could not resume from it)
        if directory is not None:
            try:
                make_state_dir(directory)
                self.path = directory / f"{secrets.token_hex(8)}-{os.getpid()}"
            except OSError:
                self.dir = None

    def record(self, pack: PackRecord) -> None:
        if self.path is None:
            return
        with self._lock:
            if self._removed:
                return  # the run ended and removed its journal: everything it recorded is indexed
            try:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
                os.write(self._fd, encode_record(pack))
                os.fsync(self._fd)
            except OSError as e:  # the journal only saves work on resume; never fail a backup over it
                self.problem = self.problem or e.strerror or type(e).__name__

    def close(self, *, remove: bool) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if remove and self.path is not None:
                self._removed = True
                try:
                    self.path.unlink()
                except OSError:
                    pass

    def leftovers(self) -> list[Path]:
        """Journals of earlier runs: not this one's, and not those of backups still running on this
        machine with the same cache (adopting one would delete it from under its writer)."""
        if self.dir is None:
            return []
        try:
            return [p for p in self.dir.iterdir() if p != self.path and not p.name.startswith(".") and not _running(p)]
        except OSError:
            return []


def _running(path: Path) -> bool:
    """Whether the process that named the journal ``<run>-<pid>`` is still writing it (``procs``: after a power
    cut and a reboot the pid is soon another program's; taken for the writer, the journal was never adopted,
    the packs it names were uploaded again and the next prune removed them)."""
    try:
        pid = int(path.name.rsplit("-", 1)[1])
        written = path.stat().st_mtime
    except (IndexError, ValueError, OSError):
        return False
    return still_writing(pid, written)


def read_journal(path: Path) -> Iterator[PackRecord]:
    try:
        data = path.read_bytes()
    except OSError:
        return
    unpacker = msgpack.Unpacker()
    unpacker.feed(data)
    try:
        for doc in unpacker:
            yield decode_record(doc)
    except (ValueError, KeyError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return  # a torn or damaged tail: what came before is still good
    except Exception:  # noqa: BLE001 - an unreadable journal only costs re-uploading
        return
