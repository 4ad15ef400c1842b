import pytest

from tuckbox.backends.local import LocalBackend
from tuckbox.backends.memory import MemoryBackend
from tuckbox.testing.conformance import CONFORMANCE_CHECKS


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
