"""A repository on a local (or mounted) file system.

Writes are crash-safe and never replace: the bytes go to a temporary file in
the same directory, are fsynced, then ``link``ed to the final name (which fails
if the name exists), and the directory is fsynced. A crash leaves at worst a
``.tmp-*`` file, which ``list`` ignores. On file systems without hard links
(FAT and exFAT, as USB disks often are) the temporary file is renamed instead,
with ``RENAME_NOREPLACE`` where the file system takes it (``_publish``).

Objects are private to their owner (mode 0600) unless the repository's
``config`` is readable by its group: then, as restic does, every object is
made group-readable (0640) and every directory tuckbox makes group-listable
(0750; 0770 when the config is group-writable), whatever the umask, so that a
repository shared by a group stays readable by the group as it grows
(``_modes``). New files take their group from a directory with the
set-group-ID bit: ``chgrp -R backup REPO; chmod -R g+rX REPO; find REPO -type d
-exec chmod g+s {} +``.

Large objects (packs) are written with ``O_DIRECT`` for their aligned part
where the file system allows (``tuckbox.directio``): straight from the pack
buffer to the disk, without a copy into the page cache, which the backup
never reads back; the rest, and everything where ``O_DIRECT`` is refused,
through the page cache. The fsyncs are the same either way.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import secrets
from typing import Iterator

from .. import directio
from ..errors import NoSpace, NotARepository, ObjectExists, ObjectNotFound, PermanentError, TransientError
from ..text import display_path
from ..types import ObjectInfo, ObjectType
from .layout import directories, is_object_name, object_label, object_path

DIRECT_MIN = 1 << 20  # objects at least this large are written with O_DIRECT where possible

_SHARD = re.compile(r"^[0-9a-f]{2}$")


def local_root(backend: object) -> str | None:
    """The directory of a local repository under any wrappers (retries, limits), or None for other storage."""
    while not isinstance(backend, LocalBackend) and hasattr(backend, "inner"):
        backend = backend.inner  # type: ignore[attr-defined]
    return backend.root if isinstance(backend, LocalBackend) else None

_PERMANENT = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR}
# what link() says on a file system without hard links (vfat/exfat: EPERM; others: not supported)
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK}

_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)  # glibc >= 2.28
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def rename_noreplace(src: str, dst: str) -> None:
    """``rename`` that fails with FileExistsError rather than replace ``dst`` (Linux renameat2)."""
    if _renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available", dst)
    if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) != 0:
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(err, os.strerror(err), dst)
        raise OSError(err, os.strerror(err), dst)


def _fsync_dir(path: str) -> None:
    """Make a directory's new entry durable (best effort: some file systems refuse fsync on directories)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _owner_hint(filename: object, root: str) -> str:
    """Why access was refused, when it is another user's: a repository written by commands run as different
    users (root's timer and a user's manual run) ends up with objects and directories only one of them can
    read or write. The file named, else its directory, owned by someone else: say whose, and what to do."""
    if not isinstance(filename, (str, bytes)):
        return ""
    me = os.geteuid()
    for path, which in ((filename, "it"), (os.path.dirname(filename), "its directory")):
        try:
            owner = os.stat(path).st_uid
        except OSError:
            continue
        if owner == me:
            return ""
        fix = "run every command on this repository as one user"
        if owner == 0:  # (root can use a repository that another user owns)
            name = _user_name(me)
            chown = f"chown -R {me if name.startswith('uid ') else name} {display_path(root)}"
            fix += f", or give it back to {name}: {chown} (as root)"
        return f": {which} belongs to {_user_name(owner)}, and tuckbox runs as {_user_name(me)}; {fix}"
    return ""


def _user_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (KeyError, ImportError):
        return f"uid {uid}"


def _own(type: ObjectType, entry: os.DirEntry, shard: str) -> bool:
    """Whether a directory entry is an object of ``type`` (in ``shard``) or a temporary file of one."""
    if entry.name.startswith(".tmp-"):
        return True
    return is_object_name(type, entry.name) and entry.name.startswith(shard) and entry.is_file(follow_symlinks=False)


