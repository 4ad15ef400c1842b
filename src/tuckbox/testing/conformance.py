"""The backend conformance suite: every Backend must pass every check here.

Use from a test module::

    from tuckbox.testing.conformance import CONFORMANCE_CHECKS
    @pytest.mark.parametrize("check", CONFORMANCE_CHECKS, ids=lambda c: c.__name__)
    def test_conformance(check, fresh_backend):
        check(fresh_backend)

``fresh_backend`` must be an empty, created location. ``BIG`` object checks
use 64 MiB; set TUCKBOX_CONFORMANCE_BIG=0 to shrink it for a quick run.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Callable

from ..errors import ObjectExists, ObjectNotFound
from ..types import Backend, ObjectType


def _name(i: int | str) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def check_round_trip(b: Backend) -> None:
    for t in (ObjectType.PACK, ObjectType.INDEX, ObjectType.SNAPSHOT, ObjectType.KEY, ObjectType.LOCK):
        data = os.urandom(1000) + t.value.encode()
        b.save(t, _name(t.value), data)
        assert b.load(t, _name(t.value)) == data
        assert b.stat(t, _name(t.value)).size == len(data)
    b.save(ObjectType.CONFIG, "config", b"{}")
    assert b.load(ObjectType.CONFIG, "config") == b"{}"
    assert [i.name for i in b.list(ObjectType.CONFIG)] == ["config"]


def check_ranged_reads(b: Backend) -> None:
    data = bytes(range(256)) * 1000
    b.save(ObjectType.PACK, _name("ranged"), data)
    for off, ln in [(0, 1), (1, 10), (255, 256), (1000, 5000), (len(data) - 7, 7), (0, len(data))]:
        assert b.load(ObjectType.PACK, _name("ranged"), off, ln) == data[off : off + ln], (off, ln)
    assert b.load(ObjectType.PACK, _name("ranged"), 5000) == data[5000:]


def check_empty_object(b: Backend) -> None:
    b.save(ObjectType.INDEX, _name("empty"), b"")
    assert b.load(ObjectType.INDEX, _name("empty")) == b""
    assert b.stat(ObjectType.INDEX, _name("empty")).size == 0
    assert _name("empty") in {i.name for i in b.list(ObjectType.INDEX)}


def check_big_object(b: Backend) -> None:
    size = 64 << 20 if os.environ.get("TUCKBOX_CONFORMANCE_BIG", "1") != "0" else 3 << 20
    data = os.urandom(1 << 20) * (size >> 20)
    data = data[:-3] + b"end"
    b.save(ObjectType.PACK, _name("big"), data)
    assert b.stat(ObjectType.PACK, _name("big")).size == len(data)
    assert hashlib.sha256(b.load(ObjectType.PACK, _name("big"))).digest() == hashlib.sha256(data).digest()
    assert b.load(ObjectType.PACK, _name("big"), len(data) - 10, 10) == data[-10:]
    # a range across many of a transport's blocks (SFTP: 255 KiB requests), starting and ending inside one
    off, ln = (1 << 20) - 5, (2 << 20) + 11
    assert b.load(ObjectType.PACK, _name("big"), off, ln) == data[off : off + ln]


def check_list_many(b: Backend) -> None:
    names = {_name(f"many{i}") for i in range(2000)}
    for n in names:
        b.save(ObjectType.SNAPSHOT, n, b"x")
    listed = {i.name for i in b.list(ObjectType.SNAPSHOT)}
    assert listed == names
    packs = {_name(f"pack{i}") for i in range(300)}
    for n in packs:
        b.save(ObjectType.PACK, n, b"p")
    assert {i.name for i in b.list(ObjectType.PACK)} >= packs
    assert not {i.name for i in b.list(ObjectType.INDEX)} & names


def check_not_found(b: Backend) -> None:
    missing = _name("missing")
    for call in (
        lambda: b.load(ObjectType.PACK, missing),
        lambda: b.load(ObjectType.PACK, missing, 10, 10),
        lambda: b.stat(ObjectType.INDEX, missing),
        lambda: b.remove(ObjectType.SNAPSHOT, missing),
    ):
        try:
            call()
        except ObjectNotFound:
            continue
        raise AssertionError("expected ObjectNotFound")


def check_overwrite_refused(b: Backend) -> None:
    n = _name("once")
    b.save(ObjectType.INDEX, n, b"first")
    try:
        b.save(ObjectType.INDEX, n, b"second")
    except ObjectExists:
        pass
    else:
        raise AssertionError("overwriting an object must raise ObjectExists")
    assert b.load(ObjectType.INDEX, n) == b"first"


def check_remove(b: Backend) -> None:
    n = _name("gone")
    b.save(ObjectType.LOCK, n, b"l")
    b.remove(ObjectType.LOCK, n)
    assert n not in {i.name for i in b.list(ObjectType.LOCK)}
    try:
        b.load(ObjectType.LOCK, n)
    except ObjectNotFound:
        pass
    else:
        raise AssertionError("a removed object must not load")


def check_concurrent_writers(b: Backend) -> None:
    errors: list[BaseException] = []
    payloads = {_name(f"conc{i}"): os.urandom(100_000) for i in range(40)}
    items = list(payloads.items())

    def worker(k: int) -> None:
        try:
            for name, data in items[k::4]:
                b.save(ObjectType.PACK, name, data)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for name, data in payloads.items():
        assert b.load(ObjectType.PACK, name) == data
    # two writers racing for one name: exactly one wins, the object is whole
    race = _name("race")
    results: list[str] = []

    def racer(data: bytes) -> None:
        try:
            b.save(ObjectType.INDEX, race, data)
            results.append("ok")
        except ObjectExists:
            results.append("exists")

    contenders = [bytes([i]) * 50_000 for i in range(2)]
    threads = [threading.Thread(target=racer, args=(d,)) for d in contenders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert "ok" in results
    assert b.load(ObjectType.INDEX, race) in contenders


def check_all_name_characters(b: Backend) -> None:
    names = ["0123456789abcdef" * 4, "f" * 64, "00", "a-b-c-0123", "deadbeef-" + "0" * 16]
    for n in names:
        b.save(ObjectType.LOCK, n, n.encode())
    assert {i.name for i in b.list(ObjectType.LOCK)} >= set(names)
    for n in names:
        assert b.load(ObjectType.LOCK, n) == n.encode()


CONFORMANCE_CHECKS: list[Callable[[Backend], None]] = [
    check_round_trip,
    check_ranged_reads,
    check_empty_object,
    check_big_object,
    check_list_many,
    check_not_found,
    check_overwrite_refused,
    check_remove,
    check_concurrent_writers,
    check_all_name_characters,
]
