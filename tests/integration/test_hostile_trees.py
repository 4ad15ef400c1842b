"""Snapshots written by a compromised host that holds a write-only key (docs/keys.md, "Threat model").

Such a host can add trees and snapshots that authenticate correctly. The owner's restore, ls, dump, diff and
check over them must never write outside the target, crash or give up on the whole snapshot: each bad entry
is named in one line and costs only itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tuckbox.backends.local import LocalBackend
from tuckbox.repository.repo import Repository
from tuckbox.snapshot.model import Snapshot, now_iso
from tuckbox.types import BlobType

from .conftest import Tuckbox

PAYLOAD = b"an ordinary file\n"


class Forger:
    """Writes trees and snapshots as a hostile host could: any entries at all, correctly sealed."""

    def __init__(self, tb: Tuckbox, tmp_path: Path) -> None:
        os.environ["TUCKBOX_CACHE_DIR"] = str(tmp_path / "forger-cache")
        self.repo = Repository.open(LocalBackend(tb.repo), lambda: tb.passfile.read_bytes().rstrip(b"\n"))
        self.packer = self.repo.new_packer()

    def data(self, data: bytes) -> bytes:
        blob_id = self.repo.blob_id(data)
        self.packer.add(BlobType.DATA, blob_id, data)
        return blob_id

    def tree(self, maps: list[Any]) -> bytes:
        raw = msgpack.packb({"v": 1, "nodes": maps})
        blob_id = self.repo.blob_id(raw)
        self.packer.add(BlobType.TREE, blob_id, raw)
        return blob_id

    def snapshot(self, root: bytes, **fields: Any) -> str:
        self.packer.flush()
        doc = {"time": now_iso(), "host": "h", "user": "u", "paths": [b"/src"], **fields}
        return self.repo.save_snapshot(Snapshot(tree=root, **doc))

    def close(self) -> None:
        self.packer.flush()
        self.packer.close()
        self.repo.close()


def file(name: bytes, content: list[Any], **fields: Any) -> dict[str, Any]:
    return {"n": name, "t": "file", "m": 0o644, "c": content, "s": len(PAYLOAD), **fields}


@pytest.fixture
def forger(tb: Tuckbox, tmp_path: Path):
    tb("init")
    f = Forger(tb, tmp_path)
    yield f
    f.close()


MALFORMED = {
    "mode-with-type-bits": {"m": 0o100644},
    "mode-text": {"m": "644"},
    "mode-negative": {"m": -1},
    "size-text": {"s": "17"},
    "link-count-text": {"l": "2", "i": 5},
    "uid-negative": {"u": -5},
    "user-bytes": {"un": b"root"},
    "hole-negative": {"c": "CONTENT+[-100]"},
    "chunk-text": {"c": ["abc"]},
    "xattr-half": {"x": [[b"user.a"]]},
    "xattr-text": {"x": [["user.a", "v"]]},
    "symlink-nul": {"t": "symlink", "lt": b"a\0b", "c": []},
    "symlink-text": {"t": "symlink", "lt": "target", "c": []},
    "device-negative": {"t": "chardev", "r": -1, "c": []},
    "subtree-text": {"t": "dir", "st": "abc", "c": []},
    "not-a-map": None,
    "name-dot-dot": {"n": b".."},
    "name-with-slash": {"n": b"x/y"},
    "name-empty": {"n": b""},
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_entry_costs_only_itself(tb: Tuckbox, forger: Forger, tmp_path: Path, case: str) -> None:
    """Each of these stopped the whole restore ('internal error') or ls/diff/dump with one, and check called the
    repository sound."""
    good = forger.data(PAYLOAD)
    fields = MALFORMED[case]
    if fields is None:
        bad: Any = [1, 2, 3]
    else:
        bad = file(b"bad", [good])
        bad.update({k: ([good, -100] if v == "CONTENT+[-100]" else v) for k, v in fields.items()})
    sub = forger.tree([bad, file(b"fine", [good])])
    root = forger.tree([{"n": b"d", "t": "dir", "m": 0o755, "st": sub}, file(b"top", [good])])
    snap = forger.snapshot(root)[:8]

    target = tmp_path / "r"
    res = tb("restore", snap, "--target", str(target), expect=1)
    said = [ln for ln in res.err.splitlines() if "malformed" in ln]
    assert said and all(ln.startswith("error: /d/") and "not restored" in ln for ln in said), res.err
    assert (target / "d" / "fine").read_bytes() == PAYLOAD  # the rest of its directory is restored
    assert (target / "top").read_bytes() == PAYLOAD
    assert sorted(p.name for p in (target / "d").iterdir()) == ["fine"]

    for args in (("ls", "-l", snap), ("find", "fine")):  # one line naming the directory, not 'internal error'
        out = tb(*args, expect=1)
        assert out.err.startswith("tuckbox: error: /d: tree entry ") and "malformed" in out.err, (args, out.err)
    assert tb("dump", snap, "/d/fine").raw == PAYLOAD  # a malformed entry beside it does not hide it
    assert tb("ls", snap, "/d/fine").out == "/d/fine\n"
    check = tb("check", expect=1)
    assert "malformed" in check.err and "/d" in check.err, check.err


def test_two_entries_of_one_name_never_replace_each_other(tb: Tuckbox, forger: Forger, tmp_path: Path) -> None:
    """A symlink 'a' out of the target and a directory 'a' with a file below it; two files 'b'. The second of
    each was written over the first, silently (and on a resumed restore the directory replaced the symlink),
    and check called the repository sound."""
    outside = tmp_path / "outside"
    outside.mkdir()
    good, other = forger.data(PAYLOAD), forger.data(b"the second b\n")
    sub = forger.tree([file(b"f", [good])])
    root = forger.tree([
        {"n": b"a", "t": "symlink", "m": 0o777, "lt": os.fsencode(outside)},
        {"n": b"a", "t": "dir", "m": 0o755, "st": sub},
        file(b"b", [good]),
        file(b"b", [other], s=13),
        file(b"c", [good]),
    ])
    snap = forger.snapshot(root)[:8]
    target = tmp_path / "r"
    for _ in range(2):  # the second run resumes the first (which did not complete)
        res = tb("restore", snap, "--target", str(target), expect=1)
        said = [ln for ln in res.err.splitlines() if "same directory has that name" in ln]
        assert {ln.split(":")[1].strip() for ln in said} == {"/a", "/b"}, res.err
        assert os.readlink(target / "a") == str(outside)
        assert (target / "b").read_bytes() == PAYLOAD
        assert (target / "c").read_bytes() == PAYLOAD
        assert list(outside.iterdir()) == []
    check = tb("check", expect=1)
    assert "same directory has that name" in check.err, check.err


@pytest.mark.parametrize("fields", [
    {"time": "not a time"},
    {"time": "2026-01-01T00:00:00"},  # no offset: cannot be compared with the others
    {"time": "0001-01-01T00:00:00+01:00"},  # overflows when converted
    {"tree": 100},  # bytes(100): a hundred zero bytes (bytes(3_000_000_000) took 3 GB)
    {"paths": [3]},
])
def test_a_malformed_snapshot_is_skipped_and_does_not_stop_every_command(
    tb: Tuckbox, forger: Forger, tmp_path: Path, fields: dict[str, Any]
) -> None:
    """One snapshot whose time did not parse stopped snapshots, ls, stats, forget and restore of every
    snapshot with 'internal error'; check called it sound."""
    good = forger.data(PAYLOAD)
    root = forger.tree([file(b"f", [good])])
    sound = forger.snapshot(root)
    bad = forger.snapshot(fields.pop("tree", root), **fields)[:8]
    listing = tb("snapshots", "--json")
    assert [s["id"] for s in listing.json()] == [sound]
    assert f"snapshot {bad} skipped: is malformed" in listing.err, listing.err
    assert tb("ls", "latest").out.split() == ["/f"]
    tb("stats")
    tb("forget", "--keep-last", "1", "--dry-run")
    tb("restore", "latest", "--target", str(tmp_path / "r"))
    assert (tmp_path / "r" / "f").read_bytes() == PAYLOAD
    check = tb("check", expect=1)
    assert f"snapshot {bad}" in check.err and "is malformed" in check.err, check.err


def _plant_lock(forger: Forger, doc: dict[str, Any]) -> None:
    import json
    import secrets

    from tuckbox.crypto.aead import seal
    from tuckbox.repository.locks import LOCK_AD
    from tuckbox.types import ObjectType

    sealed = seal(forger.repo.keys.index_key, json.dumps(doc).encode(), LOCK_AD)
    forger.repo.backend.save(ObjectType.LOCK, secrets.token_hex(16), sealed)


@pytest.mark.parametrize("when", [float("inf"), float("nan"), 1e18])
def test_a_lock_whose_time_is_no_time_does_not_stop_prune_or_unlock(tb: Tuckbox, forger: Forger, when: float) -> None:
    """prune, unlock and even 'unlock --all' (the way to remove it) stopped with 'internal error'."""
    _plant_lock(forger, {"host": "h", "pid": 1, "user": "u", "time": when, "exclusive": True})
    tb("prune")
    tb("unlock", "--all")
    assert list((Path(tb.repo) / "locks").iterdir()) == []


def test_hosts_and_users_are_never_sent_raw_to_the_terminal(tb: Tuckbox, forger: Forger) -> None:
    """A snapshot dated ahead of the clock and a lock name their host in a note or error: its escape sequences
    (clear the screen, set the window title) went to the owner's terminal as they were."""
    evil = "ev\x1b[2J\x1b]0;pwned\x07il"
    good = forger.data(PAYLOAD)
    forger.snapshot(forger.tree([file(b"f", [good])]), host=evil, time="2999-01-01T00:00:00.000000+00:00")
    for args in (("snapshots",), ("ls", "latest")):
        res = tb(*args)
        assert "ahead of this machine's clock" in res.err and "\\x1b[2J" in res.err, res.err
        assert "\x1b" not in res.err and "\x07" not in res.err, (args, res.err)
    _plant_lock(forger, {"host": evil, "pid": 1, "user": evil, "time": 4e9, "exclusive": True})
    res = tb("prune", expect=1)
    assert "locked" in res.err and "\\x1b]0;pwned" in res.err, res.err
    assert "\x1b" not in res.err and "\x07" not in res.err, res.err


