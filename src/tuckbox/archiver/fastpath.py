"""The walk's two fast paths: a file the files cache knows is unchanged, and a small file read whole that
needs none of ``Archiver._save_file``'s care (nearly every file of a first backup of many small files)."""

from __future__ import annotations

import os
import time
from stat import S_ISREG
from typing import Any, Callable

import msgpack

from ..fsmeta import Owners
from ..snapshot.tree import FILE, Node, RawNode
from ..types import BlobStore, BlobType
from .entries import same
from .files_cache import FilesCache
from .prefetch import Prefetched
from .report import Progress, Summary


class FastPaths:
    """Mixed into ``Archiver``, whose state these use."""

    store: BlobStore
    files_cache: FilesCache
    owners: Owners
    summary: Summary
    progress: Progress
    _names: dict[int, str]
    _has_blobs: Callable[[list[bytes]], bool]

    def _unchanged_file(
        self, path: bytes, st: os.stat_result, key: bytes | None = None, name: bytes | None = None
    ) -> RawNode | dict[str, Any] | None:
        """The stored node of a file the files cache knows is unchanged (and whose chunks all exist).

        Usually as the cache holds it, already encoded (a ``RawNode``); decoded only when its atime
        must be updated. Counted in the summary; the caller reports it to ``progress`` (once per directory).
        """
        cache = self.files_cache
        raw = cache.lookup_raw(path, st, key)
        if raw is None:
            return None
        if not self._has_blobs(cache.last_chunks):
            return None
        hit: RawNode | dict[str, Any]
        if cache.last_atime != st.st_atime_ns:  # read by someone else since: keep key order canonical
            try:
                node = Node.from_map(msgpack.unpackb(raw))
            except Exception:  # noqa: BLE001 - a damaged cache record: read the file again
                return None
            node.atime_ns = st.st_atime_ns
            hit = node.to_map()
            cache.remember(path, st, hit, time.time_ns())
        else:
            cache.keep(path)
            hit = RawNode(path.rpartition(b"/")[2] if name is None else name, raw)
        summary = self.summary
        summary.bytes_total += st.st_size
        summary.files_unmodified += 1
        return hit

    def _small_file(
        self, path: bytes, name: bytes, st: os.stat_result, ahead: Prefetched, known: bool, key: bytes | None = None
    ) -> dict[str, Any] | None:
        """A small file already read (``ahead``) that needs none of ``_save_file``'s care, stored here,
        or None (nothing done): the general path takes it.

        The common case of a first backup, made cheap: a regular file read whole in one chunk, not
        sparse, with one link, unchanged while read, whose xattrs read without a problem. Its entry
        is the map ``node_from_stat`` and ``_save_file`` would make, built directly (a test holds
        the two to the same bytes).
        """
        after = ahead.after
        data = ahead.data
        n = len(data)
        if (
            ahead.error is not None or ahead.sparse or after is None or st.st_nlink != 1
            or (n and ahead.chunk_id is None) or not S_ISREG(after.st_mode) or n != after.st_size
            or not same(st, after) or ahead.xattrs is None or ahead.xattrs[1]
        ):
            return None
        m: dict[str, Any] = {"n": name, "t": FILE}
        mode = st.st_mode & 0o7777
        if mode:
            m["m"] = mode
        uid, gid = st.st_uid, st.st_gid
        if uid:
            m["u"] = uid
        if gid:
            m["g"] = gid
        names = self._names
        user = names.get(uid)
        if user is None:
            user = names[uid] = self.owners.user_name(uid)
        if user:
            m["un"] = user
        group = names.get(~gid)
        if group is None:
            group = names[~gid] = self.owners.group_name(gid)
        if group:
            m["gn"] = group
        if st.st_mtime_ns:
            m["mt"] = st.st_mtime_ns
        if st.st_atime_ns:
            m["at"] = st.st_atime_ns
        if st.st_ctime_ns:
            m["ct"] = st.st_ctime_ns
        if n:
            m["s"] = n
        if st.st_ino:
            m["i"] = st.st_ino
        if st.st_dev:
            m["d"] = st.st_dev
        m["l"] = 1
        summary = self.summary
        progress = self.progress
        progress.file_started(path, n)
        summary.bytes_total += n
        if known:
            summary.files_changed += 1
        else:
            summary.files_new += 1
        if n:
            chunk_id = ahead.chunk_id
            self.store.add_blob(BlobType.DATA, chunk_id, data)  # type: ignore[arg-type]
            m["c"] = [chunk_id]
            summary.bytes_read += n
            progress.bytes_done(n)
        pairs = ahead.xattrs[0]
        if pairs:
            m["x"] = [[k, v] for k, v in pairs]
        self.files_cache.remember(path, after, m, ahead.read_at, key)
        return m
