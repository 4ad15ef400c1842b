"""A repository on a local (or mounted) file system.

Writes are crash-safe and never replace: the bytes go to a temporary file in
the same directory, are fsynced, then ``link``ed to the final name (which fails
if the name exists), and the directory is fsynced. A crash leaves at worst a
``.tmp-*`` file, which ``list`` ignores.

Large objects (packs) on a file system with a real block device are written
with ``O_DIRECT`` for their 4 KiB-aligned part: the bytes go from the pack
buffer to the disk without a copy into the page cache. That copy is the most
expensive step of storing a pack (measured on this project's VM: 0.9 s of
system time for 448 MiB of new files, 0.02 s with ``O_DIRECT``), and the
pages it would fill are ones the backup never reads again. Where the file
system refuses ``O_DIRECT`` (``EINVAL``), or the buffer is not aligned, the
object is written through the page cache as before; the fsyncs are the same
either way.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
from typing import Iterator

from ..errors import ObjectExists, ObjectNotFound, PermanentError, TransientError
from ..types import ObjectInfo, ObjectType
from .layout import directories, object_path

DIRECT_MIN = 1 << 20  # objects at least this large are written with O_DIRECT where possible
_ALIGN = 4096
_O_DIRECT = getattr(os, "O_DIRECT", 0)

_PERMANENT = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR}


class LocalBackend:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(os.path.expanduser(root))
        self.location = self.root
        self._direct: bool | None = None  # O_DIRECT writes: decided on the first large object

    def _direct_ok(self) -> bool:
        """Whether to try O_DIRECT: only on file systems backed by a block device.

        Network, FUSE, tmpfs, btrfs and ZFS mounts have an anonymous device
        (major 0); for them O_DIRECT is unsupported, uncached or emulated, so
        they keep the page cache.
        """
        if self._direct is None:
            try:
                self._direct = bool(_O_DIRECT) and os.major(os.stat(self.root).st_dev) != 0
            except OSError:
                self._direct = False
        return self._direct

    def _path(self, type: ObjectType, name: str) -> str:
        return os.path.join(self.root, object_path(type, name))

    def _vanished(self) -> PermanentError:
        return PermanentError(
            f"the repository {self.location} has disappeared (its files are gone): "
            "was the disk unmounted or the directory moved?"
        )

    def _fail(self, e: OSError, what: str, type: ObjectType | None = None) -> Exception:
        if e.errno == errno.ENOENT:
            if type not in (None, ObjectType.CONFIG, ObjectType.KEY) and not os.path.isdir(os.path.join(self.root, type.value)):
                return self._vanished()  # not one missing object: the repository's directories are gone
            return ObjectNotFound(f"{what} not found in repository {self.location}")
        if e.errno == errno.ENOSPC:
            return PermanentError(f"no space left on the device holding {self.location}; free some space and run again")
        if e.errno in _PERMANENT:
            return PermanentError(f"cannot access {what} in {self.location}: {e.strerror}")
        return TransientError(f"I/O error on {what} in {self.location}: {e.strerror}")

    def exists(self) -> bool:
        return os.path.isdir(self.root)

    def create(self) -> None:
        try:
            os.makedirs(self.root, exist_ok=True)
            for d in directories():
                os.makedirs(os.path.join(self.root, d), exist_ok=True)
        except OSError as e:
            raise self._fail(e, "repository directory") from None

    def save(self, type: ObjectType, name: str, data: bytes | memoryview) -> None:
        path = self._path(type, name)
        dirname = os.path.dirname(path)
        tmp = os.path.join(dirname, f".tmp-{secrets.token_hex(8)}")
        try:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileNotFoundError:
                # only a pack's shard directory (data/xx) may be missing; anything more means the
                # repository itself is gone, and recreating it would write objects nobody can read
                try:
                    if type is not ObjectType.PACK:
                        raise
                    os.mkdir(dirname)  # not makedirs: data/ itself must exist
                except FileExistsError:
                    pass
                except FileNotFoundError:
                    raise self._vanished() from None
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data).cast("B")
                done = self._write_direct(fd, view) if len(view) >= DIRECT_MIN and self._direct_ok() else 0
                _pwrite_all(fd, view[done:], done)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise ObjectExists(f"{type.value}/{name} already exists in {self.location}") from None
            finally:
                os.unlink(tmp)
            dfd = os.open(dirname, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as e:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise self._fail(e, f"{type.value}/{name}", type) from None

    def _write_direct(self, fd: int, view: memoryview) -> int:
        """Write the 4 KiB-aligned prefix of ``view`` bypassing the page cache; return its length.

        Returns 0 where O_DIRECT is refused (the caller then writes everything
        again, buffered, from offset 0); the descriptor is left in buffered mode
        either way, for the tail and the fallback.
        """
        aligned = len(view) - len(view) % _ALIGN
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | _O_DIRECT)
        except OSError:
            self._direct = False
            return 0
        try:
            _pwrite_all(fd, view[:aligned], 0)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            aligned = 0  # unsupported here, or an unaligned buffer: the caller rewrites it all, buffered
        finally:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)
        return aligned

    def load(self, type: ObjectType, name: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            with open(self._path(type, name), "rb", buffering=0) as f:
                if offset:
                    f.seek(offset)
                return f.read() if length is None else f.read(length)
        except OSError as e:
            raise self._fail(e, f"{type.value}/{name}", type) from None

    def stat(self, type: ObjectType, name: str) -> ObjectInfo:
        try:
            st = os.stat(self._path(type, name))
        except OSError as e:
            raise self._fail(e, f"{type.value}/{name}", type) from None
        return ObjectInfo(type, name, st.st_size)

    def list(self, type: ObjectType) -> Iterator[ObjectInfo]:
        if type is ObjectType.CONFIG:
            try:
                yield ObjectInfo(type, "config", os.stat(os.path.join(self.root, "config")).st_size)
            except FileNotFoundError:
                pass
            return
        base = os.path.join(self.root, type.value)
        dirs = [base]
        if type is ObjectType.PACK:
            try:
                dirs = [e.path for e in os.scandir(base) if e.is_dir()]
            except FileNotFoundError:
                return
        for d in dirs:
            try:
                entries = list(os.scandir(d))
            except FileNotFoundError:
                continue
            for e in entries:
                if e.name.startswith(".") or not e.is_file(follow_symlinks=False):
                    continue
                try:
                    size = e.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue
                yield ObjectInfo(type, e.name, size)

    def remove(self, type: ObjectType, name: str) -> None:
        try:
            os.unlink(self._path(type, name))
        except OSError as e:
            raise self._fail(e, f"{type.value}/{name}", type) from None

    def close(self) -> None:
        pass


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n
