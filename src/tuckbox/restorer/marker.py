"""The restore target: its checks, and the ``.tuckbox-restore`` marker (which snapshot a restore is writing
into it, and what of it is owed).

The marker's first line is the snapshot's id. A second line, when there is
one, is the selection (``--include``/``--exclude`` patterns, as JSON) that
the restores into the target which have not completed were asked for; no
second line means the whole snapshot (so does a marker written by an older
tuckbox, which did not record it: the safe reading).

A restore into a target holding the marker is a resumed one. It may be asked
for a different selection than the restore it resumes; the marker then stays
until a restore that covers what is owed completes (``Selection.covers``: the
whole snapshot, or exactly the same patterns), so that an interrupted restore
can always be finished by running it again. While a resumed restore runs, the
marker owes what both were asked for (``Selection.merge``: when that cannot be
said exactly, the whole snapshot).
"""

from __future__ import annotations

import errno
import json
import os
import stat
from dataclasses import dataclass
from typing import Sequence

from ..errors import TargetExists, TuckboxError
from ..fsmeta import ACL_DEFAULT
from ..text import display_path as display

NAME = b".tuckbox-restore"
_OPEN = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Selection:
    """What a restore was asked for: patterns in a canonical form (sorted, no repeats)."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def of(cls, include: Sequence[str | bytes] | None, exclude: Sequence[str | bytes] | None) -> "Selection":
        return cls(_canonical(include), _canonical(exclude))

    @property
    def whole(self) -> bool:
        return not self.include and not self.exclude

    def covers(self, owed: "Selection") -> bool:
        """Whether a completed restore of this selection completes one of ``owed``."""
        return self.whole or self == owed

    def merge(self, other: "Selection") -> "Selection":
        """A selection covering both (the whole snapshot when neither covers the other)."""
        if self.covers(other):
            return self
        if other.covers(self):
            return other
        return WHOLE


WHOLE = Selection()


def _canonical(patterns: Sequence[str | bytes] | None) -> tuple[str, ...]:
    return tuple(sorted({os.fsdecode(os.fsencode(p)) for p in patterns or ()}))


def encode(snapshot_id: str, owed: Selection) -> bytes:
    text = snapshot_id + "\n"
    if not owed.whole:
        text += json.dumps({"include": list(owed.include), "exclude": list(owed.exclude)}) + "\n"
    return text.encode()


def decode(raw: bytes, snapshot_id: str) -> Selection | None:
    """What a marker owes, or None when it is not one for ``snapshot_id``."""
    first, _, rest = raw.partition(b"\n")
    if first.strip() != snapshot_id.encode():
        return None
    try:
        sel = json.loads(rest) if rest.strip() else {}
        return Selection.of(_strings(sel.get("include")), _strings(sel.get("exclude")))
    except (ValueError, AttributeError, TypeError):
        return WHOLE  # unreadable: owe everything


def _strings(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("not a list of patterns")
    return value


def write(path: bytes, snapshot_id: str, owed: Selection) -> int:
    """(Re)write the marker at ``path``; return its descriptor, open for writing (the caller closes it)."""
    fd = os.open(path, _OPEN, 0o600)
    try:
        os.write(fd, encode(snapshot_id, owed))
    except BaseException:
        os.close(fd)
        raise
    return fd


def put_back(path: bytes, snapshot_id: str, owed: Selection) -> None:
    """Leave the marker owing ``owed`` again (a failure leaves the wider one this restore wrote: still safe)."""
    try:
        os.close(write(path, snapshot_id, owed))
    except OSError:
        pass


def prepare_target(target: bytes, snapshot_id: str, asked: Selection) -> tuple[Selection | None, bool]:
    """Check the target and write the marker; return (what the marker owed: None if not resuming, new entries
    start bare).

    "Bare": an entry this process creates there is owned by its euid:egid, has
    the requested mode less the umask and carries no xattrs (no setgid directory,
    no default ACL, no squashed owner); the marker file is the probe.
    """
    marker = os.path.join(target, NAME)
    owed: Selection | None = None
    if os.path.lexists(target):
        if os.path.islink(target):
            raise TargetExists(f"restore target {display(target)} is a symbolic link (a restore does not follow "
                               f"one); give the directory it leads to, {display(os.path.realpath(target))}, or a new one")
        if not os.path.isdir(target):
            raise TargetExists(f"restore target {display(target)} exists and is not a directory; choose a new one")
        if [n for n in os.listdir(target) if not fresh_lost_found(target, os.fsencode(n))]:
            try:
                with open(marker, "rb") as f:
                    owed = decode(f.read(), snapshot_id)
            except OSError:
                owed = None
            if owed is None:
                raise TargetExists(
                    f"restore target {display(target)} exists and is not empty; choose a new directory "
                    "(a restore interrupted into it resumes only for the same snapshot)"
                )
    resume = owed is not None
    try:
        os.makedirs(target, exist_ok=True)
        # while this restore runs, the marker owes what it is asked for and what was owed before
        fd = write(marker, snapshot_id, asked if owed is None else owed.merge(asked))
        try:
            st = os.fstat(fd)
            xattrs = _xattr_names(fd)
        finally:
            os.close(fd)
        target_st = os.stat(target)
    except OSError as e:
        raise TuckboxError(f"cannot write to restore target {display(target)}: {e.strerror}") from None
    umask = os.umask(0o022)
    os.umask(umask)
    bare = (
        not resume
        and not target_st.st_mode & stat.S_ISGID
        and (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())
        and stat.S_IMODE(st.st_mode) == 0o600 & ~umask
        and not any(n.startswith(("user.", "trusted.", "system.")) for n in xattrs)
        and not _has_xattr(target, ACL_DEFAULT)
    )
    return owed, bare


LOST_FOUND = b"lost+found"


def fresh_lost_found(target: bytes, name: bytes) -> bool:
    """Whether ``name`` in ``target`` is the empty ``lost+found`` directory a new ext2/3/4 file system has at its
    top: a target holding only that is empty (a restore onto a freshly made file system)."""
    if name != LOST_FOUND:
        return False
    path = os.path.join(target, name)
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return False
        return not os.listdir(path)
    except PermissionError:
        return True  # root's, 0700: as made by mkfs (a restore as another user cannot write into it anyway)
    except OSError:
        return False


def _xattr_names(fd: int) -> list[str]:
    try:
        return os.listxattr(fd)
    except OSError as e:
        return [] if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP) else ["system.unknown"]


def _has_xattr(path: bytes, name: bytes) -> bool:
    try:
        os.getxattr(path, name)
        return True
    except OSError as e:
        return e.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP)