class LocalBackend:
    checks_whole_loads = True  # a whole load reads the file to its end (objects appear whole: renamed into place)

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(os.path.expanduser(root))
        self.location = display_path(self.root)  # (for messages: a name that is not UTF-8 shown as \xff)
        self._direct: bool | None = None  # O_DIRECT writes: decided on the first large object
        self._publish_by = "link"  # how a written object gets its name (see _publish)
        self._shared: tuple[int, int] | None = None  # (file mode, directory mode) for a group's repository

    def _modes(self) -> tuple[int, int] | None:
        """The modes for new objects and directories when the config is group-readable, else None (private);
        looked up once (one stat of the config)."""
        if self._shared is None:
            try:
                mode = os.stat(os.path.join(self.root, "config")).st_mode
            except OSError:
                mode = 0
            if mode & 0o040:
                self._shared = (0o640, 0o770 if mode & 0o020 else 0o750)
            else:
                self._shared = (0o600, 0o700)
        return self._shared if self._shared[0] != 0o600 else None

    def _mkdir(self, path: str) -> None:
        os.mkdir(path)
        modes = self._modes()
        if modes is not None:  # (not left to the umask; the set-group-ID bit a shared parent passed on stays)
            os.chmod(path, (os.stat(path).st_mode & 0o7000) | modes[1])

    def _publish(self, tmp: str, path: str) -> None:
        """Give the written temporary file its final name, never replacing an existing object
        (FileExistsError). ``link`` where the file system has hard links; where it has none (FAT, exFAT: USB
        disks) ``renameat2(RENAME_NOREPLACE)``; where that is refused too (exFAT through FUSE), a check
        for the name, then ``rename``: two writers racing to store the same name there both store the
        same content (names are content hashes, or random), so the race loses nothing."""
        if self._publish_by == "link":
            try:
                os.link(tmp, path)
                return
            except OSError as e:
                if e.errno not in _NO_LINKS:
                    raise
                self._publish_by = "renameat2"
        if self._publish_by == "renameat2":
            try:
                rename_noreplace(tmp, path)
                return
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                self._publish_by = "rename"
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "File exists", path)
        os.rename(tmp, path)

    def _direct_ok(self) -> bool:
        if self._direct is None:
            self._direct = directio.worth_it(self.root)
        return self._direct

    def _path(self, type: ObjectType, name: str) -> str:
        return os.path.join(self.root, object_path(type, name))

    def _vanished(self) -> PermanentError:
        return PermanentError(
            f"the repository {self.location} has disappeared (its files are gone): "
            "was the disk unmounted or the directory moved?"
        )

    def _has_config(self) -> bool:
        """Whether the repository is there: its ``config`` is (an unmounted disk's mount point has none)."""
        return os.path.isfile(os.path.join(self.root, "config"))

    def _make_dirs(self, type: ObjectType, dirname: str) -> None:
        """Create the missing directory ``dirname`` of an object of ``type`` about to be saved. A pack's shard
        (``data/xx``) is made whenever ``data/`` exists; a missing object directory (``index/``, ``data/``,
        ...) is made again only where the repository's config is: otherwise the repository itself is gone
        (an unmounted disk, a moved directory), and recreating it would write objects nobody can read."""
        top = os.path.join(self.root, type.value)
        if not os.path.isdir(top):
            if not self._has_config():
                raise self._vanished()
            try:
                self._mkdir(top)
            except FileExistsError:
                pass
            _fsync_dir(self.root)
        if dirname != top:
            try:
                self._mkdir(dirname)  # not makedirs: only one level (a pack's shard)
            except FileExistsError:
                pass
            _fsync_dir(top)

    def _not_a_directory(self) -> NotARepository | None:
        """The error to give when the repository's path is taken by something that is not a directory (a
        file, a device): no retry can help, and no repository can be made there. None if it is not so."""
        if os.path.lexists(self.root) and not os.path.isdir(self.root):
            return NotARepository(
                f"{self.location} exists and is not a directory, so it is not (and cannot become) a tuckbox "
                "repository; check the path"
            )
        return None

    def _fail(self, e: OSError, what: str, type: ObjectType | None = None) -> Exception:
        if e.errno in (errno.ENOTDIR, errno.EEXIST):
            taken = self._not_a_directory()
            if taken is not None:
                return taken
        if e.errno == errno.ENOENT:
            if (type not in (None, ObjectType.CONFIG, ObjectType.KEY) and not self._has_config()
                    and not os.path.isdir(os.path.join(self.root, type.value))):
                return self._vanished()  # not one missing object: the repository's directories are gone
            return ObjectNotFound(f"{what} not found in repository {self.location}")
        if e.errno == errno.ENOSPC:
            return NoSpace(f"no space left on the device holding {self.location}; free some space and run again")
        if e.errno == errno.EDQUOT:
            return NoSpace(f"disk quota exceeded on the device holding {self.location}; free some space or raise "
                           "the quota, and run again")
        if e.errno == errno.EROFS:
            return PermanentError(f"cannot write {what} in {self.location}: the file system holding it is mounted "
                                  "read-only; remount it read-write (snapshots, ls, restore and check work as it is)")
        if e.errno in (errno.EACCES, errno.EPERM):
            return PermanentError(f"cannot access {what} in {self.location}: {e.strerror}{_owner_hint(e.filename, self.root)}")
        if e.errno in _PERMANENT:
            return PermanentError(f"cannot access {what} in {self.location}: {e.strerror}")
        return TransientError(f"I/O error on {what} in {self.location}: {e.strerror}")

    def exists(self) -> bool:
        taken = self._not_a_directory()
        if taken is not None:
            raise taken
        return os.path.isdir(self.root)

    def create(self) -> None:
        taken = self._not_a_directory()
        if taken is not None:
            raise taken
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
                # a pack's shard directory (data/xx) is made when first needed; an object directory only
                # while the repository's config is there (see _make_dirs)
                if type in (ObjectType.CONFIG, ObjectType.KEY):
                    raise
                try:
                    self._make_dirs(type, dirname)
                except FileNotFoundError:
                    raise self._vanished() from None
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                modes = self._modes()
                if modes is not None:
                    os.fchmod(fd, modes[0])
                view = memoryview(data).cast("B")
                done = 0
                if len(view) >= DIRECT_MIN and self._direct_ok():
                    # the aligned part straight from the buffer (a pack's is page-aligned); refused: all buffered
                    done = len(view) - len(view) % directio.ALIGN
                    if not directio.write_direct(fd, view[:done], 0):
                        done = 0
                directio.pwrite_all(fd, view[done:], done)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                self._publish(tmp, path)
            except FileExistsError:
                raise ObjectExists(f"{type.value}/{name} already exists in {self.location}") from None
            finally:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass  # renamed: nothing left behind
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
            raise self._fail(e, object_label(type, name), type) from None

    def load(self, type: ObjectType, name: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            with open(self._path(type, name), "rb", buffering=0) as f:
                if offset:
                    f.seek(offset)
                return f.read() if length is None else f.read(length)
        except OSError as e:
            raise self._fail(e, object_label(type, name), type) from None

    def stat(self, type: ObjectType, name: str) -> ObjectInfo:
        try:
            st = os.stat(self._path(type, name))
        except OSError as e:
            raise self._fail(e, object_label(type, name), type) from None
        return ObjectInfo(type, name, st.st_size)

    def list(self, type: ObjectType) -> Iterator[ObjectInfo]:
        if type is ObjectType.CONFIG:
            try:
                yield ObjectInfo(type, "config", os.stat(os.path.join(self.root, "config")).st_size)
            except FileNotFoundError:
                pass
            return
        base = os.path.join(self.root, type.value)
        dirs = [(base, "")]
        if type is ObjectType.PACK:
            try:
                dirs = [(e.path, e.name) for e in os.scandir(base) if _SHARD.match(e.name) and e.is_dir()]
            except FileNotFoundError:
                return
        for d, shard in dirs:
            try:
                entries = list(os.scandir(d))
            except FileNotFoundError:
                continue
            for e in entries:
                # only what can be an object here: not a temporary file (".tmp-*"), nor anything foreign
                # (".DS_Store", "Thumbs.db", a sync tool's conflict copy, a pack in the wrong shard)
                if not is_object_name(type, e.name) or not e.name.startswith(shard):
                    continue
                if not e.is_file(follow_symlinks=False):
                    continue
                try:
                    size = e.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue
                yield ObjectInfo(type, e.name, size)

    def foreign(self) -> Iterator[str]:
        """What the object directories hold that ``list`` skips and tuckbox did not write: a file a user, a sync
        tool or an operating system left (``.DS_Store``, ``notes.txt``, a conflict copy, a pack in the wrong
        shard, a subdirectory), as a path from the repository's top, sorted. Temporary files (``.tmp-*``) are
        tuckbox's own and not named. Nothing is ever removed: check names them, every command leaves them."""
        for type in ObjectType:
            if type is ObjectType.CONFIG:
                continue
            base = os.path.join(self.root, type.value)
            try:
                top = sorted(os.scandir(base), key=lambda e: e.name)
            except OSError:
                continue
            for e in top:
                rel = f"{type.value}/{e.name}"
                if type is ObjectType.PACK and _SHARD.match(e.name) and e.is_dir(follow_symlinks=False):
                    try:
                        inner = sorted(os.scandir(e.path), key=lambda i: i.name)
                    except OSError:
                        continue
                    for i in inner:
                        if not _own(type, i, e.name):
                            yield f"{rel}/{i.name}" + ("/" if i.is_dir(follow_symlinks=False) else "")
                elif type is ObjectType.PACK or not _own(type, e, ""):
                    yield rel + ("/" if e.is_dir(follow_symlinks=False) else "")

    def remove(self, type: ObjectType, name: str) -> None:
        try:
            os.unlink(self._path(type, name))
        except OSError as e:
            raise self._fail(e, object_label(type, name), type) from None

    def close(self) -> None:
        pass

