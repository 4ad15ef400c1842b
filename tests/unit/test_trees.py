"""tuckbox.testing.trees: the generator makes what it says, and the comparator misses nothing.

The round-trip property uses a small reference copier built only from
tuckbox.fsmeta (capture with node_from_stat, write with create_special /
apply_metadata), so it also proves that capture + apply preserve metadata exactly.
The getfacl cross-check needs the Debian package ``acl`` (skipped without it).
"""

from __future__ import annotations

import os
import pickle
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings

from tuckbox.fsmeta import (
    ACL_ACCESS,
    ACL_DEFAULT,
    Owners,
    apply_metadata,
    create_special,
    data_extents,
    node_from_stat,
    open_for_backup,
    read_xattrs,
)
from tuckbox.snapshot.tree import DIR, FILE, SYMLINK
from tuckbox.testing.trees import (
    TreeSpec,
    acl_xattr,
    compare_trees,
    format_acl,
    materialize,
    sample_spec,
    sample_tree,
    tree_specs,
    unnamed_id,
)

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (devices, owners, trusted.* xattrs)")


def copy_tree(src: Path, dst: Path) -> list[str]:
    """Reference copier: every byte of metadata goes through fsmeta capture and apply."""
    owners, warnings = Owners(), []
    links: dict[tuple[int, int], bytes] = {}

    def copy_entry(s: bytes, d: bytes, name: bytes) -> None:
        st = os.lstat(s)
        node, w = node_from_stat(name, s, st, owners)
        warnings.extend(w)
        if node.type != DIR and st.st_nlink > 1:
            if (st.st_dev, st.st_ino) in links:
                os.link(links[(st.st_dev, st.st_ino)], d)
                return
            links[(st.st_dev, st.st_ino)] = d
        if node.type == DIR:
            if d != os.fsencode(dst):
                os.mkdir(d, 0o700)
            for child in sorted(os.listdir(s)):
                copy_entry(os.path.join(s, child), os.path.join(d, child), child)
        elif node.type == FILE:
            fin = open_for_backup(s)
            fout = os.open(d, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            for off, length in data_extents(fin, node.size):
                while length:
                    data = os.pread(fin, min(length, 1 << 20), off)
                    os.pwrite(fout, data, off)
                    off, length = off + len(data), length - len(data)
            os.ftruncate(fout, node.size)
            os.close(fin)
            os.close(fout)
        elif node.type == SYMLINK:
            os.symlink(node.link_target, d)
        else:
            warnings.extend(create_special(d, node))
        warnings.extend(apply_metadata(d, node))  # a directory only after its children

    copy_entry(os.fsencode(src), os.fsencode(dst), b"")
    return warnings


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    sample_tree(src)
    dst.mkdir()
    assert copy_tree(src, dst) == []
    assert compare_trees(src, dst) == []
    return src, dst


def keep_times(*paths: Path | bytes) -> list[tuple[Path | bytes, int, int]]:
    return [(p, os.lstat(p).st_atime_ns, os.lstat(p).st_mtime_ns) for p in paths]


def restore_times(saved: list[tuple[Path | bytes, int, int]]) -> None:
    for p, atime, mtime in saved:
        os.utime(p, ns=(atime, mtime), follow_symlinks=False)


# ------------------------------------------------------------------ the comparator catches each difference


def test_one_byte(pair: tuple[Path, Path]) -> None:
    src, dst = pair
    f = dst / "docs" / "large.bin"
    saved = keep_times(f)
    with open(f, "r+b") as fh:
        fh.seek(200_000)
        old = fh.read(1)
        fh.seek(200_000)
        fh.write(bytes([old[0] ^ 1]))
    restore_times(saved)
    assert compare_trees(src, dst) == ["docs/large.bin: bytes differ in the 64 KiB block at offset 196608"]


def test_one_mode_bit_and_root_mode(pair: tuple[Path, Path]) -> None:
    src, dst = pair
    os.chmod(dst / "setuid", 0o4754)
    os.chmod(dst, 0o751)
    assert compare_trees(src, dst) == [".: mode 0750 in source, 0751 in copy", "setuid: mode 4755 in source, 4754 in copy"]


def test_mtime_by_one_ns_file_and_dir(pair: tuple[Path, Path]) -> None:
    src, dst = pair
    for p in (dst / "small", dst / "docs" / "deep"):
        st = os.lstat(p)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    out = compare_trees(src, dst)
    assert len(out) == 2 and all("mtime_ns" in line for line in out)
    assert out[0].startswith("docs/deep: ") and out[1].startswith("small: ")


def test_atime_by_one_ns_unless_disabled(pair: tuple[Path, Path]) -> None:
    src, dst = pair
    for p in (dst / "small", dst / "dangling"):
        st = os.lstat(p)
        os.utime(p, ns=(st.st_atime_ns - 1, st.st_mtime_ns), follow_symlinks=False)
    out = compare_trees(src, dst)
    assert [line.split(":")[0] for line in out] == ["dangling", "small"] and all("atime_ns" in line for line in out)
    assert compare_trees(src, dst, check_atime=False) == []


def test_xattr_changed_missing_extra(pair: tuple[Path, Path]) -> None:
    src, dst = pair
    os.setxattr(dst / "small", "user.a", b"now set")
    os.removexattr(dst / "docs", "user.comment")
    os.setxattr(dst, "user.extra", b"1")
    assert compare_trees(src, dst) == [
        ".: xattr user.extra only in copy",
        "docs: xattr user.comment missing from copy",
        "small: xattr user.a b'' in source, b'now set' in copy",
    ]


def test_acl_entry(pair: tuple[Path, Path]) -> None:
    src, dst = pair
    f = dst / "docs" / "large.bin"
    value = bytearray(os.getxattr(f, ACL_ACCESS))
    assert format_acl(bytes(value)).split(",")[1] == "u:1000:rw-"
    value[4 + 8 + 2] = 4  # the named user 1000 entry: rw- -> r--
    os.setxattr(f, ACL_ACCESS, bytes(value))
    out = compare_trees(src, dst)
    assert len(out) == 1 and out[0].startswith("docs/large.bin: xattr system.posix_acl_access u::rw-,u:1000:rw-,")
    assert ",u:1000:r--," in out[0].split(" in source, ")[1]


def test_default_acl(pair: tuple[Path, Path]) -> None:
    src, dst = pair
    d = dst / "docs" / "deep" / "er"
    os.setxattr(d, ACL_DEFAULT, acl_xattr(7, 5, 0, users=[(unnamed_id(), 5)]))
    out = compare_trees(src, dst)
    assert len(out) == 1 and "docs/deep/er: xattr system.posix_acl_default" in out[0]


def test_split_hardlink(pair: tuple[Path, Path]) -> None:
    src, dst = pair
    f = dst / "docs" / "hard3-b"
    saved = keep_times(dst / "docs")
    node, _ = node_from_stat(b"hard3-b", bytes(f), os.lstat(f), Owners())
    fd = open_for_backup(bytes(f))  # O_NOATIME: the other names keep their atime
    data = os.read(fd, 1 << 20)
    os.close(fd)
    f.unlink()
    f.write_bytes(data)
    assert apply_metadata(bytes(f), node) == []
    restore_times(saved)
    out = compare_trees(src, dst)
    assert out == ["docs/deep/er/hard3-c: hard links [docs/deep/er/hard3-c, docs/hard3-b, hard3-a] in source, "
                   "[docs/deep/er/hard3-c, hard3-a] in copy",
                   "docs/hard3-b: hard links [docs/deep/er/hard3-c, docs/hard3-b, hard3-a] in source, "
                   "[docs/hard3-b] in copy"]


def test_hole_filled_with_zeros_is_not_a_byte_difference(pair: tuple[Path, Path]) -> None:
    src, dst = pair
    for name in ("sparse.img", "tail-hole"):
        f = dst / name
        saved = keep_times(f)
        with open(f, "r+b") as fh:
            fh.seek(4 * 1024 * 1024)
            fh.write(bytes(4096))
            fh.flush()
            os.fsync(fh.fileno())
        restore_times(saved)
    out = compare_trees(src, dst)
    assert len(out) == 2 and all("holes differ" in line for line in out)
    assert out[0].startswith("sparse.img: ") and "4194304-4198400" in out[0].split(" in source, ")[1]
    assert out[1].startswith("tail-hole: holes differ")


def test_symlink_target(pair: tuple[Path, Path]) -> None:
    src, dst = pair
    link = dst / "\udcff\udcfe-dir" / "non-utf8-target"
    saved = keep_times(link.parent, link)  # before node_from_stat: its readlink moves the atime
    node, _ = node_from_stat(b"x", bytes(link), os.lstat(link), Owners())
    link.unlink()
    os.symlink(b"\xff\xfe-targeT", link)
    apply_metadata(bytes(link), node)
    restore_times(saved)
    assert compare_trees(src, dst) == [
        "\\xff\\xfe-dir/non-utf8-target: symlink target b'\\xff\\xfe-target' in source, b'\\xff\\xfe-targeT' in copy"
    ]


def test_missing_extra_and_type(pair: tuple[Path, Path]) -> None:
    src, dst = pair
    shutil.rmtree(dst / "docs")
    (dst / "new").write_bytes(b"")
    (dst / "fifo").unlink()
    (dst / "fifo").write_bytes(b"")
    out = compare_trees(src, dst)
    assert out == ["docs: missing from copy", "fifo: type 'p' in source, '-' in copy", "new: only in copy"]


def test_size(pair: tuple[Path, Path]) -> None:
    src, dst = pair
    f = dst / "tail-hole"
    saved = keep_times(f)
    os.truncate(f, os.lstat(f).st_size + 1)
    restore_times(saved)
    assert compare_trees(src, dst) == ["tail-hole: size 9437184 in source, 9437185 in copy"]


@needs_root
def test_owner_and_device_numbers(pair: tuple[Path, Path]) -> None:
    src, dst = pair
    os.chown(dst / "small", 1, 2)
    null = dst / "null"
    saved = keep_times(null)
    os.unlink(null)
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 5))
    os.chmod(null, 0o666)
    restore_times(saved)
    out = compare_trees(src, dst)
    assert out == ["null: device 1:3 in source, 1:5 in copy", "small: owner 1:1 in source, 1:2 in copy"]
    assert compare_trees(src, dst, check_owner=False) == ["null: device 1:3 in source, 1:5 in copy"]


