"""tuckbox.fsmeta on real files. Root-only parts skip (with a reason) when not run as root."""

from __future__ import annotations

import errno
import fcntl
import grp
import os
import pickle
import pwd
import shutil
import socket
import stat
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from tuckbox.fsmeta import (
    ACL_ACCESS,
    ACL_DEFAULT,
    EntryChanged,
    Owners,
    SkipEntry,
    UnsupportedFileType,
    apply_metadata,
    create_special,
    data_extents,
    node_from_stat,
    open_for_backup,
)
from tuckbox.snapshot.tree import BLOCKDEV, CHARDEV, DIR, FIFO, FILE, SYMLINK, Node
from tuckbox.testing.trees import acl_xattr, capability_xattr, unnamed_id

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (mknod, chown, trusted.* xattrs)")
NOBODY = 65534


def b(p: Path) -> bytes:
    return os.fsencode(p)


def capture(p: Path | bytes, owners: Owners | None = None) -> Node:
    raw = p if isinstance(p, bytes) else b(p)
    node, warnings = node_from_stat(os.path.basename(raw), raw, os.lstat(raw), owners or Owners())
    assert warnings == []
    return node


def run_as(uid: int, gid: int, groups: list[int], fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a forked child with the given credentials; return its result or raise."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(r)
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
            result: Any = ("ok", fn())
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            result = ("error", f"{type(e).__name__}: {e}")
        os.write(w, pickle.dumps(result))
        os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    status, value = pickle.loads(b"".join(chunks))
    if status != "ok":
        raise AssertionError(f"child failed: {value}")
    return value


@pytest.fixture
def shared_dir() -> Any:
    """A directory other users can reach (pytest's tmp_path is 0700 root)."""
    d = Path(tempfile.mkdtemp(prefix="tuckbox-fsmeta-", dir="/tmp"))
    d.chmod(0o777)
    yield d
    shutil.rmtree(d)


# ------------------------------------------------------------------ Owners


def test_owners_lookups_and_misses() -> None:
    o = Owners()
    root = pwd.getpwuid(0).pw_name
    assert o.user_name(0) == root and o.group_name(0) == grp.getgrgid(0).gr_name
    assert o.uid_of(root) == 0 and o.gid_of(grp.getgrgid(0).gr_name) == 0
    assert o.user_name(unnamed_id()) == "" and o.group_name(unnamed_id()) == ""
    assert o.uid_of("no-such-user-tuckbox") is None and o.gid_of("no-such-group-tuckbox") is None
    assert o.uid_of("") is None and o.gid_of("") is None
    assert o.user_name(2**40) == ""  # out of range ids are misses, not crashes


def test_owners_shared_between_threads() -> None:
    o, results, errors = Owners(), [], []

    def work() -> None:
        try:
            for _ in range(200):
                results.append((o.user_name(0), o.uid_of("root"), o.group_name(NOBODY), o.user_name(unnamed_id())))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert set(results) == {(pwd.getpwuid(0).pw_name, 0, grp.getgrgid(NOBODY).gr_name, "")}


# ------------------------------------------------------------------ node_from_stat


def test_regular_file_node(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"hello world")
    os.link(f, tmp_path / "second-name")
    os.setxattr(f, "user.bin", b"\x00\xff\x01")
    os.setxattr(f, "user.empty", b"")
    acl = acl_xattr(6, 4, 0, users=[(1000, 6)])
    os.setxattr(f, ACL_ACCESS, acl)
    os.chmod(f, 0o640)
    os.utime(f, ns=(1_111_111_111_000_000_001, 1_222_222_222_999_999_999))
    st = os.lstat(f)
    node = capture(f)
    assert node.name == b"f" and node.type == FILE
    assert node.mode == 0o640 and node.size == 11 and node.nlink == 2
    assert (node.uid, node.gid) == (os.geteuid(), os.getegid())
    assert node.user == pwd.getpwuid(os.geteuid()).pw_name
    assert node.group == grp.getgrgid(os.getegid()).gr_name
    assert (node.atime_ns, node.mtime_ns) == (1_111_111_111_000_000_001, 1_222_222_222_999_999_999)
    assert (node.ctime_ns, node.inode, node.dev) == (st.st_ctime_ns, st.st_ino, st.st_dev)
    assert node.rdev == 0 and node.link_target == b""
    names = [n for n, _ in node.xattrs]
    assert names == sorted(names)
    x = dict(node.xattrs)
    assert x[b"user.bin"] == b"\x00\xff\x01" and x[b"user.empty"] == b""
    assert x[ACL_ACCESS] == os.getxattr(f, ACL_ACCESS)


@needs_root
def test_root_only_xattrs_and_special_modes(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x")
    os.chown(f, NOBODY, unnamed_id())
    os.setxattr(f, "trusted.secret", b"\xde\xad")
    os.setxattr(f, "security.capability", capability_xattr(1 << 10))
    os.chmod(f, 0o6755)
    node = capture(f)
    assert node.mode == 0o6755
    assert (node.uid, node.gid, node.user, node.group) == (NOBODY, unnamed_id(), "nobody", "")
    x = dict(node.xattrs)
    assert x[b"trusted.secret"] == b"\xde\xad" and x[b"security.capability"] == capability_xattr(1 << 10)


def test_dir_with_default_acl_and_sticky(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    default = acl_xattr(7, 5, 0, users=[(1000, 7)])
    os.setxattr(d, ACL_DEFAULT, default)
    os.chmod(d, 0o1777)
    node = capture(d)
    assert node.type == DIR and node.mode == 0o1777 and node.size == 0
    assert dict(node.xattrs)[ACL_DEFAULT] == default


def test_symlink_node_keeps_raw_target_and_post_readlink_atime(tmp_path: Path) -> None:
    link = b(tmp_path) + b"/\xff\xfe-link"
    os.symlink(b"\xff\xfe-nowhere/../x", link)  # dangling, not UTF-8
    os.utime(link, ns=(1_000_000_001, 2_000_000_002), follow_symlinks=False)
    node = capture(link)
    assert node.type == SYMLINK and node.name == b"\xff\xfe-link"
    assert node.link_target == b"\xff\xfe-nowhere/../x" and node.mode == 0o777 and node.size == 0
    assert node.mtime_ns == 2_000_000_002
    # readlink touched the atime; the node records the value the source now has
    assert node.atime_ns == os.lstat(link).st_atime_ns


def test_fifo_node(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "p", 0o600)
    os.chmod(tmp_path / "p", 0o640)
    node = capture(tmp_path / "p")
    assert (node.type, node.mode, node.size, node.rdev) == (FIFO, 0o640, 0, 0)


@needs_root
def test_device_nodes(tmp_path: Path) -> None:
    os.mknod(tmp_path / "c", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    os.mknod(tmp_path / "blk", stat.S_IFBLK | 0o600, os.makedev(259, 70000))
    os.chmod(tmp_path / "blk", 0o660)
    c, blk = capture(tmp_path / "c"), capture(tmp_path / "blk")
    assert (c.type, c.rdev) == (CHARDEV, os.makedev(1, 3))
    assert (blk.type, os.major(blk.rdev), os.minor(blk.rdev), blk.mode) == (BLOCKDEV, 259, 70000, 0o660)


def test_socket_is_a_specific_skip() -> None:
    d = tempfile.mkdtemp(dir="/tmp")  # short path: AF_UNIX paths are limited to 107 bytes
    try:
        path = os.path.join(d, "sock")
        s = socket.socket(socket.AF_UNIX)
        s.bind(path)
        with pytest.raises(UnsupportedFileType) as info:
            node_from_stat(b"sock", os.fsencode(path), os.lstat(path), Owners())
        assert isinstance(info.value, SkipEntry)
        assert "sock" in str(info.value) and "socket" in str(info.value) and "\n" not in str(info.value)
        s.close()
    finally:
        shutil.rmtree(d)


def test_symlink_removed_after_stat_is_a_specific_skip(tmp_path: Path) -> None:
    link = tmp_path / "l"
    os.symlink("t", link)
    st = os.lstat(link)
    link.unlink()
    with pytest.raises(EntryChanged, match="l"):
        node_from_stat(b"l", b(link), st, Owners())


def test_xattr_not_supported_is_silent_but_other_errors_warn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"")
    os.setxattr(f, "user.a", b"1")
    os.setxattr(f, "user.b", b"2")
    os.setxattr(f, "user.c", b"3")

    def listxattr(path: Any, *, follow_symlinks: bool = True) -> list[str]:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    with monkeypatch.context() as m:
        m.setattr(os, "listxattr", listxattr)
        node, warnings = node_from_stat(b"f", b(f), os.lstat(f), Owners())
        assert node.xattrs == [] and warnings == []

    def listxattr_denied(path: Any, *, follow_symlinks: bool = True) -> list[str]:
        raise PermissionError(errno.EACCES, "Permission denied")

    with monkeypatch.context() as m:
        m.setattr(os, "listxattr", listxattr_denied)
        node, warnings = node_from_stat(b"f", b(f), os.lstat(f), Owners())
        assert node.xattrs == [] and len(warnings) == 1 and str(f) in warnings[0]

    real_getxattr = os.getxattr

    def getxattr(path: Any, name: Any, *, follow_symlinks: bool = True) -> bytes:
        if name == "user.b":
            raise OSError(errno.EIO, "Input/output error")
        if name == "user.c":
            raise OSError(errno.ENODATA, "No data available")  # removed since listing
        return real_getxattr(path, name, follow_symlinks=follow_symlinks)

    monkeypatch.setattr(os, "getxattr", getxattr)
    node, warnings = node_from_stat(b"f", b(f), os.lstat(f), Owners())
    assert node.xattrs == [(b"user.a", b"1")]
    assert len(warnings) == 1 and "user.b" in warnings[0] and str(f) in warnings[0]


# ------------------------------------------------------------------ data_extents


def _file(path: Path, writes: list[tuple[int, bytes]], size: int) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    for off, data in writes:
        os.pwrite(fd, data, off)
    os.ftruncate(fd, size)
    return fd


def test_dense_and_empty_files(tmp_path: Path) -> None:
    fd = _file(tmp_path / "dense", [(0, os.urandom(100_000))], 100_000)
    assert data_extents(fd, 100_000) == [(0, 100_000)]
    os.close(fd)
    fd = _file(tmp_path / "empty", [], 0)
    assert data_extents(fd, 0) == []
    os.close(fd)


def test_sparse_file_extents_at_odd_offsets_and_trailing_hole(tmp_path: Path) -> None:
    size = 64 * 1024 * 1024
    fd = _file(tmp_path / "sparse", [(1_000_003, b"a" * 10), (40_000_001, b"b" * 9000)], size)
    os.lseek(fd, 12345, os.SEEK_SET)
    ext = data_extents(fd, size)
    assert os.lseek(fd, 0, os.SEEK_CUR) == 12345  # file offset untouched
    assert len(ext) == 2
    (a, la), (c, lc) = ext
    assert a <= 1_000_003 and 1_000_013 <= a + la and la <= 8192
    assert c <= 40_000_001 and 40_009_001 <= c + lc and lc <= 16384
    assert c + lc < size  # trailing hole
    os.close(fd)
    fd = _file(tmp_path / "tail", [(0, b"x" * 5000)], 10_000_000)
    assert data_extents(fd, 10_000_000) == [(0, 8192)]
    os.close(fd)


def test_ten_gib_file_with_one_mib_of_data_is_cheap(tmp_path: Path) -> None:
    size = 10 * 1024**3
    fd = _file(tmp_path / "huge", [(5 * 1024**3 + 7, os.urandom(1024 * 1024))], size)
    t0 = time.monotonic()
    ext = data_extents(fd, size)
    elapsed = time.monotonic() - t0
    os.close(fd)
    assert len(ext) == 1 and 1024 * 1024 <= ext[0][1] <= 1024 * 1024 + 8192
    assert elapsed < 0.5


def test_never_reads_content(tmp_path: Path) -> None:
    """A write-only descriptor cannot be read: extents must come from seeks alone."""
    _ = os.close(_file(tmp_path / "f", [(3 * 4096, b"z" * 4096)], 1 << 20))
    fd = os.open(tmp_path / "f", os.O_WRONLY)
    assert data_extents(fd, 1 << 20) == [(3 * 4096, 4096)]
    os.close(fd)


def test_unsupported_falls_back_to_whole_range() -> None:
    r, w = os.pipe()
    assert data_extents(r, 5) == [(0, 5)]
    os.close(r)
    os.close(w)


# ------------------------------------------------------------------ create_special


def test_create_fifo(tmp_path: Path) -> None:
    assert create_special(b(tmp_path / "p"), Node(name=b"p", type=FIFO)) == []
    assert stat.S_ISFIFO(os.lstat(tmp_path / "p").st_mode)


@needs_root
def test_create_devices(tmp_path: Path) -> None:
    assert create_special(b(tmp_path / "c"), Node(name=b"c", type=CHARDEV, rdev=os.makedev(1, 3))) == []
    assert create_special(b(tmp_path / "b"), Node(name=b"b", type=BLOCKDEV, rdev=os.makedev(7, 1234))) == []
    c, blk = os.lstat(tmp_path / "c"), os.lstat(tmp_path / "b")
    assert stat.S_ISCHR(c.st_mode) and c.st_rdev == os.makedev(1, 3)
    assert stat.S_ISBLK(blk.st_mode) and blk.st_rdev == os.makedev(7, 1234)


@needs_root
def test_device_without_permission_is_a_warning(shared_dir: Path) -> None:
    path = b(shared_dir / "c")
    warnings = run_as(NOBODY, NOBODY, [], lambda: create_special(path, Node(name=b"c", type=CHARDEV, rdev=os.makedev(1, 3))))
    assert len(warnings) == 1 and "c" in warnings[0] and "1:3" in warnings[0] and "not permitted" in warnings[0]
    assert not os.path.lexists(path)


def test_create_special_rejects_other_types(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        create_special(b(tmp_path / "d"), Node(name=b"d", type=DIR))


# ------------------------------------------------------------------ apply_metadata


def _xattrs(p: Path | bytes) -> dict[bytes, bytes]:
    return {os.fsencode(n): os.getxattr(p, n, follow_symlinks=False) for n in os.listxattr(p, follow_symlinks=False)}


@needs_root
def test_file_round_trip_with_everything(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"data")
    os.chown(src, NOBODY, 1)
    xs = {
        b"user.bin": b"\x00\xff",
        b"trusted.t": b"t",
        b"security.capability": capability_xattr(1 << 10),
        ACL_ACCESS: acl_xattr(7, 5, 1, users=[(unnamed_id(), 3)], groups=[(1, 4)]),
    }
    for k, v in xs.items():
        os.setxattr(src, k, v)
    os.chmod(src, 0o6751)
    os.utime(src, ns=(123_456_789_000_000_001, 987_654_321_999_999_999))
    node = capture(src)
    dst.write_bytes(b"data")
    assert apply_metadata(b(dst), node) == []
    s, d = os.lstat(src), os.lstat(dst)
    assert stat.S_IMODE(d.st_mode) == 0o6751  # setuid/setgid survive: chmod came after chown
    assert (d.st_uid, d.st_gid) == (NOBODY, 1)
    assert (d.st_atime_ns, d.st_mtime_ns) == (s.st_atime_ns, s.st_mtime_ns)
    assert _xattrs(dst) == _xattrs(src)


@needs_root
def test_owner_by_name_then_number(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"")
    daemon_uid, daemon_gid = pwd.getpwnam("daemon").pw_uid, grp.getgrnam("daemon").gr_gid
    node = Node(name=b"f", type=FILE, mode=0o644, uid=4242, gid=4343, user="daemon", group="daemon")
    assert apply_metadata(b(f), node) == []
    assert (os.lstat(f).st_uid, os.lstat(f).st_gid) == (daemon_uid, daemon_gid)
    assert apply_metadata(b(f), node, numeric_owner=True) == []
    assert (os.lstat(f).st_uid, os.lstat(f).st_gid) == (4242, 4343)
    node.user, node.group = "no-such-user-tuckbox", "no-such-group-tuckbox"
    node.uid, node.gid = unnamed_id(), NOBODY
    assert apply_metadata(b(f), node) == []
    assert (os.lstat(f).st_uid, os.lstat(f).st_gid) == (unnamed_id(), NOBODY)


@needs_root
def test_symlink_is_never_followed(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"t")
    os.chmod(target, 0o600)
    os.utime(target, ns=(5, 6))
    link = tmp_path / "link"
    os.symlink("target", link)
    before = os.lstat(target)
    node = Node(name=b"link", type=SYMLINK, mode=0o777, uid=NOBODY, gid=1, mtime_ns=7_000_000_001,
                atime_ns=8_000_000_002, xattrs=[(b"trusted.l", b"on the link")])
    assert apply_metadata(b(link), node) == []
    after, ls = os.lstat(target), os.lstat(link)
    assert (after.st_mode, after.st_uid, after.st_gid, after.st_mtime_ns, after.st_atime_ns) == (
        before.st_mode, before.st_uid, before.st_gid, before.st_mtime_ns, before.st_atime_ns)
    assert b"trusted.l" not in _xattrs(target)
    assert (ls.st_uid, ls.st_gid, ls.st_mtime_ns, ls.st_atime_ns) == (NOBODY, 1, 7_000_000_001, 8_000_000_002)
    assert _xattrs(link) == {b"trusted.l": b"on the link"}


def test_directory_inherited_acl_is_removed_and_times_set(tmp_path: Path) -> None:
    parent = tmp_path / "parent"
    parent.mkdir()
    os.setxattr(parent, ACL_DEFAULT, acl_xattr(7, 5, 0, users=[(1000, 7)]))
    child = parent / "child"
    child.mkdir()  # inherits access and default ACLs from the parent's default ACL
    assert ACL_ACCESS in _xattrs(child) and ACL_DEFAULT in _xattrs(child)
    node = Node(name=b"child", type=DIR, mode=0o2750, uid=os.geteuid(), gid=os.getegid(),
                mtime_ns=1_500_000_000_123_456_789, atime_ns=1_400_000_000_000_000_001, xattrs=[(b"user.k", b"v")])
    assert apply_metadata(b(child), node) == []
    st = os.lstat(child)
    assert _xattrs(child) == {b"user.k": b"v"}
    assert stat.S_IMODE(st.st_mode) == 0o2750
    assert (st.st_mtime_ns, st.st_atime_ns) == (1_500_000_000_123_456_789, 1_400_000_000_000_000_001)


def test_acl_then_mode_keeps_both(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"")
    acl = acl_xattr(6, 4, 4, users=[(1000, 6)], mask=6)
    node = Node(name=b"f", type=FILE, mode=0o664, uid=os.geteuid(), gid=os.getegid(), xattrs=[(ACL_ACCESS, acl)])
    assert apply_metadata(b(f), node) == []
    assert stat.S_IMODE(os.lstat(f).st_mode) == 0o664
    assert os.getxattr(f, ACL_ACCESS) == acl


def test_failures_become_warnings_and_the_rest_is_applied(tmp_path: Path) -> None:
    link = tmp_path / "link"
    os.symlink("x", link)
    node = Node(name=b"link", type=SYMLINK, uid=os.geteuid(), gid=os.getegid(), mtime_ns=10**18, atime_ns=10**18 + 1,
                xattrs=[(b"user.not-on-symlinks", b"1")])
    warnings = apply_metadata(b(link), node)
    assert len(warnings) == 1
    assert str(link) in warnings[0] and "user.not-on-symlinks" in warnings[0] and "\n" not in warnings[0]
    assert os.lstat(link).st_mtime_ns == 10**18


def test_trusted_xattrs_skipped_without_root(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"")
    node = Node(name=b"f", type=FILE, mode=0o600, gid=os.getegid(), xattrs=[(b"trusted.t", b"1"), (b"user.u", b"2")])
    assert apply_metadata(b(f), node, root=False) == []
    assert _xattrs(f) == {b"user.u": b"2"}


@needs_root
def test_special_files_get_metadata(tmp_path: Path) -> None:
    for name, kind, rdev in ((b"p", FIFO, 0), (b"c", CHARDEV, os.makedev(1, 3)), (b"k", BLOCKDEV, os.makedev(7, 5))):
        path = b(tmp_path) + b"/" + name
        node = Node(name=name, type=kind, mode=0o1640, uid=NOBODY, gid=1, rdev=rdev, mtime_ns=3_000_000_003,
                    atime_ns=4_000_000_004, xattrs=[(b"trusted.x", name)])
        assert create_special(path, node) == []
        assert apply_metadata(path, node) == []
        assert capture(path) == Node(name=name, type=kind, mode=0o1640, uid=NOBODY, gid=1, user="nobody",
                                     group="daemon", mtime_ns=3_000_000_003, atime_ns=4_000_000_004,
                                     ctime_ns=os.lstat(path).st_ctime_ns, inode=os.lstat(path).st_ino,
                                     dev=os.lstat(path).st_dev, nlink=1, rdev=rdev, xattrs=[(b"trusted.x", name)])


@needs_root
def test_not_root_keeps_group_only_when_member(shared_dir: Path) -> None:
    users_gid = grp.getgrnam("users").gr_gid
    path = b(shared_dir / "f")

    def child() -> tuple[list[str], list[str], tuple[int, int]]:
        with open(path, "wb"):
            pass
        member = Node(name=b"f", type=FILE, mode=0o2640, uid=0, gid=users_gid, user="root", group="users")
        w1 = apply_metadata(path, member, root=False, owners=Owners())
        st = os.lstat(path)
        stranger = Node(name=b"f", type=FILE, mode=0o640, uid=0, gid=1, user="root", group="daemon")
        w2 = apply_metadata(path, stranger, root=False, owners=Owners())
        return w1, w2, (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))  # type: ignore[return-value]

    w1, w2, (uid, gid, mode) = run_as(NOBODY, NOBODY, [NOBODY, users_gid], child)
    assert (w1, w2) == ([], [])
    assert (uid, gid, mode) == (NOBODY, users_gid, 0o2640)
    st = os.lstat(path)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (NOBODY, users_gid, 0o640)


# ------------------------------------------------------------------ open_for_backup


@needs_root
def test_not_root_never_leaves_setuid_or_setgid_on_a_file_owned_by_someone_else(shared_dir: Path) -> None:
    """A setuid root program restored by an ordinary user would run as that user: the bit is left off, said."""
    path = b(shared_dir / "f")

    def child() -> tuple[list[str], int, list[str], int]:
        with open(path, "wb"):
            pass
        foreign = Node(name=b"f", type=FILE, mode=0o6755, uid=0, gid=0, user="root", group="root")
        w1 = apply_metadata(path, foreign, root=False, owners=Owners())
        mode1 = stat.S_IMODE(os.lstat(path).st_mode)
        own = Node(name=b"f", type=FILE, mode=0o6750, uid=NOBODY, gid=NOBODY)  # its own: kept
        w2 = apply_metadata(path, own, root=False, owners=Owners())
        return w1, mode1, w2, stat.S_IMODE(os.lstat(path).st_mode)

    w1, mode1, w2, mode2 = run_as(NOBODY, NOBODY, [NOBODY], child)
    assert mode1 == 0o755
    assert w1 == [f"{shared_dir}/f: setuid and setgid bits not restored: it is owned by {NOBODY}:{NOBODY} here, "
                  "not 0:0, and would run as the wrong user and group"]
    assert (w2, mode2) == ([], 0o6750)


@needs_root
def test_root_whose_chown_is_refused_leaves_off_the_set_id_bits_of_that_owner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(A file system that refuses owners, or a root without CAP_CHOWN.) A setgid file of group 42 must not
    become setgid root; a setuid bit whose owner is right stays."""
    f = tmp_path / "f"
    f.write_bytes(b"")

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "chown", refuse)
    node = Node(name=b"f", type=FILE, mode=0o6755, uid=0, gid=42)
    warnings = apply_metadata(b(f), node, numeric_owner=True)
    assert stat.S_IMODE(os.lstat(f).st_mode) == 0o4755
    assert warnings == [f"{f}: cannot set owner 0:42: Operation not permitted",
                        f"{f}: setgid bit not restored: it is owned by 0:0 here, not 0:42, and would run as the "
                        "wrong group"]
    d = tmp_path / "d"  # a directory's setgid bit only says which group new entries get: kept
    d.mkdir()
    assert apply_metadata(b(d), Node(name=b"d", type=DIR, mode=0o2755, uid=0, gid=42), numeric_owner=True) == [
        f"{d}: cannot set owner 0:42: Operation not permitted"]
    assert stat.S_IMODE(os.lstat(d).st_mode) == 0o2755


def test_open_for_backup_keeps_atime_and_refuses_symlinks(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"content")
    os.utime(f, ns=(1_000_000_000_000_000_007, 1_000_000_000_000_000_009))  # atime < mtime: relatime would update
    fd = open_for_backup(b(f))
    try:
        assert os.read(fd, 100) == b"content"
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NOATIME
    finally:
        os.close(fd)
    assert os.lstat(f).st_atime_ns == 1_000_000_000_000_000_007
    os.symlink("f", tmp_path / "l")
    with pytest.raises(OSError) as info:
        open_for_backup(b(tmp_path / "l"))
    assert info.value.errno == errno.ELOOP


@needs_root
def test_open_for_backup_without_noatime_permission(shared_dir: Path) -> None:
    f = shared_dir / "root-owned"
    f.write_bytes(b"readable by all")
    f.chmod(0o644)
    path = b(f)

    def child() -> tuple[bytes, int]:
        fd = open_for_backup(path)  # O_NOATIME on someone else's file is EPERM: retried without
        try:
            return os.read(fd, 100), fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NOATIME
        finally:
            os.close(fd)

    assert run_as(NOBODY, NOBODY, [], child) == (b"readable by all", 0)


@needs_root
def test_not_root_acl_that_drops_owner_write_does_not_block_user_xattrs(shared_dir: Path) -> None:
    path = b(shared_dir / "f")
    acl = acl_xattr(4, 4, 0, users=[(1000, 6)])  # u::r-- : the owner may not write once it is set

    def child() -> tuple[list[str], dict[bytes, bytes], int]:
        with open(path, "wb"):
            pass
        node = Node(name=b"f", type=FILE, mode=0o460, xattrs=[(ACL_ACCESS, acl), (b"user.z", b"v")])
        warnings = apply_metadata(path, node, owners=Owners())  # root defaults to "am I root now": no
        return warnings, _xattrs(path), stat.S_IMODE(os.lstat(path).st_mode)

    warnings, xattrs, mode = run_as(NOBODY, NOBODY, [], child)
    assert warnings == [] and xattrs[b"user.z"] == b"v" and ACL_ACCESS in xattrs and mode == 0o460
