"""File-system metadata: capture an entry into a ``Node`` and apply a ``Node`` back.

Pure file-system code shared by the backup walker and the restorer. Nothing
here follows a symlink. Problems a user should hear about come back as one-line
warning strings that name the path; nothing here prints.

Extended attributes are captured raw, as sorted ``(name, value)`` byte pairs:
``user.*``, ``trusted.*`` (visible to root only), ``security.*`` (e.g.
``security.capability``) and the POSIX ACLs, which Linux exposes as the
``system.posix_acl_access`` / ``system.posix_acl_default`` xattrs in the
kernel's binary format (so no ACL library is needed).

Order matters when applying: owner first (chown clears setuid/setgid and
``security.capability``), then xattrs (setting an access ACL rewrites the group
mode bits), then the mode, then the times (everything before changes ctime
only, but creating children changes a directory's mtime, so callers apply
directories after their contents).
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
import struct
import threading
from dataclasses import dataclass
from typing import Iterable

from .errors import TuckboxError
from .snapshot.tree import BLOCKDEV, CHARDEV, DIR, FIFO, FILE, SYMLINK, Node
from .text import display_path

__all__ = [
    "ACL_ACCESS",
    "ACL_DEFAULT",
    "Created",
    "EntryChanged",
    "Owners",
    "SkipEntry",
    "UnsupportedFileType",
    "acl_xattr",
    "apply_metadata",
    "create_special",
    "data_extents",
    "display_path",
    "format_acl",
    "node_from_stat",
    "open_for_backup",
    "read_xattrs",
    "set_metadata",
    "wanted_owner",
]

ACL_ACCESS = b"system.posix_acl_access"
ACL_DEFAULT = b"system.posix_acl_default"

_NO_XATTR_SUPPORT = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP})
_TYPES = {
    stat.S_IFREG: FILE,
    stat.S_IFDIR: DIR,
    stat.S_IFLNK: SYMLINK,
    stat.S_IFIFO: FIFO,
    stat.S_IFCHR: CHARDEV,
    stat.S_IFBLK: BLOCKDEV,
}


class SkipEntry(TuckboxError):
    """This entry cannot be backed up; the walker skips it with ``str(exc)`` as the warning."""


class UnsupportedFileType(SkipEntry):
    """A socket, door or other type a backup cannot hold."""


class EntryChanged(SkipEntry):
    """The entry was removed or replaced between stat and reading it."""




def _xname(name: bytes) -> str:
    return display_path(name)  # (from a tree another host wrote, too: nothing a terminal acts on)


class Owners:
    """Cached uid/gid <-> user/group name lookups (pwd/grp), safe to share between threads.

    Unknown ids map to ``""`` and unknown names to ``None``; misses are cached too.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users: dict[int, str] = {}
        self._groups: dict[int, str] = {}
        self._uids: dict[str, int | None] = {}
        self._gids: dict[str, int | None] = {}

    def _cached(self, cache: dict, key, lookup):  # type: ignore[no-untyped-def]
        with self._lock:
            if key in cache:
                return cache[key]
        try:
            value = lookup(key)
        except (KeyError, OverflowError, ValueError):
            value = None
        with self._lock:
            cache[key] = value
        return value

    def user_name(self, uid: int) -> str:
        return self._cached(self._users, uid, lambda k: pwd.getpwuid(k).pw_name) or ""

    def group_name(self, gid: int) -> str:
        return self._cached(self._groups, gid, lambda k: grp.getgrgid(k).gr_name) or ""

    def uid_of(self, name: str) -> int | None:
        if not name:
            return None
        return self._cached(self._uids, name, lambda k: pwd.getpwnam(k).pw_uid)

    def gid_of(self, name: str) -> int | None:
        if not name:
            return None
        return self._cached(self._gids, name, lambda k: grp.getgrnam(k).gr_gid)

    @staticmethod
    def my_groups() -> frozenset[int]:
        """The effective gid and supplementary groups of this process (not cached: cheap, and may change)."""
        return frozenset(os.getgroups()) | {os.getegid()}


_DEFAULT_OWNERS = Owners()


