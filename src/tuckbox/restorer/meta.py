"""Metadata for restored entries, with as few system calls as the entry allows.

A restore into a target where new entries start bare (owned by this
process's euid:egid, with the requested mode less the umask and no xattrs: no
setgid directory, no default ACL, no squashed owner; checked on the restore's
marker file) knows what a file it has just created looks like, and skips the
calls that would not change it: the common small file gets only its times.
"""

from __future__ import annotations

import os
from typing import Any

from ..fsmeta import Created, Owners, set_metadata, wanted_owner
from ..snapshot.tree import Node


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode(mode: int) -> int:
    """The mode a regular file is created with: its permission bits, owner-writable so it can be reopened."""
    return (mode & 0o777) | 0o200


class Meta:
    """Applies metadata for one restore; owners are looked up once per name."""

    def __init__(self, numeric_owner: bool, fresh: bool) -> None:
        self.numeric_owner = numeric_owner
        self.root = os.geteuid() == 0
        self.groups = frozenset() if self.root else Owners.my_groups()
        self.owners = Owners()
        self.fresh = fresh  # new entries start bare
        self.umask = current_umask()
        self._euid, self._egid = os.geteuid(), os.getegid()
        self._ids: dict[tuple[str, str, int, int], tuple[int, int]] = {}
        self._created: dict[int, Created] = {}
        self._plain_modes: dict[int, bool] = {}
        self._plain_owners: dict[tuple[str, str, int, int], bool] = {}

    def _owner(self, key: tuple[str, str, int, int]) -> tuple[int, int]:
        ids = self._ids.get(key)
        if ids is None:
            probe = Node(name=b"", type="file", user=key[0], group=key[1], uid=key[2], gid=key[3])
            ids = self._ids[key] = wanted_owner(probe, self.numeric_owner, self.owners)
        return ids

    def created(self, mode: int) -> Created | None:
        """What an entry this run created with ``mode`` is known to be like (None: assume nothing)."""
        if not self.fresh:
            return None
        c = self._created.get(mode)
        if c is None:
            c = self._created[mode] = Created(self._euid, self._egid, mode & ~self.umask)
        return c

    def apply(self, target: bytes | int, node: Node, path: bytes, created: Created | None) -> list[str]:
        owner = self._owner((node.user, node.group, node.uid, node.gid))
        return set_metadata(target, node, owner, root=self.root, groups=self.groups, path=path, created=created)

    def plain(self, m: dict[str, Any]) -> bool:
        """Whether a regular file this run just created for the tree entry ``m`` needs its times only."""
        if not self.fresh or m.get("x"):
            return False
        mode = m.get("m", 0)
        ok = self._plain_modes.get(mode)
        if ok is None:
            ok = self._plain_modes[mode] = file_mode(mode) & ~self.umask == mode
        if not ok:
            return False
        key = (m.get("un", ""), m.get("gn", ""), m.get("u", 0), m.get("g", 0))
        ok = self._plain_owners.get(key)
        if ok is None:
            uid, gid = self._owner(key)
            if self.root:
                ok = (uid, gid) == (self._euid, self._egid)
            else:
                ok = gid == self._egid or gid not in self.groups
            self._plain_owners[key] = ok
        return ok
