import os

import pytest

from tuckbox.backends.local import LocalBackend
from tuckbox.backends.memory import MemoryBackend
from tuckbox.errors import UsageError
from tuckbox.testing.conformance import CONFORMANCE_CHECKS
from tuckbox.types import ObjectType


@pytest.fixture(params=["local", "memory"])
def fresh_backend(request, tmp_path):
    b = LocalBackend(str(tmp_path / "repo")) if request.param == "local" else MemoryBackend()
    b.create()
    yield b
    b.close()


@pytest.mark.parametrize("check", CONFORMANCE_CHECKS, ids=lambda c: c.__name__)
def test_conformance(check, fresh_backend):
    check(fresh_backend)


def test_local_listing_skips_what_is_not_an_object(tmp_path):
    """Stray files (an OS's, a sync tool's, a user's) in a local repository are not objects: listings skip
    them, so they cannot break 'snapshots' or 'check' (remote backends filter the same way)."""
    from tuckbox.types import ObjectType

    b = LocalBackend(str(tmp_path / "repo"))
    b.create()
    pack, snap = "ab" + "0" * 62, "cd" * 32
    b.save(ObjectType.PACK, pack, b"p")
    b.save(ObjectType.SNAPSHOT, snap, b"s")
    root = tmp_path / "repo"
    for junk in ("snapshots/Thumbs.db", "snapshots/.DS_Store", "snapshots/notes.txt", f"snapshots/{snap}.sync-conflict",
                 "data/ab/desktop.ini", "data/cd/" + "ab" + "1" * 62, "data/zz/" + "ab" + "2" * 62):
        (root / junk).parent.mkdir(parents=True, exist_ok=True)
        (root / junk).write_bytes(b"junk")
    (root / "snapshots" / ("ee" * 32)).mkdir()  # a directory with an object's name
    assert [i.name for i in b.list(ObjectType.SNAPSHOT)] == [snap]
    assert [i.name for i in b.list(ObjectType.PACK)] == [pack]


def _no_hard_links(monkeypatch):
    """The file system of a FAT or exFAT USB disk: link() is refused with EPERM."""
    import errno
    import os

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", refuse)


def test_local_a_missing_object_directory_is_made_again_only_where_the_config_is(tmp_path):
    """index/, data/, locks/ or snapshots/ deleted from a repository that is otherwise there: the next save
    makes it again. With the config gone too (an unmounted disk's empty mount point, a moved directory)
    nothing is written: the repository has disappeared."""
    import shutil

    from tuckbox.errors import ObjectNotFound, PermanentError

    root = tmp_path / "repo"
    b = LocalBackend(str(root))
    b.create()
    b.save(ObjectType.CONFIG, "config", b"{}")
    for type in (ObjectType.INDEX, ObjectType.PACK, ObjectType.LOCK, ObjectType.SNAPSHOT):
        shutil.rmtree(root / type.value)
        name = "ab" * 32
        with pytest.raises(ObjectNotFound):
            b.load(type, name)
        assert list(b.list(type)) == []
        b.save(type, name, b"x")
        assert b.load(type, name) == b"x"
    (root / "config").unlink()
    for type in (ObjectType.INDEX, ObjectType.PACK):
        shutil.rmtree(root / type.value)
        with pytest.raises(PermanentError, match="has disappeared"):
            b.save(type, "cd" * 32, b"x")
        with pytest.raises(PermanentError, match="has disappeared"):
            b.load(type, "cd" * 32)
        assert not (root / type.value).exists()


@pytest.mark.parametrize("check", CONFORMANCE_CHECKS, ids=lambda c: c.__name__)
def test_conformance_without_hard_links(check, tmp_path, monkeypatch):
    """Where link() is refused, objects are renamed into place with RENAME_NOREPLACE: still never replacing,
    still one winner of a race (init on an exFAT disk failed with 'Operation not permitted' before)."""
    _no_hard_links(monkeypatch)
    b = LocalBackend(str(tmp_path / "repo"))
    b.create()
    check(b)
    b.save(ObjectType.LOCK, "ef" * 32, b"probe")
    assert b._publish_by == "renameat2"