def read_xattrs(
    path: bytes, fd: int | None = None, at: bytes | None = None
) -> tuple[list[tuple[bytes, bytes]], list[str]]:
    """Every readable xattr of ``path`` (not following symlinks; or of the open ``fd``), sorted, plus warnings.

    ``at``: where to reach the entry when not at ``path`` itself (a deep one: longpath.py); warnings name ``path``."""
    target: bytes | int = (at or path) if fd is None else fd
    follow: dict[str, bool] = {"follow_symlinks": False} if fd is None else {}
    try:
        names = os.listxattr(target, **follow)
    except OSError as e:
        if e.errno in _NO_XATTR_SUPPORT:
            return [], []
        return [], [f"{display_path(path)}: cannot list extended attributes: {e.strerror}"]
    pairs: list[tuple[bytes, bytes]] = []
    warnings: list[str] = []
    for name in names:
        raw = os.fsencode(name)
        try:
            value = os.getxattr(target, name, **follow)
        except OSError as e:
            if e.errno == errno.ENODATA or e.errno in _NO_XATTR_SUPPORT:
                continue  # removed since listing, or not really there
            warnings.append(f"{display_path(path)}: cannot read extended attribute {_xname(raw)}: {e.strerror}")
            continue
        pairs.append((raw, value))
    pairs.sort()
    return pairs, warnings


def node_from_stat(
    name: bytes,
    path: bytes,
    st: os.stat_result,
    owners: Owners,
    xattrs: tuple[list[tuple[bytes, bytes]], list[str]] | None = None,
    at: bytes | None = None,
) -> tuple[Node, list[str]]:
    """Describe the entry at ``path`` (already ``lstat``-ed as ``st``) as a ``Node``.

    ``at``: where to reach the entry when not at ``path`` itself (a deep one: longpath.py).

    Content, subtree and warning are left for the caller. Raises
    ``UnsupportedFileType`` for sockets and unknown types, ``EntryChanged`` when
    a symlink vanished or was replaced before its target could be read.

    A symlink's atime is taken after reading its target: the kernel updates it
    on readlink (there is no O_NOATIME for that), so the value recorded is the
    one the source keeps after the backup.
    """
    fmt = stat.S_IFMT(st.st_mode)
    kind = _TYPES.get(fmt)
    if kind is None:
        what = "a socket" if fmt == stat.S_IFSOCK else f"of unsupported type {fmt:#o}"
        raise UnsupportedFileType(f"{display_path(path)}: skipped, it is {what}")
    node = Node(
        name=name,
        type=kind,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        user=owners.user_name(st.st_uid),
        group=owners.group_name(st.st_gid),
        mtime_ns=st.st_mtime_ns,
        atime_ns=st.st_atime_ns,
        ctime_ns=st.st_ctime_ns,
        inode=st.st_ino,
        dev=st.st_dev,
        nlink=st.st_nlink,
    )
    if kind == FILE:
        node.size = st.st_size
    elif kind in (CHARDEV, BLOCKDEV):
        node.rdev = st.st_rdev
    elif kind == SYMLINK:
        try:
            node.link_target = os.readlink(at or path)
            after = os.lstat(at or path)
        except OSError as e:
            why = e.strerror or str(e)
            raise EntryChanged(f"{display_path(path)}: skipped, the symlink changed while reading it ({why})") from None
        if after.st_ino == st.st_ino and after.st_dev == st.st_dev:
            node.atime_ns = after.st_atime_ns
    node.xattrs, warnings = xattrs if xattrs is not None else read_xattrs(path, at=at)
    return node, list(warnings)


def data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """The ``(offset, length)`` ranges of ``fd`` holding data, within ``[0, size)``.

    Uses SEEK_DATA/SEEK_HOLE, so it costs one pair of seeks per extent and never
    reads content. Without hole support (or on a pipe) the whole range is data.
    The file offset is left where it was.
    """
    if size <= 0:
        return []
    whole = [(0, size)]
    seek_data = getattr(os, "SEEK_DATA", None)
    seek_hole = getattr(os, "SEEK_HOLE", None)
    if seek_data is None or seek_hole is None:
        return whole
    try:
        saved = os.lseek(fd, 0, os.SEEK_CUR)
    except OSError:
        return whole
    extents: list[tuple[int, int]] = []
    try:
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, seek_data)
            except OSError as e:
                if e.errno == errno.ENXIO:  # no data after pos
                    break
                raise
            if start >= size:
                break
            end = min(os.lseek(fd, start, seek_hole), size)
            if end <= start:  # defensive: a file system that reports nonsense
                return whole
            if extents and extents[-1][0] + extents[-1][1] == start:
                extents[-1] = (extents[-1][0], end - extents[-1][0])
            else:
                extents.append((start, end - start))
            pos = end
    except OSError:
        return whole
    finally:
        try:
            os.lseek(fd, saved, os.SEEK_SET)
        except OSError:
            pass
    return extents


