"""The files cache: lets a backup skip reading files that have not changed, in constant memory.

For each file the cache holds its path, (device, inode, size, mtime_ns,
ctime_ns), its atime and chunk ids, its whole tree node as stored last
time, already encoded (``msgpack`` of its canonical map), and that node's mode,
uid and gid. A file whose five values and mode and owner match is unchanged,
provided every chunk it names is still in the repository index; since every
other metadata change (xattrs, ACLs, link count) moves ctime (mode and owner are
compared because on FAT, sshfs and many FUSE file systems chmod and chown do
not), the stored node is reused as it is — as bytes, spliced into its
directory's tree without being decoded or encoded again
(``snapshot.tree.RawNode``), unless its atime changed.

The cache is a stream of records **in the order the backup walks** (in each
directory its files and other non-directories by name, then its
subdirectories by name, depth first), one stream per set of backup paths. The next run reads it in lockstep with its own walk — a merge join —
so memory does not grow with the number of files, and writes its new stream
as it goes. A finished run renames its stream over the old one; an
interrupted run leaves its stream as ``<name>.partial``, consulted first by
the next run (it is flushed every second, so it survives ``kill -9``), so a
resumed backup re-reads only files that were not yet saved. Files modified
within ``RACY_NS`` of being read (``COARSE_RACY_NS`` where times are whole seconds) are never trusted,
nor pseudo-files (/proc, sysfs: their content changes while their stat stays): their record only says
the path was there (so the next run reports
them as changed rather than new).

A stream closed by its run ends in a trailer, ``{"end": BLAKE3 of every byte before it}``, checked when
the stream is opened: an unchanged file's stored node goes into the new snapshot as it is, so one
damaged byte of the local disk would otherwise make every later snapshot lose that file, or its whole
directory, while each backup reports success. A damaged stream is not used at all. A stream without a
trailer (a killed run's, or one an older tuckbox wrote, which ignores the trailer) is used record by
record, each checked against its own node before it is trusted.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from pathlib import Path
from typing import Any, BinaryIO

import blake3
import msgpack

from ..procs import still_writing
from ..repository.cache import make_state_dir

RACY_NS = 1_000_000_000
# a file system whose times are whole seconds (FAT: 2-second steps, ctime the same field; sshfs; ext3's small
# inodes) hides a second write for up to 2 s: a file is trusted only when its times are older than that
COARSE_RACY_NS = 3_000_000_000
_EMPTY = msgpack.packb({})
UNTRUSTED_CTIME = -1  # the ctime of a record that must never match (a racy file's)
# records: [walk-order key, dev, ino, size, mtime_ns, ctime_ns, atime_ns, chunk ids, packed node map, and its
# mode, uid and gid] (those three are compared too: on FAT, sshfs and many FUSE file systems chmod and chown
# leave ctime as it was)
VERSION = 6
_FIELDS = 12
_TRAILER_LEN = len(msgpack.packb({"end": bytes(32)}))  # the trailer: {"end": BLAKE3 of the bytes before it}


def _trailer(digest: bytes) -> bytes:
    return msgpack.packb({"end": digest})


def _verify(f: BinaryIO, size: int) -> bool | None:
    """Whether the stream's trailer matches its bytes; None when it has no trailer (it was never closed)."""
    if size < _TRAILER_LEN:
        return None
    tail = os.pread(f.fileno(), _TRAILER_LEN, size - _TRAILER_LEN)
    try:
        doc = msgpack.unpackb(tail)
    except Exception:  # noqa: BLE001 - not a trailer
        return None
    if not (isinstance(doc, dict) and list(doc) == ["end"] and type(doc["end"]) is bytes and len(doc["end"]) == 32):
        return None
    digest = _digest(f.fileno(), size - _TRAILER_LEN)
    return digest is not None and digest == doc["end"]


def _digest(fd: int, end: int) -> bytes | None:
    """BLAKE3 of the first ``end`` bytes of ``fd``, read a block at a time (not mapped: a mapping of a large
    cache would count in the backup's peak memory); None if the file is shorter."""
    hasher = blake3.blake3()
    pos = 0
    while pos < end:
        block = os.pread(fd, min(1 << 20, end - pos), pos)
        if not block:
            return None
        hasher.update(block)
        pos += len(block)
    return hasher.digest()