def test_without_hard_links_or_renameat2(tmp_path, monkeypatch):
    """Where renameat2's flag is refused too (exFAT through FUSE): check the name, then rename. Objects are
    still whole, never replaced by a later save, and no temporary file is left."""
    import errno

    from tuckbox.backends import local
    from tuckbox.errors import ObjectExists
    from tuckbox.testing.conformance import (
        check_big_object, check_empty_object, check_list_many, check_overwrite_refused, check_ranged_reads,
        check_remove, check_round_trip,
    )
    from tuckbox.types import ObjectType

    _no_hard_links(monkeypatch)

    def refuse(src, dst):
        raise OSError(errno.EINVAL, "Invalid argument", dst)

    monkeypatch.setattr(local, "rename_noreplace", refuse)
    for i, check in enumerate((check_round_trip, check_ranged_reads, check_empty_object, check_big_object,
                               check_list_many, check_overwrite_refused, check_remove)):
        b = LocalBackend(str(tmp_path / f"repo{i}"))
        b.create()
        check(b)
    b = LocalBackend(str(tmp_path / "repo"))
    b.create()
    b.save(ObjectType.INDEX, "ab" * 32, b"first")
    assert b._publish_by == "rename"
    with pytest.raises(ObjectExists):
        b.save(ObjectType.INDEX, "ab" * 32, b"second")
    assert b.load(ObjectType.INDEX, "ab" * 32) == b"first"
    assert not [p for p in (tmp_path / "repo").rglob(".tmp-*")]


def test_a_real_exfat_disk(tmp_path):
    """Backup, check --read-data and restore on a real exFAT file system (exfat-fuse on a loop device), where
    the machine can make one; skipped where it cannot (no exfat tools, loop devices or FUSE)."""
    import shutil
    import subprocess
    import sys

    need = ("mkfs.exfat", "mount.exfat-fuse", "losetup")
    unmount = shutil.which("fusermount") or shutil.which("fusermount3")
    if os.geteuid() != 0 or not all(shutil.which(t) for t in need) or not unmount or not os.path.exists("/dev/fuse"):
        pytest.skip(f"needs root, /dev/fuse, fusermount and {', '.join(need)}")
    img, mnt = tmp_path / "img", tmp_path / "mnt"
    mnt.mkdir()
    with open(img, "wb") as f:
        f.truncate(256 << 20)
    subprocess.run(["mkfs.exfat", str(img)], check=True, capture_output=True)
    loop = subprocess.run(["losetup", "-f", "--show", str(img)], capture_output=True, text=True)
    if loop.returncode != 0:
        pytest.skip(f"no loop device: {loop.stderr.strip()}")
    dev = loop.stdout.strip()
    try:
        if subprocess.run(["mount.exfat-fuse", dev, str(mnt)], capture_output=True).returncode != 0:
            pytest.skip("cannot mount exfat through FUSE here")
        try:
            src = tmp_path / "src"
            (src / "d").mkdir(parents=True)
            (src / "d" / "big").write_bytes(os.urandom(3 << 20))
            (src / "small").write_bytes(b"small\n")
            env = {**os.environ, "TUCKBOX_PASSWORD": "pw", "TUCKBOX_TEST_CHEAP_KDF": "1",
                   "TUCKBOX_CACHE_DIR": str(tmp_path / "cache"), "TUCKBOX_REPOSITORY": str(mnt / "repo")}
            for args in (["init"], ["backup", str(src)], ["backup", str(src)], ["check", "--read-data"],
                         ["restore", "latest", "--target", str(tmp_path / "r")]):
                p = subprocess.run([sys.executable, "-m", "tuckbox.cli.main", *args], env=env, capture_output=True,
                                   text=True, timeout=300)
                assert p.returncode == 0, (args, p.stderr)
            out = tmp_path / "r" / str(src).lstrip("/")
            assert (out / "d" / "big").read_bytes() == (src / "d" / "big").read_bytes()
            assert (out / "small").read_bytes() == b"small\n"
            assert not list((mnt / "repo").rglob(".tmp-*"))
        finally:
            subprocess.run([unmount, "-u", str(mnt)], capture_output=True)
            subprocess.run(["umount", str(mnt)], capture_output=True)
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True)