def create_special(path: bytes, node: Node, shown: bytes | None = None) -> list[str]:
    """Create a FIFO or device node at ``path`` (mode/owner/times come from ``apply_metadata``); warnings name
    ``shown`` (default: ``path``)."""
    name = display_path(shown if shown is not None else path)
    try:
        if node.type == FIFO:
            os.mkfifo(path, 0o600)
        elif node.type in (CHARDEV, BLOCKDEV):
            fmt = stat.S_IFCHR if node.type == CHARDEV else stat.S_IFBLK
            os.mknod(path, fmt | 0o600, node.rdev)
        else:
            raise ValueError(f"create_special cannot create a {node.type}")
    except PermissionError:
        if node.type == FIFO:
            return [f"{name}: cannot create FIFO: permission denied"]
        dev = f"{os.major(node.rdev)}:{os.minor(node.rdev)}"
        kind = "character" if node.type == CHARDEV else "block"
        return [f"{name}: cannot create {kind} device {dev}: not permitted (restore as root)"]
    except OSError as e:
        return [f"{name}: cannot create {node.type}: {e.strerror}"]
    return []


def wanted_owner(node: Node, numeric_owner: bool, owners: Owners) -> tuple[int, int]:
    """The uid and gid to give ``node`` here: by user/group name when it exists here, else the stored number."""
    uid, gid = node.uid, node.gid
    if not numeric_owner:
        by_name = owners.uid_of(node.user)
        uid = uid if by_name is None else by_name
        by_name = owners.gid_of(node.group)
        gid = gid if by_name is None else by_name
    return uid, gid


def _removable(name: bytes, root: bool) -> bool:
    """Xattrs that apply_metadata owns on the target: stale ones are removed.

    (ACLs may be inherited from a parent's default ACL; ``security.*`` labels
    belong to the target system and are left alone.)
    """
    if name in (ACL_ACCESS, ACL_DEFAULT) or name.startswith(b"user."):
        return True
    return root and name.startswith(b"trusted.")


def _apply_xattrs(target: bytes | int, shown: str, node: Node, root: bool, list_present: bool = True) -> list[str]:
    """Set ``node``'s xattrs on ``target`` (a path, not followed, or a descriptor); remove stale ones."""
    warnings: list[str] = []
    nofollow: dict[str, bool] = {} if isinstance(target, int) else {"follow_symlinks": False}
    wanted = dict(node.xattrs)
    present: list[bytes] = []
    if list_present:
        try:
            present = [os.fsencode(n) for n in os.listxattr(target, **nofollow)]
        except OSError:
            present = []
    for name in present:
        if name not in wanted and _removable(name, root):
            try:
                os.removexattr(target, name, **nofollow)
            except OSError as e:
                if e.errno != errno.ENODATA:
                    warnings.append(f"{shown}: cannot remove extended attribute {_xname(name)}: {e.strerror}")
    # ACLs last: an access ACL can take away the owner's write bit, which user.* needs
    for name, value in sorted(node.xattrs, key=lambda kv: kv[0] in (ACL_ACCESS, ACL_DEFAULT)):
        if name.startswith(b"trusted.") and not root:
            continue  # only root can see or set trusted.*
        try:
            os.setxattr(target, name, value, **nofollow)
        except OSError as e:
            what = "ACL" if name in (ACL_ACCESS, ACL_DEFAULT) else "extended attribute"
            warnings.append(f"{shown}: cannot restore {what} {_xname(name)}: {e.strerror}")
    return warnings