def _consistent(rec: list[Any]) -> bool:
    """Whether a record of an unverified stream agrees with itself: its node decodes, names the file of its
    key, and holds its size and chunk ids (a damaged byte there would go into the snapshot as it is)."""
    try:
        node = msgpack.unpackb(rec[8])
    except Exception:  # noqa: BLE001 - damaged
        return False
    return (
        isinstance(node, dict) and node.get("n") == rec[0].rpartition(b"\x00\x01")[2] and node.get("s", 0) == rec[3]
        and [c for c in node.get("c", ()) if type(c) is bytes] == rec[7]
        and _owner_fields(node) == rec[9:]
    )


def _owner_fields(node: dict[str, Any]) -> list[Any]:
    """The mode (permission bits), uid and gid a node holds: the record's last three fields."""
    return [node.get("m", 0), node.get("u", 0), node.get("g", 0)]


def _racy_ns(st: os.stat_result) -> int:
    """How long after its last change a file may still change without its stat showing it: the file system's
    timestamp granularity (whole seconds when both times are), plus a margin for the kernel's clock tick."""
    if st.st_mtime_ns % 1_000_000_000 == 0 and st.st_ctime_ns % 1_000_000_000 == 0:
        return COARSE_RACY_NS
    return RACY_NS


def _order(path: bytes) -> bytes:
    """Sort key of a file path in walk order: in every directory, the entries that are not
    directories come first (by name), then the subdirectories (by name), depth first.

    As a byte string, so comparisons run in C: each directory component is
    ``\x02 name \x00`` and the file name ``\x01 name`` (names hold no NUL or
    slash), which orders exactly like the walk.
    """
    head, _, name = path.rpartition(b"/")
    return b"\x02" + head.replace(b"/", b"\x00\x02") + b"\x00\x01" + name


def order_prefix(directory: bytes) -> bytes:
    """The part of ``_order(os.path.join(directory, name))`` before ``name``: the walk order key of a
    directory's entry is ``order_prefix(directory) + name``."""
    return _order(os.path.join(directory, b"x"))[:-1]


class _Cursor:
    """Reads one cache stream forward, in walk order, knowing each record's byte range."""

    def __init__(self, path: Path | None) -> None:
        self._unpacker: Any = None
        self._f: BinaryIO | None = None
        self.current: list[Any] | None = None
        self.span = (0, 0)  # byte range of the current record in the file
        self.header_end = 0
        self.size = 0
        self.version: Any = None
        self._key = b""
        self.verified = False  # the stream's trailer matched: its records need no check of their own
        if path is None:
            return
        try:
            self._f = open(path, "rb")
            self.size = os.fstat(self._f.fileno()).st_size
            verified = _verify(self._f, self.size)
        except OSError:
            return
        if verified is False:
            return  # damaged: behave as empty
        if verified:
            self.verified = True
            self.size -= _TRAILER_LEN  # (where the records end)
        self._unpacker = msgpack.Unpacker(self._f, use_list=True, max_buffer_size=64 << 20)
        try:
            header = self._unpacker.unpack()
            self.version = header.get("v") if isinstance(header, dict) else None
            if self.version not in (4, 5, VERSION):
                self._unpacker = None
        except Exception:  # noqa: BLE001 - unreadable: behave as empty
            self._unpacker = None
        self.header_end = self._unpacker.tell() if self._unpacker is not None else 0
        self._end = self.header_end  # where the next record starts
        self._advance()

    def _advance(self) -> None:
        self.current = None
        unpacker = self._unpacker
        if unpacker is None:
            return
        start = self._end
        try:
            rec = unpacker.unpack()
        except msgpack.OutOfData:
            self._unpacker = None
            return
        except Exception:  # noqa: BLE001 - a torn or damaged tail ends the stream
            self._unpacker = None
            return
        if self.version == 4 and isinstance(rec, list) and len(rec) == 7 and isinstance(rec[6], dict):
            # written by an older tuckbox: read as a version 6 record (and rewritten, never copied)
            node = rec[6]
            chunks = [c for c in node.get("c", ()) if type(c) is bytes]
            rec = rec[:6] + [node.get("at", 0), chunks, msgpack.packb(node)] + _owner_fields(node)
        elif self.version == 5 and isinstance(rec, list) and len(rec) == 9 and type(rec[8]) is bytes:
            try:
                node = msgpack.unpackb(rec[8])
            except Exception:  # noqa: BLE001 - damaged: a record no file matches
                node = None
            rec = rec + (_owner_fields(node) if isinstance(node, dict) else [None, None, None])
        if (
            type(rec) is list and len(rec) == _FIELDS and type(rec[0]) is bytes
            and type(rec[7]) is list and type(rec[8]) is bytes
        ):
            self.current = rec
            self._end = end = unpacker.tell()
            self.span = (start, end)
            self._key = rec[0]
        else:
            self._unpacker = None

    def find(self, key: bytes) -> list[Any] | None:
        while self.current is not None and self._key < key:
            self._advance()
        if self.current is not None and self._key == key:
            return self.current
        return None

    def read_range(self, start: int, end: int) -> bytes:
        assert self._f is not None
        return os.pread(self._f.fileno(), end - start, start)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