def test_file_urls_name_absolute_paths(tmp_path, monkeypatch):
    from tuckbox.backends import open_backend
    from tuckbox.errors import UsageError

    monkeypatch.chdir(tmp_path)
    for url in (f"file://{tmp_path}/a", f"file://localhost{tmp_path}/a"):
        assert open_backend(url).location == str(tmp_path / "a")
    with pytest.raises(UsageError, match="names a host"):
        open_backend("file://tmp/a")  # not ./tmp/a
    assert not (tmp_path / "tmp").exists()


@pytest.mark.parametrize("url", ["sftp:me@host:/srv/repo", "s3:bucket/x", "tahoe:URI:DIR2:aa:bb/x", "me@host:/srv/repo",
                                 "host:repo", "me:hunter2@host:/srv/repo"])
def test_remote_lookalikes_are_not_taken_for_local_paths(tmp_path, monkeypatch, url):
    """restic's sftp:user@host:/path, s3:bucket, scp's user@host:path: taken as local paths they made a
    repository in the current directory, and the backups went there instead of to the server."""
    from tuckbox.backends import open_backend

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="sftp://|s3://|tahoe://") as info:
        open_backend(url)
    assert "hunter2" not in str(info.value)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "x:y").mkdir()  # an existing directory, or one named with ./, is local
    assert open_backend("x:y").location.endswith("x:y")
    assert open_backend("./host:repo").location.endswith("host:repo")


def test_url_schemes_are_case_insensitive(tmp_path, monkeypatch):
    """RFC 3986: 'SFTP://' is 'sftp://' (it was 'unknown repository scheme'); a local path stays as typed."""
    from tuckbox.backends import open_backend
    from tuckbox.backends.sftp import SFTPBackend

    monkeypatch.chdir(tmp_path)
    assert open_backend(f"FILE://{tmp_path}/a").location == str(tmp_path / "a")
    backend = open_backend("SFTP://me@127.0.0.1:9/srv/repo")
    assert isinstance(backend, SFTPBackend) and backend.location.startswith("sftp://")
    with pytest.raises(UsageError, match="unknown repository scheme 'Gopher:'"):
        open_backend("Gopher://host/x")
    (tmp_path / "Sftp:x").mkdir()
    assert open_backend("Sftp:x").location.endswith("Sftp:x")


def test_local_foreign_names_what_the_object_directories_hold_that_is_not_an_object(tmp_path):
    """What listings skip is named by ``foreign`` (for check to show): everything in the object directories
    that tuckbox did not write, but not its own temporary files, nor the objects, nor files next to them."""
    b = LocalBackend(str(tmp_path / "repo"))
    b.create()
    pack, snap = "ab" + "0" * 62, "cd" * 32
    b.save(ObjectType.PACK, pack, b"p")
    b.save(ObjectType.SNAPSHOT, snap, b"s")
    root = tmp_path / "repo"
    junk = ["snapshots/Thumbs.db", f"snapshots/{snap}.sync-conflict", "data/ab/desktop.ini",
            "data/cd/" + "ab" + "1" * 62, "data/zz/x", "data/.DS_Store", "index/notes.txt", "keys/old.key"]
    for name in junk:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"junk")
    (root / "index" / ("ee" * 32)).mkdir()  # a directory with an object's name
    (root / "data" / "ab" / ".tmp-0123").write_bytes(b"")  # tuckbox's own, from an interrupted save
    (root / "README").write_text("my notes next to the repository")
    want = sorted([*junk, "index/" + "ee" * 32 + "/"])
    want[want.index("data/zz/x")] = "data/zz/"
    assert sorted(b.foreign()) == want
    assert [i.name for i in b.list(ObjectType.PACK)] == [pack]