@dataclass(frozen=True, slots=True)
class Created:
    """What is known of an entry this process has just created: its owner and permission bits, and no xattrs.

    A restorer passes it to ``set_metadata`` to skip the calls that would change
    nothing; it must know that the file system added no xattrs (no default ACL
    was inherited) and applied the requested mode less the umask.
    """

    uid: int
    gid: int
    mode: int


_SET_ID = stat.S_ISUID | stat.S_ISGID


def _safe_set_id(
    target: bytes | int, nofollow: dict[str, bool], node: Node, owner: tuple[int, int], shown: str
) -> tuple[int, str | None]:
    """``node``'s mode less a setuid (setgid) bit that would make the file run as a user (group) other than
    the one it has in the snapshot: when its owner (group) could not be set here (not root, or a chown was
    refused). Returns the mode to set and a warning when a bit is left off."""
    try:
        st = os.stat(target, **nofollow)
    except OSError as e:
        return node.mode & ~_SET_ID, f"{shown}: setuid and setgid bits not restored: cannot check its owner: {e.strerror}"
    mode = node.mode
    if mode & stat.S_ISUID and st.st_uid != owner[0]:
        mode &= ~stat.S_ISUID
    if mode & stat.S_ISGID and st.st_gid != owner[1]:
        mode &= ~stat.S_ISGID
    if mode == node.mode:
        return mode, None
    bits, who = {stat.S_ISUID: ("setuid bit", "user"), stat.S_ISGID: ("setgid bit", "group")}.get(
        node.mode & ~mode, ("setuid and setgid bits", "user and group")
    )
    return mode, (f"{shown}: {bits} not restored: it is owned by {st.st_uid}:{st.st_gid} here, not "
                  f"{owner[0]}:{owner[1]}, and would run as the wrong {who}")


def set_metadata(
    target: bytes | int,
    node: Node,
    owner: tuple[int, int],
    *,
    root: bool,
    groups: frozenset[int] = frozenset(),
    path: bytes | None = None,
    created: Created | None = None,
) -> list[str]:
    """Give ``target`` (a path, never followed, or an open descriptor) the owner, xattrs, mode and times of ``node``.

    ``owner`` is the (uid, gid) wanted (see ``wanted_owner``); not as ``root``, only
    the group is set, and only when it is one of ``groups``. A setuid (setgid) bit is set only where the owner
    (group) is the one wanted: never on a file that would then run as someone else. ``path`` names the
    entry in warnings (default: ``target``). With ``created``, calls that would
    not change anything are skipped (a new file of the right owner and mode and
    no xattrs costs one call: its times).
    """
    name: bytes = path if path is not None else target  # type: ignore[assignment]
    nofollow: dict[str, bool] = {} if isinstance(target, int) else {"follow_symlinks": False}
    warnings: list[str] = []
    uid, gid = owner
    if root:
        if created is None or uid != created.uid or gid != created.gid:
            try:
                os.chown(target, uid, gid, **nofollow)
            except OSError as e:
                warnings.append(f"{display_path(name)}: cannot set owner {uid}:{gid}: {e.strerror}")
    elif gid in groups and (created is None or gid != created.gid):
        try:
            os.chown(target, -1, gid, **nofollow)
        except OSError:
            pass  # keeping the group is best effort without root
    xattrs = created is None or bool(node.xattrs)
    if xattrs:
        warnings += _apply_xattrs(target, display_path(name), node, root, list_present=created is None)
    # Linux has no lchmod; symlink modes are always 0777. An ACL rewrites the group bits: set the mode after it
    if node.type != SYMLINK and (xattrs or created is None or created.mode != node.mode):
        mode = node.mode
        if mode & _SET_ID and node.type != DIR:
            mode, warning = _safe_set_id(target, nofollow, node, owner, display_path(name))
            if warning:
                warnings.append(warning)
        try:
            os.chmod(target, mode)
        except OSError as e:
            warnings.append(f"{display_path(name)}: cannot set mode {mode:04o}: {e.strerror}")
    try:
        os.utime(target, ns=(node.atime_ns, node.mtime_ns), **nofollow)
    except OSError as e:
        warnings.append(f"{display_path(name)}: cannot set times: {e.strerror}")
    return warnings