# ------------------------------------------------------------------ the generator makes what it says


def test_sample_tree_has_every_kind(tmp_path: Path) -> None:
    spec = sample_tree(tmp_path / "t")
    t = tmp_path / "t"
    kinds = {e.kind for e in spec.entries}
    assert {"dir", "file", "symlink", "hardlink", "fifo"} <= kinds
    assert stat.S_ISFIFO(os.lstat(t / "fifo").st_mode)
    assert os.readlink(os.fsencode(t) + b"/\xff\xfe-dir/non-utf8-target") == b"\xff\xfe-target"
    assert os.lstat(t / "hard3-a").st_nlink == 3 and os.lstat(t / "hard-a").st_ino == os.lstat(t / "hard-b").st_ino
    assert stat.S_IMODE(os.lstat(t / "setuid").st_mode) == 0o4755
    assert stat.S_IMODE(os.lstat(t / "setgid").st_mode) == 0o2755
    assert stat.S_IMODE(os.lstat(t / "empty-dir").st_mode) == 0o1777
    assert os.lstat(t / "small").st_mtime_ns % 1_000_000_000 != 0
    assert os.getxattr(t / "small", "user.b") == bytes(range(256))
    assert ACL_ACCESS in {os.fsencode(n) for n in os.listxattr(t / "docs" / "large.bin")}
    assert ACL_DEFAULT in {os.fsencode(n) for n in os.listxattr(t / "docs" / "deep" / "er")}
    sparse = t / "sparse.img"
    assert os.lstat(sparse).st_size == 64 * 1024 * 1024 and os.lstat(sparse).st_blocks * 512 < 100_000
    fd = os.open(sparse, os.O_RDONLY)
    extents = data_extents(fd, 64 * 1024 * 1024)
    os.close(fd)
    assert len(extents) == 3 and extents[-1][0] + extents[-1][1] == 64 * 1024 * 1024
    fd = os.open(t / "tail-hole", os.O_RDONLY)
    assert data_extents(fd, 9 * 1024 * 1024) == [(0, 73728)]
    os.close(fd)
    if IS_ROOT:
        assert {"chardev", "blockdev"} <= kinds
        assert os.lstat(t / "null").st_rdev == os.makedev(1, 3) and stat.S_ISBLK(os.lstat(t / "docs" / "loop9").st_mode)
        assert os.lstat(t / "no-access").st_uid == unnamed_id() and os.lstat(t / "setuid").st_uid == 65534
        assert stat.S_IMODE(os.lstat(t / "no-access").st_mode) == 0
        assert os.getxattr(t / "trusted", "trusted.t") == b"\xde\xad\xbe\xef"
        assert os.getxattr(t / "dangling", "trusted.l", follow_symlinks=False) == b"1"
        assert len(os.getxattr(t / "setuid", "security.capability")) == 20
    assert sum(os.lstat(p).st_blocks * 512 for p in t.rglob("*")) < 4 * 1024 * 1024