def test_owner_and_xattr_names_from_a_tree_are_shown_escaped(tb: Tuckbox, forger: Forger, tmp_path: Path) -> None:
    """'ls -l' printed a tree's user and group names raw and restore's warning its extended attribute's name:
    escape sequences from a hostile host reached the owner's terminal."""
    escape = "\x1b]0;pwned\x07\x1b[2J"
    good = forger.data(PAYLOAD)
    entry = file(b"f", [good], un="u" + escape, gn="g" + escape, x=[[b"nonsense." + escape.encode(), b"v"]])
    snap = forger.snapshot(forger.tree([entry]))[:8]
    listing = tb("ls", "-l", snap)
    assert "u\\x1b]0;pwned\\x07\\x1b[2J" in listing.out and "\x1b" not in listing.out, listing.out
    res = tb("restore", snap, "--target", str(tmp_path / "r"))
    assert "nonsense.\\x1b]0;pwned" in res.err and "\x1b" not in res.err and "\x07" not in res.err, res.err
    assert (tmp_path / "r" / "f").read_bytes() == PAYLOAD


def test_a_blob_whose_index_entry_claims_gigabytes_is_refused_before_it_is_decompressed(
    tb: Tuckbox, forger: Forger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """64 KB of zstd frame without a content size, and an index entry that says 2 GiB: restore, dump and check
    --read-data each decompressed 2 GiB into memory before finding that the blob does not match its id (a
    few such blobs, or a larger claim, and the owner's machine runs out of memory)."""
    import dataclasses

    import zstandard

    from tuckbox.pack.format import COMPRESSION_ZSTD
    from tuckbox.repository import packer as packer_module

    claimed = 2 << 30
    stream = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    zeros = bytes(1 << 20)
    bomb = b"".join(stream.compress(zeros) for _ in range(claimed >> 20)) + stream.flush()
    real = packer_module.compress_many
    monkeypatch.setattr(packer_module, "compress_many", lambda datas, each=False: [
        (bomb, COMPRESSION_ZSTD) if bytes(d) == bomb else out for d, out in zip(datas, real(datas, each))])
    bomb_id = b"\x07" * 32
    write_index = forger.repo.write_index

    def claiming(packs):
        return write_index([dataclasses.replace(p, blobs=tuple(
            e._replace(raw_length=claimed) if e.id == bomb_id else e for e in p.blobs)) for p in packs])

    monkeypatch.setattr(forger.repo, "write_index", claiming)
    forger.packer.close()
    forger.packer = forger.repo.new_packer()
    forger.packer.add(BlobType.DATA, bomb_id, bomb)
    good = forger.data(PAYLOAD)
    snap = forger.snapshot(forger.tree([file(b"bomb", [bomb_id], s=claimed), file(b"ok", [good])]))[:8]

    res = tb("restore", snap, "--target", str(tmp_path / "r"), expect=1)
    assert "/bomb: not restored: blob 07070707" in res.err and "claims 2147483648 bytes" in res.err, res.err
    assert (tmp_path / "r" / "ok").read_bytes() == PAYLOAD
    assert "claims 2147483648 bytes" in tb("dump", snap, "/bomb", expect=1).err
    assert "claims 2147483648 bytes" in tb("check", "--read-data", expect=1).err


@pytest.mark.parametrize("kind", ["file", "symlink", "dir"])
def test_an_entry_named_like_the_restore_marker_is_left_out_with_a_warning(
    tb: Tuckbox, forger: Forger, tmp_path: Path, kind: str
) -> None:
    """A top-level '.tuckbox-restore' was written over the restore's marker and then removed with it (exit 0,
    the entry silently gone); as a symlink or directory it failed the first run, and the resumed run replaced
    the marker with it."""
    good = forger.data(PAYLOAD)
    entry = {"file": file(b".tuckbox-restore", [good]),
             "symlink": {"n": b".tuckbox-restore", "t": "symlink", "lt": os.fsencode(tmp_path / "outside")},
             "dir": {"n": b".tuckbox-restore", "t": "dir", "st": forger.tree([file(b"x", [good])])}}[kind]
    snap = forger.snapshot(forger.tree([entry, file(b"z", [good])]))[:8]
    target = tmp_path / "r"
    res = tb("restore", snap, "--target", str(target))
    assert "warning: /.tuckbox-restore: not restored: the restore keeps its own marker" in res.err, res.err
    assert sorted(os.listdir(target)) == ["z"] and (target / "z").read_bytes() == PAYLOAD


@pytest.mark.parametrize("value", ["huge", float("nan"), [1], None])
def test_a_summary_that_holds_no_count_does_not_stop_snapshots_or_stats(
    tb: Tuckbox, forger: Forger, value: Any
) -> None:
    """'snapshots' and 'stats' stopped with 'internal error' for the whole repository (and --json wrote NaN,
    which is not JSON)."""
    import json

    good = forger.data(PAYLOAD)
    forger.snapshot(forger.tree([file(b"f", [good])]), summary={"bytes_total": value, "files_new": 3})
    assert "0 B" in tb("snapshots").out
    listing = json.loads(tb("snapshots", "--json").out, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert listing[0]["summary"] == {"files_new": 3}
    tb("stats")
