"""Generate awkward directory trees on disk and compare two trees exactly.

For tests::

    from tuckbox.testing.trees import compare_trees, materialize, sample_tree, tree_specs

    @given(tree_specs())
    def test_round_trip(spec): ...materialize(spec, src); ...; assert compare_trees(src, dst) == []

A ``TreeSpec`` is plain frozen data, so hypothesis can shrink it. ``materialize``
writes it with raw ``os`` calls (not ``tuckbox.fsmeta``'s capture/apply), so a
bug in the code under test cannot hide itself. Root-only features (devices, other owners,
``trusted.*``, ``security.capability``) are generated only when running as root.
ACLs are written as the kernel's binary ``system.posix_acl_*`` xattrs.

hypothesis is imported only by ``tree_specs``.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import random
import stat
import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ..fsmeta import (
    ACL_ACCESS,
    ACL_DEFAULT,
    acl_xattr,
    data_extents,
    display_path,
    format_acl,
    open_for_backup,
    read_xattrs,
)

KiB = 1024
MiB = 1024 * KiB
_BLOCK = 64 * KiB  # content is compared in blocks of this size


def capability_xattr(permitted: int, *, effective: bool = True) -> bytes:
    """A VFS_CAP_REVISION_2 ``security.capability`` value for capability bits 0-31."""
    return struct.pack("<IIIII", 0x02000000 | int(effective), permitted & 0xFFFFFFFF, 0, 0, 0)


@cache
def unnamed_id() -> int:
    """A uid/gid with neither a passwd nor a group entry on this system."""
    used = {p.pw_uid for p in pwd.getpwall()} | {g.gr_gid for g in grp.getgrall()}
    return next(i for i in range(43210, 2**31) if i not in used)


# ---------------------------------------------------------------- the spec


@dataclass(frozen=True)
class Meta:
    mode: int
    mtime_ns: int
    atime_ns: int
    uid: int | None = None  # None: leave as created
    gid: int | None = None
    xattrs: tuple[tuple[bytes, bytes], ...] = ()  # ACLs included, as raw xattrs


@dataclass(frozen=True)
class Content:
    """``kind``: empty | random | repetitive | large | sparse | sparse_tail.

    ``extents`` are the ``(offset, length)`` ranges written; the file is then
    truncated to ``size``, so anything not written is a hole.
    """

    kind: str
    size: int
    seed: int = 0
    extents: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Entry:
    path: tuple[bytes, ...]  # components below the root
    kind: str  # dir | file | symlink | hardlink | fifo | chardev | blockdev
    meta: Meta | None = None  # None for hardlinks: they share the linked file's inode
    content: Content | None = None
    target: bytes = b""  # symlink target
    link_to: tuple[bytes, ...] = ()  # hardlink: path of an earlier file entry
    rdev: int = 0


@dataclass(frozen=True)
class TreeSpec:
    root: Meta
    entries: tuple[Entry, ...]  # parents before children


def _is_root() -> bool:
    return os.geteuid() == 0


def _bytes(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _content_writes(c: Content) -> list[tuple[int, bytes]]:
    if c.kind == "empty":
        return []
    if c.kind == "repetitive":
        pattern = _bytes(c.seed, 1 + c.seed % 61)
        return [(0, (pattern * (c.size // len(pattern) + 1))[: c.size])]
    return [(off, _bytes(c.seed + i, ln)) for i, (off, ln) in enumerate(c.extents)]


def _sparse(seed: int, size: int, pieces: list[tuple[int, int]]) -> Content:
    extents = tuple((off, min(ln, size - off)) for off, ln in pieces if off < size)
    return Content("sparse", size, seed, extents)


# ---------------------------------------------------------------- hypothesis strategy

_FILE_MODES = [0o644, 0o600, 0o755, 0o000, 0o4755, 0o2755, 0o6711, 0o1644, 0o7777, 0o444, 0o2070]
_DIR_MODES = [0o755, 0o700, 0o1777, 0o2775, 0o000, 0o555, 0o3770, 0o711]
_NAMES = [b"\xff\xfe-name", b"caf\xc3\xa9", b" lead space", b"-dash", b"new\nline", b".hidden", b"x" * 200, b"a"]
_TARGETS = [b"dangling/nowhere", b"\xff\xfe-target", b"/etc/passwd", b"../../outside", b".", b"a"]
_KINDS_ROOT = ["file", "file", "file", "dir", "dir", "symlink", "hardlink", "fifo", "chardev", "blockdev"]
_KINDS_USER = ["file", "file", "file", "dir", "dir", "symlink", "hardlink", "fifo"]
_CONTENT_KINDS = ["empty", "random", "random", "repetitive", "large", "sparse", "sparse_tail"]
_T_MAX = 1_600_000_000 * 10**9  # 2020: times in the past keep relatime from touching atimes


def tree_specs(max_entries: int = 16, *, root: bool | None = None) -> Any:
    """A hypothesis strategy of ``TreeSpec`` with up to ``max_entries`` entries (a few MiB on disk at most).

    ``root`` (default: whether this process is root) enables devices, other owners,
    ``trusted.*`` and ``security.capability``.
    """
    from hypothesis import strategies as st

    as_root = _is_root() if root is None else root
    kinds = _KINDS_ROOT if as_root else _KINDS_USER
    ids = st.sampled_from([0, 1, 2, 65534, unnamed_id()])
    perm = st.integers(0, 7)
    xname = st.binary(min_size=1, max_size=10).map(lambda b: b.replace(b"\0", b"_"))
    name_st = st.one_of(
        st.sampled_from(_NAMES),
        st.binary(min_size=1, max_size=16).map(lambda b: b.replace(b"/", b"_").replace(b"\0", b"_")),
    )
    target_st = st.one_of(
        st.sampled_from(_TARGETS), st.binary(min_size=1, max_size=80).map(lambda b: b.replace(b"\0", b"_"))
    )

    def maybe(draw: Any, one_in: int) -> bool:
        return draw(st.integers(0, one_in - 1)) == one_in - 1  # shrinks towards "no"

    def acl(draw: Any, named: bool) -> bytes:
        users = draw(st.lists(st.tuples(ids, perm), max_size=2))
        groups = draw(st.lists(st.tuples(ids, perm), max_size=2))
        if named and not users and not groups:
            users = [(unnamed_id(), draw(perm))]  # a minimal access ACL is not stored by the kernel
        return acl_xattr(draw(perm), draw(perm), draw(perm), users=users, groups=groups)

    def meta(draw: Any, kind: str) -> Meta:
        if kind == "symlink":
            mode = 0o777
        else:
            usual = st.sampled_from(_DIR_MODES if kind == "dir" else _FILE_MODES)
            mode = draw(st.one_of(usual, st.integers(0, 0o7777)))
            if not as_root:  # keep the tree readable for the comparator
                mode |= 0o700 if kind == "dir" else 0o400
        xattrs: dict[bytes, bytes] = {}
        if kind in ("file", "dir"):
            for _ in range(draw(st.integers(0, 2))):
                xattrs[b"user." + draw(xname)] = draw(st.binary(max_size=64))
            if maybe(draw, 4):
                xattrs[ACL_ACCESS] = acl(draw, named=True)
            if kind == "dir" and maybe(draw, 4):
                xattrs[ACL_DEFAULT] = acl(draw, named=False)
        uid = gid = None
        if as_root:
            uid, gid = draw(st.one_of(st.none(), ids)), draw(st.one_of(st.none(), ids))
            if maybe(draw, 4):
                xattrs[b"trusted." + draw(xname)] = draw(st.binary(max_size=64))
            if kind == "file" and maybe(draw, 8):
                xattrs[b"security.capability"] = capability_xattr(draw(st.integers(1, 2**32 - 1)))
        times = st.integers(0, _T_MAX)
        return Meta(mode, draw(times), draw(times), uid, gid, tuple(sorted(xattrs.items())))

    def content(draw: Any, big_left: list[int]) -> Content:
        kind = draw(st.sampled_from(_CONTENT_KINDS))
        seed = draw(st.integers(0, 2**16))
        if kind in ("large", "sparse", "sparse_tail"):
            if big_left[0] <= 0:
                kind = "random"
            big_left[0] -= 1
        if kind == "empty":
            return Content("empty", 0)
        if kind == "random":
            size = draw(st.integers(1, 8 * KiB))
            return Content("random", size, seed, ((0, size),))
        if kind == "repetitive":
            return Content("repetitive", draw(st.integers(1, 512 * KiB)), seed)
        if kind == "large":
            size = draw(st.integers(100 * KiB, 400 * KiB))
            return Content("large", size, seed, ((0, size),))
        if kind == "sparse":
            size = draw(st.sampled_from([64 * MiB, 64 * MiB + 3, 5 * MiB + 1]))
            pieces = draw(st.lists(st.tuples(st.integers(0, size - 1), st.integers(1, 20_000)), min_size=1, max_size=4))
            return _sparse(seed, size, pieces)
        data = draw(st.integers(1, 100_000))
        return Content("sparse_tail", data + draw(st.integers(1, 16 * MiB)), seed, ((0, data),))

    @st.composite
    def build(draw: Any) -> TreeSpec:
        dirs: list[tuple[bytes, ...]] = [()]
        used: dict[tuple[bytes, ...], set[bytes]] = {(): set()}
        files: dict[tuple[bytes, ...], int] = {}  # file path -> extra links so far
        entries: list[Entry] = []
        big_left = [3]
        for i in range(draw(st.integers(1, max_entries))):
            kind = draw(st.sampled_from(kinds))
            parent = draw(st.sampled_from(dirs))
            name = draw(name_st)
            if name in (b".", b"..") or name in used[parent]:
                name = b"%s~%d" % (name, i)
            used[parent].add(name)
            path = parent + (name,)
            linkable = [p for p, n in files.items() if n < 2]
            if kind == "hardlink" and not linkable:
                kind = "file"
            if kind == "hardlink":
                target = draw(st.sampled_from(linkable))
                files[target] += 1
                entries.append(Entry(path, "hardlink", link_to=target))
                continue
            m = meta(draw, kind)
            if kind == "dir":
                dirs.append(path)
                used[path] = set()
                entries.append(Entry(path, "dir", m))
            elif kind == "file":
                files[path] = 0
                entries.append(Entry(path, "file", m, content(draw, big_left)))
            elif kind == "symlink":
                entries.append(Entry(path, "symlink", m, target=draw(target_st)))
            elif kind == "fifo":
                entries.append(Entry(path, "fifo", m))
            else:
                rdev = os.makedev(draw(st.integers(1, 4095)), draw(st.integers(0, 2**20 - 1)))
                entries.append(Entry(path, kind, m, rdev=rdev))
        return TreeSpec(meta(draw, "dir"), tuple(entries))

    return build()


# ---------------------------------------------------------------- writing a spec to disk


def _set_meta(path: bytes, m: Meta, is_link: bool) -> None:
    """Raw os calls, in the order a restorer must use: owner, xattrs, mode, times."""
    if m.uid is not None or m.gid is not None:
        os.chown(path, -1 if m.uid is None else m.uid, -1 if m.gid is None else m.gid, follow_symlinks=False)
    for name, value in sorted(m.xattrs, key=lambda kv: kv[0].startswith(b"system.posix_acl_")):  # ACLs last
        os.setxattr(path, name, value, follow_symlinks=False)
    if not is_link:
        os.chmod(path, m.mode)
    os.utime(path, ns=(m.atime_ns, m.mtime_ns), follow_symlinks=False)


def materialize(spec: TreeSpec, root: Path) -> None:
    """Create ``spec`` under ``root`` (created if missing; must be empty)."""
    base = os.fsencode(root)
    os.makedirs(base, exist_ok=True)
    if os.listdir(base):
        raise ValueError(f"{root} is not empty")

    def full(parts: tuple[bytes, ...]) -> bytes:
        return os.path.join(base, *parts)

    for e in spec.entries:
        p = full(e.path)
        if e.kind == "dir":
            os.mkdir(p, 0o700)
        elif e.kind == "file":
            assert e.content is not None
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                for off, data in _content_writes(e.content):
                    os.pwrite(fd, data, off)
                os.ftruncate(fd, e.content.size)
            finally:
                os.close(fd)
        elif e.kind == "symlink":
            os.symlink(e.target, p)
        elif e.kind == "hardlink":
            os.link(full(e.link_to), p, follow_symlinks=False)
        elif e.kind == "fifo":
            os.mkfifo(p, 0o600)
        else:
            os.mknod(p, (stat.S_IFCHR if e.kind == "chardev" else stat.S_IFBLK) | 0o600, e.rdev)
    for e in spec.entries:
        if e.kind not in ("dir", "hardlink") and e.meta is not None:
            _set_meta(full(e.path), e.meta, e.kind == "symlink")
    # directories last and deepest first: creating children changes a directory's mtime
    for e in sorted((e for e in spec.entries if e.kind == "dir"), key=lambda e: -len(e.path)):
        assert e.meta is not None
        _set_meta(full(e.path), e.meta, False)
    _set_meta(base, spec.root, False)


def sample_spec(*, root: bool | None = None) -> TreeSpec:
    """One deterministic spec with at least one of every kind of entry and metadata."""
    as_root = _is_root() if root is None else root
    nobody, other = unnamed_id(), 65534
    t = 1_234_567_890_123_456_789
    n = [0]

    def m(mode: int, *, uid: int | None = None, gid: int | None = None, x: dict[bytes, bytes] | None = None) -> Meta:
        n[0] += 1
        xattrs = {k: v for k, v in (x or {}).items() if as_root or not k.startswith((b"trusted.", b"security."))}
        if not as_root:
            uid = gid = None
        return Meta(mode, t + n[0] * 1_000_000_007, t - n[0] * 999_999_937, uid, gid, tuple(sorted(xattrs.items())))

    acl_file = acl_xattr(6, 4, 0, users=[(1000, 6), (nobody, 4)], groups=[(other, 5)])
    acl_dir = acl_xattr(7, 5, 5, groups=[(1, 7)])
    acl_default = acl_xattr(7, 5, 0, users=[(nobody, 7)])
    E, C = Entry, Content

    def dense(size: int, seed: int) -> Content:
        return Content("random", size, seed, ((0, size),))

    entries = [
        E((b"docs",), "dir", m(0o755, x={b"user.comment": b"\x00\x01binary\xff"})),
        E((b"docs", b"deep"), "dir", m(0o2775, gid=1)),
        E((b"docs", b"deep", b"er"), "dir", m(0o750, x={ACL_ACCESS: acl_dir, ACL_DEFAULT: acl_default})),
        E((b"empty-dir",), "dir", m(0o1777)),
        E((b"\xff\xfe-dir",), "dir", m(0o000 if as_root else 0o700, uid=nobody, gid=nobody)),
        E((b"empty",), "file", m(0o644), C("empty", 0)),
        E((b"small",), "file", m(0o640, uid=1, gid=1, x={b"user.a": b"", b"user.b": bytes(range(256))}), dense(1234, 1)),
        E((b"docs", b"large.bin"), "file", m(0o640, x={ACL_ACCESS: acl_file}), C("large", 300 * KiB, 2, ((0, 300 * KiB),))),
        E((b"docs", b"deep", b"repetitive.txt"), "file", m(0o444), C("repetitive", 512 * KiB + 17, 3)),
        E((b"sparse.img",), "file", m(0o660), _sparse(4, 64 * MiB, [(1_000_003, 5000), (7 * MiB + 11, 3), (64 * MiB - 9, 9)])),
        E((b"tail-hole",), "file", m(0o644), C("sparse_tail", 9 * MiB, 5, ((0, 70_001),))),
        E((b"setuid",), "file", m(0o4755, uid=other, gid=1, x={b"security.capability": capability_xattr(1 << 10)}), dense(10, 6)),
        E((b"setgid",), "file", m(0o2755, gid=other), dense(11, 7)),
        E((b"no-access",), "file", m(0o000 if as_root else 0o400, uid=nobody, gid=nobody), dense(12, 8)),
        E((b"trusted",), "file", m(0o7777, x={b"trusted.t": b"\xde\xad\xbe\xef", b"user.\xff": b"\xff"}), dense(13, 9)),
        E((b"\xff\xfe-name",), "file", m(0o644), dense(14, 10)),
        E((b"link-to-small",), "symlink", m(0o777), target=b"small"),
        E((b"dangling",), "symlink", m(0o777, uid=1, gid=1, x={b"trusted.l": b"1"}), target=b"does/not/exist"),
        E((b"\xff\xfe-dir", b"non-utf8-target"), "symlink", m(0o777), target=b"\xff\xfe-target"),
        E((b"absolute",), "symlink", m(0o777), target=b"/etc/passwd"),
        E((b"dir-link",), "symlink", m(0o777), target=b"docs/deep"),
        E((b"hard-a",), "file", m(0o644), dense(100, 11)),
        E((b"hard-b",), "hardlink", link_to=(b"hard-a",)),
        E((b"hard3-a",), "file", m(0o600), dense(200, 12)),
        E((b"docs", b"hard3-b"), "hardlink", link_to=(b"hard3-a",)),
        E((b"docs", b"deep", b"er", b"hard3-c"), "hardlink", link_to=(b"hard3-a",)),
        E((b"fifo",), "fifo", m(0o620, x={b"trusted.f": b"fifo"})),
    ]
    if as_root:
        entries += [
            E((b"null",), "chardev", m(0o666), rdev=os.makedev(1, 3)),
            E((b"docs", b"loop9"), "blockdev", m(0o660, gid=other), rdev=os.makedev(7, 9)),
        ]
    return TreeSpec(m(0o750, x={b"user.root": b"top"}), tuple(entries))


def sample_tree(root: Path) -> TreeSpec:
    """Materialize ``sample_spec()`` under ``root`` and return the spec."""
    spec = sample_spec()
    materialize(spec, root)
    return spec


# ---------------------------------------------------------------- comparing trees


def _scan(base: bytes, problems: list[str], label: str) -> dict[bytes, os.stat_result]:
    """lstat every entry (relative path -> stat) before any content is read (reads change atimes)."""
    out = {b"": os.lstat(base)}
    stack = [b""]
    while stack:
        rel = stack.pop()
        try:
            names = sorted(os.listdir(os.path.join(base, rel) if rel else base))
        except OSError as e:
            problems.append(f"{_show(rel)}: cannot list in {label}: {e.strerror}")
            continue
        for name in names:
            child = rel + b"/" + name if rel else name
            try:
                st = os.lstat(os.path.join(base, child))
            except OSError as e:
                problems.append(f"{_show(child)}: cannot stat in {label}: {e.strerror}")
                continue
            out[child] = st
            if stat.S_ISDIR(st.st_mode):
                stack.append(child)
    return out


def _show(rel: bytes) -> str:
    return display_path(rel) if rel else "."


def _readlink_keeping_times(path: bytes, st: os.stat_result) -> bytes:
    """readlink, then undo the atime update it makes (there is no O_NOATIME for symlinks)."""
    target = os.readlink(path)
    if os.lstat(path).st_atime_ns != st.st_atime_ns:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    return target


def _link_groups(entries: dict[bytes, os.stat_result]) -> dict[bytes, tuple[bytes, ...]]:
    by_inode: dict[tuple[int, int], list[bytes]] = {}
    for rel, st in entries.items():
        if not stat.S_ISDIR(st.st_mode):
            by_inode.setdefault((st.st_dev, st.st_ino), []).append(rel)
    return {rel: tuple(sorted(group)) for group in by_inode.values() for rel in group}


class _FileFacts:
    """Digests of the non-zero 64 KiB blocks, and the data-extent map, of one regular file."""

    def __init__(self, path: bytes, size: int) -> None:
        self.blocks: dict[int, bytes] = {}
        self.error = ""
        self.extents: list[tuple[int, int]] = []
        try:
            fd = open_for_backup(path)
        except OSError as e:
            self.error = e.strerror or str(e)
            return
        try:
            self.extents = data_extents(fd, size)
            wanted = sorted({b for off, ln in self.extents for b in range(off // _BLOCK, (off + ln - 1) // _BLOCK + 1)})
            for b in wanted:  # holes are zeros by definition: they are never read
                data = os.pread(fd, _BLOCK, b * _BLOCK)
                if data.count(0) != len(data):
                    self.blocks[b] = hashlib.blake2b(data, digest_size=16).digest()
        except OSError as e:
            self.error = e.strerror or str(e)
        finally:
            os.close(fd)


def _rounded(extents: list[tuple[int, int]], bs: int, size: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for off, ln in extents:
        start, end = off // bs * bs, min(-(-(off + ln) // bs) * bs, size)
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(end, out[-1][1]))
        else:
            out.append((start, end))
    return out


def _fmt_extents(ranges: list[tuple[int, int]]) -> str:
    shown = ", ".join(f"{a}-{b}" for a, b in ranges[:6])
    return f"[{shown}{', ...' if len(ranges) > 6 else ''}]"


def _fmt_xattr(name: bytes, value: bytes) -> str:
    if name in (ACL_ACCESS, ACL_DEFAULT):
        return format_acl(value)
    text = repr(value)
    return text if len(text) <= 50 else text[:47] + "..."


class _Comparer:
    def __init__(self, src: Path, dst: Path, check_atime: bool, check_owner: bool) -> None:
        self.bases = (os.fsencode(src), os.fsencode(dst))
        self.check_atime, self.check_owner = check_atime, check_owner
        self.out: list[str] = []
        self.scans = (_scan(self.bases[0], self.out, "source"), _scan(self.bases[1], self.out, "copy"))
        self.links = (_link_groups(self.scans[0]), _link_groups(self.scans[1]))
        self.common = set(self.scans[0]) & set(self.scans[1])
        self.facts: dict[tuple[int, int, int], _FileFacts] = {}
        self.reported_links: set[tuple[tuple[bytes, ...], tuple[bytes, ...]]] = set()

    def diff(self, rel: bytes, what: str, a: object, b: object) -> None:
        self.out.append(f"{_show(rel)}: {what} {a} in source, {b} in copy")

    def run(self) -> list[str]:
        src, dst = self.scans
        gone: set[bytes] = set()
        for rel in sorted(set(src) | set(dst)):
            if rel.rpartition(b"/")[0] in gone and rel:
                gone.add(rel)
            elif rel not in dst:
                self.out.append(f"{_show(rel)}: missing from copy")
                gone.add(rel)
            elif rel not in src:
                self.out.append(f"{_show(rel)}: only in copy")
                gone.add(rel)
            elif stat.S_IFMT(src[rel].st_mode) != stat.S_IFMT(dst[rel].st_mode):
                kinds = [stat.filemode(s.st_mode)[0] for s in (src[rel], dst[rel])]
                self.diff(rel, "type", repr(kinds[0]), repr(kinds[1]))
                gone.add(rel)
            else:
                self.entry(rel, src[rel], dst[rel])
        return self.out

    def entry(self, rel: bytes, a: os.stat_result, b: os.stat_result) -> None:
        mode = a.st_mode
        if not stat.S_ISLNK(mode) and stat.S_IMODE(mode) != stat.S_IMODE(b.st_mode):
            self.diff(rel, "mode", f"{stat.S_IMODE(mode):04o}", f"{stat.S_IMODE(b.st_mode):04o}")
        if self.check_owner and (a.st_uid, a.st_gid) != (b.st_uid, b.st_gid):
            self.diff(rel, "owner", f"{a.st_uid}:{a.st_gid}", f"{b.st_uid}:{b.st_gid}")
        if rel:
            if a.st_mtime_ns != b.st_mtime_ns:
                self.diff(rel, "mtime_ns", a.st_mtime_ns, b.st_mtime_ns)
            atime_kind = stat.S_ISREG(mode) or stat.S_ISLNK(mode)
            if self.check_atime and atime_kind and a.st_atime_ns != b.st_atime_ns:
                self.diff(rel, "atime_ns", a.st_atime_ns, b.st_atime_ns)
        paths = [os.path.join(base, rel) if rel else base for base in self.bases]
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            if a.st_rdev != b.st_rdev:
                devs = [f"{os.major(s.st_rdev)}:{os.minor(s.st_rdev)}" for s in (a, b)]
                self.diff(rel, "device", *devs)
        elif stat.S_ISLNK(mode):
            targets = [_readlink_keeping_times(p, st) for p, st in zip(paths, (a, b), strict=True)]
            if targets[0] != targets[1]:
                self.diff(rel, "symlink target", *targets)
        elif stat.S_ISREG(mode):
            self.content(rel, paths, a, b)
        self.xattrs(rel, paths)
        if not stat.S_ISDIR(mode):
            # names missing on one side are reported already: compare the rest
            src_group, dst_group = (tuple(r for r in side[rel] if r in self.common) for side in self.links)
            groups = (src_group, dst_group)
            if groups[0] != groups[1] and groups not in self.reported_links:
                self.reported_links.add(groups)
                shown = ["[" + ", ".join(_show(r) for r in g) + "]" for g in groups]
                self.diff(rel, "hard links", *shown)

    def file_facts(self, side: int, path: bytes, st: os.stat_result) -> _FileFacts:
        key = (side, st.st_dev, st.st_ino)
        if key not in self.facts:
            self.facts[key] = _FileFacts(path, st.st_size)
        return self.facts[key]

    def content(self, rel: bytes, paths: list[bytes], a: os.stat_result, b: os.stat_result) -> None:
        if a.st_size != b.st_size:
            self.diff(rel, "size", a.st_size, b.st_size)
            return
        fa, fb = self.file_facts(0, paths[0], a), self.file_facts(1, paths[1], b)
        if fa.error or fb.error:
            self.out.append(f"{_show(rel)}: cannot read: {fa.error or fb.error}")
            return
        if fa.blocks != fb.blocks:
            first = min(k for k in set(fa.blocks) | set(fb.blocks) if fa.blocks.get(k) != fb.blocks.get(k))
            self.out.append(f"{_show(rel)}: bytes differ in the 64 KiB block at offset {first * _BLOCK}")
        bs = max(a.st_blksize, b.st_blksize, 1)
        ra, rb = _rounded(fa.extents, bs, a.st_size), _rounded(fb.extents, bs, b.st_size)
        if ra != rb:
            self.diff(rel, f"holes differ: data ({bs}-byte blocks) at", _fmt_extents(ra), _fmt_extents(rb))

    def xattrs(self, rel: bytes, paths: list[bytes]) -> None:
        (xa, wa), (xb, wb) = read_xattrs(paths[0]), read_xattrs(paths[1])
        self.out += wa + wb
        da, db = dict(xa), dict(xb)
        for name in sorted(set(da) | set(db)):
            shown = name.decode("utf-8", "backslashreplace")
            if name not in db:
                self.out.append(f"{_show(rel)}: xattr {shown} missing from copy")
            elif name not in da:
                self.out.append(f"{_show(rel)}: xattr {shown} only in copy")
            elif da[name] != db[name]:
                self.diff(rel, f"xattr {shown}", _fmt_xattr(name, da[name]), _fmt_xattr(name, db[name]))


def compare_trees(src: Path, dst: Path, *, check_atime: bool = True, check_owner: bool = True) -> list[str]:
    """Every difference between two trees, one readable line each; ``[]`` means identical.

    Compares, per relative path: presence, type, mode (not for symlinks),
    uid/gid, mtime_ns (all but the root), atime_ns (files and symlinks), size,
    bytes, the data-extent map rounded to the block size (holes must match),
    xattrs incl. ACLs, symlink targets, device numbers and the partition of
    names into hard-link groups. The roots' names are not compared, only their
    mode, owner and xattrs. Every entry is stat-ed before any content is read,
    and files are read with O_NOATIME; a symlink whose atime readlink changed
    gets its atime put back (changing its ctime), so comparing twice works.
    """
    return _Comparer(src, dst, check_atime, check_owner).run()