@pytest.mark.skipif(shutil.which("getfacl") is None, reason="getfacl missing: apt-get install acl")
def test_acl_encoding_agrees_with_getfacl(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    os.setxattr(d, ACL_ACCESS, acl_xattr(7, 5, 1, users=[(1000, 6)], groups=[(4242, 1)], mask=7))
    os.setxattr(d, ACL_DEFAULT, acl_xattr(6, 4, 0))
    out = subprocess.run(["getfacl", "-n", "-c", "-E", str(d)], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["user::rwx", "user:1000:rw-", "group::r-x", "group:4242:--x", "mask::rwx", "other::--x",
                           "default:user::rw-", "default:group::r--", "default:other::---"]
    assert format_acl(os.getxattr(d, ACL_ACCESS)) == "u::rwx,u:1000:rw-,g::r-x,g:4242:--x,m::rwx,o::--x"


def _check_materialized(spec: TreeSpec, root: Path) -> None:
    """materialize wrote every entry as specified (checked without the comparator)."""
    base = os.fsencode(root)
    for e in spec.entries:
        p = os.path.join(base, *e.path)
        st = os.lstat(p)
        if e.kind == "hardlink":
            assert os.path.samestat(st, os.lstat(os.path.join(base, *e.link_to)))
            continue
        assert e.meta is not None
        assert (st.st_mtime_ns, st.st_atime_ns) == (e.meta.mtime_ns, e.meta.atime_ns)
        if e.kind != "symlink":
            assert stat.S_IMODE(st.st_mode) == e.meta.mode
        if e.meta.uid is not None:
            assert st.st_uid == e.meta.uid
        xattrs = dict(read_xattrs(p)[0])
        for name, value in e.meta.xattrs:
            assert name in xattrs and (name == ACL_ACCESS or xattrs[name] == value)  # chmod rewrites the access ACL
        if e.kind == "symlink":
            assert os.readlink(p) == e.target
        elif e.kind == "file":
            assert e.content is not None and st.st_size == e.content.size
        elif e.kind in ("chardev", "blockdev"):
            assert st.st_rdev == e.rdev


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree_specs(max_entries=14))
def test_round_trip_through_fsmeta_is_exact(spec: TreeSpec) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "src", Path(tmp) / "dst"
        materialize(spec, src)
        _check_materialized(spec, src)
        dst.mkdir()
        assert copy_tree(src, dst) == []
        assert compare_trees(src, dst) == []


@settings(max_examples=30, deadline=None)
@given(tree_specs(max_entries=10, root=False))
def test_non_root_specs_avoid_root_only_features(spec: TreeSpec) -> None:
    metas = [spec.root] + [e.meta for e in spec.entries if e.meta is not None]
    assert not {e.kind for e in spec.entries} & {"chardev", "blockdev"}
    assert all(m.uid is None and m.gid is None for m in metas)
    assert not any(name.startswith((b"trusted.", b"security.")) for m in metas for name, _ in m.xattrs)


def test_sample_spec_is_deterministic() -> None:
    assert sample_spec() == sample_spec()


# ------------------------------------------------------------------ the same, as an ordinary user


def run_as_nobody(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a forked child as uid/gid 65534 and return its (picklable) result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
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
    assert status == "ok", value
    return value


def _round_trip_in(base: Path, spec: TreeSpec) -> tuple[list[str], list[str]]:
    src, dst = base / "src", base / "dst"
    materialize(spec, src)
    dst.mkdir()
    return copy_tree(src, dst), compare_trees(src, dst)


@needs_root
def test_non_root_round_trip_of_the_sample() -> None:
    base = Path(tempfile.mkdtemp(dir="/tmp"))  # pytest's tmp_path is not reachable by nobody
    try:
        base.chmod(0o777)
        spec = sample_spec(root=False)
        assert run_as_nobody(lambda: _round_trip_in(base, spec)) == ([], [])
        assert os.lstat(base / "dst" / "small").st_uid == 65534
    finally:
        shutil.rmtree(base)


@needs_root
@settings(max_examples=15, deadline=None)
@given(tree_specs(max_entries=10, root=False))
def test_non_root_round_trip_is_exact(spec: TreeSpec) -> None:
    base = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        base.chmod(0o777)
        assert run_as_nobody(lambda: _round_trip_in(base, spec)) == ([], [])
    finally:
        shutil.rmtree(base)