class FilesCache:
    """The files cache of one backup; used by its walking thread only."""

    def __init__(self, directory: Path | None, paths: list[bytes] | None = None) -> None:
        self.dir = directory
        self._pack = msgpack.Packer().pack  # reused: a new Packer per record costs more than the packing
        self.path: Path | None = None
        self._out: BinaryIO | None = None
        self._last: list[Any] | None = None
        self._last_cursor: _Cursor | None = None
        self._last_written = b""
        self._key = b""
        self._key_path = b""
        self.last_known = False
        self.last_atime = 0
        self.last_chunks: list[bytes] = []
        self._copy = (0, 0)  # byte range of the old stream still to be copied
        self._identical = True  # the new stream so far equals a prefix of the old one
        self._cursors: list[_Cursor] = []
        self.entries_written = 0
        self.problem = ""  # why the new stream could not be written (the next run then reads files again)
        self._holding = False
        self._pending: deque[tuple[list[Any], _Cursor | None, tuple[int, int]]] = deque()  # held back (hold_back)
        if directory is None:
            self._old = self._partial = _Cursor(None)
            return
        names = sorted(os.fsdecode(p) for p in (paths or []))
        digest = hashlib.sha256("\0".join(names).encode("utf-8", "surrogateescape")).hexdigest()[:32]
        try:
            make_state_dir(directory)
        except OSError:
            self.dir = None
            self._old = self._partial = _Cursor(None)
            return
        self.path = directory / digest
        try:
            self._adopt_leftovers()
        except OSError:
            pass  # (a read-only cache, or another run adopting them at the same time): used as they are
        self._partial = _Cursor(self._partial_path)
        self._old = _Cursor(self.path)
        self._cursors = [c for c in (self._partial, self._old) if c.current is not None]
        self._last_written = b""

    def _adopt_leftovers(self) -> None:
        """A run killed outright leaves ``.new-<pid>``: keep the longest stream as the partial one."""
        assert self.path is not None
        candidates = [p for p in self.path.parent.glob(self.path.name + ".new-*") if _dead(p)]
        if not candidates:
            return
        if self._partial_path.exists():
            candidates.append(self._partial_path)
        best = max(candidates, key=lambda p: p.stat().st_size)
        for p in candidates:
            if p != best:
                p.unlink(missing_ok=True)
        if best != self._partial_path:
            os.replace(best, self._partial_path)

    @property
    def _partial_path(self) -> Path:
        assert self.path is not None
        return self.path.with_name(self.path.name + ".partial")

    @property
    def _new_path(self) -> Path:
        assert self.path is not None
        return self.path.with_name(self.path.name + f".new-{os.getpid()}")

    # -- reading (calls come in walk order) --

    def lookup_raw(self, path: bytes, st: os.stat_result, key: bytes | None = None) -> bytes | None:
        """The stored node (encoded) of an unchanged file, or None (``last_known`` then says whether
        the last complete run had the path, i.e. the file changed rather than being new: a file only an
        interrupted run's stream names may never have been saved, and is new to the repository). On a hit,
        ``last_chunks`` and ``last_atime`` are the record's chunk ids and atime. ``key``, if given,
        is the path's walk-order key (``order_prefix`` of its directory + its name)."""
        self._last = None
        self.last_known = False
        if key is None:
            key = _order(path)
        self._key = key
        self._key_path = path
        for cursor in self._cursors:
            rec = cursor.find(key)
            if rec is not None:
                if cursor is self._old:
                    self.last_known = True
                if (rec[1], rec[2], rec[3], rec[4], rec[5], rec[9], rec[10], rec[11]) == (
                    st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode & 0o7777, st.st_uid,
                    st.st_gid,
                ) and (cursor.verified or _consistent(rec)):
                    if cursor is not self._old:  # (a hit here is no hit yet: its chunks may never have been stored)
                        self.last_known = self._old.find(key) is not None
                    self._last = rec
                    self._last_cursor = cursor
                    self.last_atime = rec[6]
                    self.last_chunks = rec[7]
                    return rec[8]
        return None

    def lookup(self, path: bytes, st: os.stat_result) -> dict[str, Any] | None:
        """``lookup_raw``, decoded."""
        raw = self.lookup_raw(path, st)
        if raw is None:
            return None
        try:
            node = msgpack.unpackb(raw)
        except Exception:  # noqa: BLE001 - a damaged record is a miss
            return None
        return node if isinstance(node, dict) else None

    # -- writing (in walk order) --

    # Records kept from the old stream are not re-encoded: consecutive ones are copied as one byte
    # range. While the new stream is exactly the old one's prefix, nothing is written at all, and a
    # run that changes nothing leaves the cache file untouched.

    def _open_out(self) -> bool:
        if self.path is None:
            return False
        if self._out is None:
            try:
                self._out = open(self._new_path, "wb", buffering=256 * 1024)
                self._out.write(msgpack.packb({"v": VERSION}))
            except OSError as e:
                self._give_up(e)  # stop caching; never fail a backup over it
                return False
        return True

    def _flush_copy(self) -> None:
        start, end = self._copy
        if end > start and self._open_out():
            assert self._out is not None
            try:
                self._out.write(self._old.read_range(start, end))
            except OSError as e:
                self._give_up(e)
        self._copy = (0, 0)

    def _give_up(self, e: OSError) -> None:
        if self._out is not None:
            try:
                self._out.close()
            except OSError:
                pass  # (what it holds unwritten is given up with it)
        self._out = None
        self.path = None
        self.problem = self.problem or e.strerror or type(e).__name__

    def _write(self, rec: list[Any]) -> None:
        if self.path is None:
            return
        if self._pending:
            self._release(rec[0])
        self._identical = False
        self._flush_copy()
        if not self._open_out():
            return
        assert self._out is not None
        try:
            self._out.write(self._pack(rec))
            self._last_written = rec[0]
            self.entries_written += 1
        except OverflowError:
            pass  # a time msgpack cannot hold (a file dated 31690): the file is simply read again next time
        except OSError as e:
            self._give_up(e)

    def hold_back(self, on: bool) -> None:
        """While on, what ``keep`` and ``remember`` are given waits (in order) until a later ``remember``
        passes it or ``drain`` is called: a directory's files that must be read are remembered after its
        unchanged files were looked up, and a record written out of walk order is never found again (the
        merge join passes it), so the file would be read again by every later run."""
        self._holding = on

    def drain(self) -> None:
        """Write every record held back."""
        self._release(None)

    def _release(self, before: bytes | None) -> None:
        pending = self._pending
        while pending and (before is None or pending[0][0][0] < before):
            rec, cursor, span = pending.popleft()
            if cursor is None:
                self._write(rec)
            else:
                self._keep(rec, cursor, span)

    def keep(self, path: bytes) -> None:
        """The file just looked up is unchanged: carry its record over."""
        rec = self._last
        if rec is None or self.path is None:
            return
        cursor = self._last_cursor
        assert cursor is not None
        if self._holding:
            self._pending.append((rec, cursor, cursor.span))
            return
        self._keep(rec, cursor, cursor.span)

    def _keep(self, rec: list[Any], cursor: _Cursor, span: tuple[int, int]) -> None:
        self._last_written = rec[0]
        self.entries_written += 1
        if cursor is not self._old or self._old.version != VERSION:
            self._write(rec)  # (an older version's bytes cannot be copied into this stream)
            return
        start, end = span
        if self._copy[1] and self._copy[1] == start:
            self._copy = (self._copy[0], end)  # extends the pending range
            return
        if self._identical and not self._copy[1] and start == self._old.header_end:
            self._copy = (start, end)  # the first record: the new stream may still equal the old one
            return
        self._identical = False
        self._flush_copy()
        self._copy = (start, end)

    def remember(
        self, path: bytes, st: os.stat_result, node_map: dict[str, Any], read_at_ns: int, key: bytes | None = None,
        *, trusted: bool = True,
    ) -> None:
        """Record a file just read (``key``: its walk-order key, when the caller has it at hand; ``trusted``
        False: its stat does not show when its content changes, so it is only recorded as known)."""
        if key is None:
            key = self._key if self._key_path == path else _order(path)
        if not trusted or max(st.st_mtime_ns, st.st_ctime_ns) >= read_at_ns - _racy_ns(st):
            # may change again within the same clock tick: recorded as known (the next run counts it as
            # changed, not new) but never trusted (no real file has a ctime before 1970)
            self._record(
                [key, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, UNTRUSTED_CTIME, 0, [], _EMPTY, 0, 0, 0]
            )
            return
        chunks = [c for c in node_map.get("c", ()) if type(c) is bytes]
        try:
            raw = self._pack(node_map)
        except OverflowError:
            return  # a time msgpack cannot hold (a file dated 1500 or 31690): not remembered, read again next time
        self._record([
            key, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, node_map.get("at", 0), chunks, raw,
            *_owner_fields(node_map),
        ])

    def _record(self, rec: list[Any]) -> None:
        if self._holding:
            if self.path is not None:
                self._pending.append((rec, None, (0, 0)))
            return
        self._write(rec)

    def flush(self) -> None:
        """Push buffered records to the OS (they then survive the process being killed)."""
        if not self._identical:
            self._flush_copy()
        if self._out is not None:
            try:
                self._out.flush()
            except OSError as e:
                self.problem = self.problem or e.strerror or type(e).__name__

    def finish(self, complete: bool) -> None:
        """End of run: a complete run replaces the cache; an interrupted one leaves a partial stream."""
        try:
            self._finish(complete)
        finally:
            self._old.close()
            self._partial.close()

    def _finish(self, complete: bool) -> None:
        self._holding = False
        self.drain()
        if self.path is None:
            return
        if complete and self._identical and self._old.verified and self._copy[1] == self._old.size:
            # every old record was kept, in order, and nothing else happened: the cache is already right
            self._partial_path.unlink(missing_ok=True)
            return
        if complete and self._identical and self._old.size == 0 and self.entries_written == 0:
            return
        self._identical = False
        self._flush_copy()
        try:
            if self._out is None:
                if complete:
                    self._partial_path.unlink(missing_ok=True)
                return
            if not complete:
                # keep what the earlier partial stream knew beyond the point this run reached
                for cursor in (self._partial,):
                    while cursor.current is not None:
                        if cursor.current[0] > self._last_written and (cursor.verified or _consistent(cursor.current)):
                            self._out.write(msgpack.packb(cursor.current))
                        cursor._advance()
            self._out.flush()
            with open(self._new_path, "rb") as written:  # (the stream is open for writing only)
                digest = _digest(written.fileno(), os.fstat(self._out.fileno()).st_size)
            assert digest is not None  # (flushed: every byte is in the file)
            self._out.write(_trailer(digest))
            self._out.close()
            self._out = None
            if complete:
                os.replace(self._new_path, self.path)
                self._partial_path.unlink(missing_ok=True)
            else:
                os.replace(self._new_path, self._partial_path)
        except OSError as e:
            self.problem = self.problem or e.strerror or type(e).__name__

    def abandon(self) -> None:
        """The run failed: keep what it wrote as the partial stream (entries are verified on use)."""
        self.finish(complete=False)


def _dead(path: Path) -> bool:
    """Whether the run that wrote ``<stream>.new-<pid>`` is gone (``procs``: after a power cut and a reboot its
    pid is soon another program's; taken for the writer, the stream was never adopted, and the next runs read
    again every file the killed one had finished)."""
    try:
        pid = int(path.name.rsplit("-", 1)[1])
        written = path.stat().st_mtime
    except (IndexError, ValueError):
        return True
    except OSError:
        return False  # (gone already: another run adopted it)
    return not still_writing(pid, written)