def apply_metadata(
    path: bytes,
    node: Node,
    *,
    numeric_owner: bool = False,
    root: bool | None = None,
    owners: Owners | None = None,
) -> list[str]:
    """Give the existing entry at ``path`` the owner, xattrs, mode and times of ``node``.

    As root the owner is taken by user/group name when that name exists here
    (else the stored number; always the number with ``numeric_owner``). Not as
    root, only the group is set, and only when this process is a member.
    Never follows a symlink. ``root`` defaults to whether this process is root
    (checked at each call). Returns one-line warnings for what could not be set.
    """
    if root is None:
        root = os.geteuid() == 0
    owners = owners or _DEFAULT_OWNERS
    owner = wanted_owner(node, numeric_owner, owners)
    return set_metadata(path, node, owner, root=root, groups=frozenset() if root else owners.my_groups())


_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_O_NOATIME = getattr(os, "O_NOATIME", 0)


def open_for_backup(path: bytes) -> int:
    """Open a regular file for reading without following symlinks or touching its atime.

    O_NOATIME is only allowed to the file's owner (or root); on EPERM the open
    is retried without it. O_NONBLOCK keeps a FIFO swapped in after the stat
    from hanging the backup (it has no effect on regular files); callers should
    still ``fstat`` the descriptor and check it is the file they stat-ed.
    Raises ``OSError`` (ELOOP for a symlink).
    """
    if _O_NOATIME:
        try:
            return os.open(path, _OPEN_FLAGS | _O_NOATIME)
        except PermissionError as e:
            if e.errno != errno.EPERM:
                raise
    return os.open(path, _OPEN_FLAGS)


# POSIX ACLs in the kernel's xattr format: u32 version 2, then (u16 tag, u16 perm, u32 id) entries
_ACL_VERSION = 2
_TAGS = {"u": 0x01, "U": 0x02, "g": 0x04, "G": 0x08, "m": 0x10, "o": 0x20}
_UNDEFINED_ID = 0xFFFFFFFF


def acl_xattr(
    user: int,
    group: int,
    other: int,
    *,
    users: Iterable[tuple[int, int]] = (),
    groups: Iterable[tuple[int, int]] = (),
    mask: int | None = None,
) -> bytes:
    """Encode a POSIX ACL (perms are 0-7 rwx bits) as a ``system.posix_acl_*`` value.

    ``users``/``groups`` are ``(id, perm)`` named entries; a mask is added
    (the union of the group-class perms) when there are named entries and none is given.
    """
    users, groups = sorted(dict(users).items()), sorted(dict(groups).items())
    if mask is None and (users or groups):
        mask = group
        for _, perm in users + groups:
            mask |= perm
    entries = [(_TAGS["u"], user, _UNDEFINED_ID)]
    entries += [(_TAGS["U"], perm, uid) for uid, perm in users]
    entries.append((_TAGS["g"], group, _UNDEFINED_ID))
    entries += [(_TAGS["G"], perm, gid) for gid, perm in groups]
    if mask is not None:
        entries.append((_TAGS["m"], mask, _UNDEFINED_ID))
    entries.append((_TAGS["o"], other, _UNDEFINED_ID))
    return struct.pack("<I", _ACL_VERSION) + b"".join(struct.pack("<HHI", t, p, i) for t, p, i in entries)


def format_acl(value: bytes) -> str:
    """``u::rw-,u:1000:r--,g::r--,m::r--,o::---`` for an ACL xattr value (or its hex if malformed)."""
    if len(value) < 4 or (len(value) - 4) % 8 or struct.unpack_from("<I", value)[0] != _ACL_VERSION:
        return value.hex()
    names = {v: k for k, v in _TAGS.items()}
    parts = []
    for off in range(4, len(value), 8):
        tag, perm, ident = struct.unpack_from("<HHI", value, off)
        letter = names.get(tag, "?")
        rwx = "".join(c if perm & bit else "-" for c, bit in (("r", 4), ("w", 2), ("x", 1)))
        shown_id = str(ident) if letter in "UG" else ""
        parts.append(f"{letter.lower()}:{shown_id}:{rwx}")
    return ",".join(parts)
