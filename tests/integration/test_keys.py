"""Keys that can't be lost and can't leak: write-only keys, recovery kits, key management, via the real CLI."""

from __future__ import annotations

import base64
import json
import os
import random
import stat
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from tuckbox.backends.local import LocalBackend
from tuckbox.crypto import aead
from tuckbox.crypto.keyfile import NO_KEY, _ad, open_keyfile
from tuckbox.crypto.recovery import parse_share
from tuckbox.errors import IntegrityError, WriteOnlyKey
from tuckbox.pack.format import PackKey
from tuckbox.repository.index import decode_index
from tuckbox.repository.repo import Repository
from tuckbox.snapshot import model as snapmodel
from tuckbox.types import ObjectType

PASS = "correct horse battery staple 1"
NEW_PASS = "a completely new passphrase 2"
THIRD_PASS = "third passphrase 3"
WO_PASS = "write-only key passphrase 4"
WRITE_ONLY_MSG = "with a write-only key"


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.repo = tmp / "repo"
        self.pw = {}
        for name, value in (("pw", PASS), ("new", NEW_PASS), ("third", THIRD_PASS), ("wo", WO_PASS)):
            path = tmp / f"{name}.txt"
            path.write_text(value + "\n")
            self.pw[name] = path
        self.base = {k: v for k, v in os.environ.items()
                     if not k.startswith("TUCKBOX_") and k not in ("XDG_CACHE_HOME",)}
        self.base.update({"TUCKBOX_TEST_CHEAP_KDF": "1", "TUCKBOX_CACHE_DIR": str(tmp / "cache")})
        self.outputs: list[str] = []

    def run(self, *args: str, password: str | None = "pw", new: str | None = None, cache: str | None = None,
            repo: Path | None = None, code: int | None = 0) -> subprocess.CompletedProcess:
        env = dict(self.base)
        if password:
            env["TUCKBOX_PASSWORD_FILE"] = str(self.pw[password])
        if new:
            env["TUCKBOX_NEW_PASSWORD_FILE"] = str(self.pw[new])
        if cache:
            env["TUCKBOX_CACHE_DIR"] = str(self.tmp / cache)
        argv = [sys.executable, "-m", "tuckbox.cli.main", "-r", str(repo or self.repo), *args]
        p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
        self.outputs.append(p.stdout + p.stderr)
        if code is not None:
            assert p.returncode == code, f"{args}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p

    def json(self, *args: str, **kw) -> object:
        return json.loads(self.run("--json", *args, **kw).stdout.strip().splitlines()[-1])

    def assert_no_secrets_printed(self, extra: list[str] = ()) -> None:
        for text in self.outputs:
            for secret in (PASS, NEW_PASS, THIRD_PASS, WO_PASS, *extra):
                assert secret not in text


def make_tree(root: Path, seed: int, size: int = 3 << 20) -> Path:
    rng = random.Random(seed)
    (root / "docs" / "deep").mkdir(parents=True)
    (root / "docs" / "big.bin").write_bytes(rng.randbytes(size))
    (root / "docs" / "deep" / "notes.txt").write_text("hello\n" * 1000)
    (root / "empty").write_bytes(b"")
    (root / "small.bin").write_bytes(rng.randbytes(70_000))
    return root


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_same_tree(original: Path, target: Path) -> None:
    restored = target / str(original).lstrip("/")
    assert tree_bytes(restored) == tree_bytes(original)
    assert tree_bytes(original)  # not vacuous


@pytest.fixture()
def env(tmp_path: Path) -> Env:
    e = Env(tmp_path)
    e.run("init")
    return e


def _one_line_error(p: subprocess.CompletedProcess, *needles: str) -> None:
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tuckbox: error: "), p.stderr
    for n in needles:
        assert n in lines[0], lines[0]


# --------------------------------------------------------------------------- write-only keys


def test_write_only_key_dedups_cannot_decrypt_and_full_key_restores_its_work(env: Env, tmp_path: Path) -> None:
    desk = make_tree(tmp_path / "desk", seed=1)
    env.run("backup", str(desk), "--host", "desk")
    key = tmp_path / "nas.key"
    env.run("key", "add", "--write-only", "--output", str(key), "--comment", "nas box")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    listed = env.json("key", "list")
    assert [(k["kind"], k["comment"], k["stored"]) for k in listed] == [
        ("full", "", "repository"), ("write-only", "nas box", "outside")]

    # the unattended host: another machine (own cache), no passphrase anywhere, a copy of the data plus a new file
    nas = tmp_path / "nas"
    nas.mkdir()
    subprocess.run(["cp", "-a", str(desk), str(nas / "data")], check=True)
    (nas / "data" / "new.txt").write_text("only on the nas\n")
    nas_data = nas / "data"
    wo = ["--key-file", str(key)]
    summary = env.json(*wo, "backup", str(nas_data), password=None, cache="nas-cache")
    shown = env.run(*wo, "key", "list", password=None, cache="nas-cache").stdout
    wo_id = listed[1]["id"]
    assert f"the key in use ({wo_id[:8]}) is write-only and kept outside" in shown and wo_id[:8] not in shown.split("\n2 key(s)")[0]
    data_size = sum(len(v) for v in tree_bytes(nas_data).values())
    assert summary["bytes_total"] == data_size
    assert summary["bytes_added"] < data_size // 10, summary  # deduplicated against the desk's chunks
    # what only snapshots tell is unknown to it: null, not 0
    stats = env.json(*wo, "stats", password=None, cache="nas-cache")
    assert stats["snapshots"] is None and stats["original_bytes"] is None and stats["dedup_ratio"] is None
    assert stats["stored_bytes"] > 0
    assert "original size:        unknown" in env.run(*wo, "stats", password=None, cache="nas-cache").stdout

    # it cannot decrypt anything: each read path fails with the same clear one-line message and exit code 1
    for args in (["restore", "latest", "--target", str(tmp_path / "nope")], ["ls", "latest"],
                 ["dump", "latest", str(nas_data / "new.txt")], ["diff", "latest", "latest"]):
        p = env.run(*wo, *args, password=None, cache="nas-cache", code=1)
        _one_line_error(p, WRITE_ONLY_MSG, "use a full key")
    assert not (tmp_path / "nope").exists()

    # snapshots: only its own work (from its local record), never the desk's snapshot
    desk_snaps = env.json("snapshots")
    desk_id = next(s["id"] for s in desk_snaps if s["host"] == "desk")
    own = env.json(*wo, "snapshots", password=None, cache="nas-cache")
    assert [(s["id"], s["own_work"], s["present"]) for s in own] == [(summary["snapshot"], True, True)]
    p = env.run(*wo, "snapshots", password=None, cache="nas-cache")
    assert summary["short_id"] in p.stdout and desk_id[:8] not in p.stdout and "own work" in p.stdout
    assert "cannot read" in p.stderr
    # the same key on a machine with no record of its work lists nothing: it cannot read snapshots
    assert env.json(*wo, "snapshots", password=None, cache="elsewhere") == []

    # check --read-data does what it can: index and pack hashes
    p = env.run(*wo, "check", "--read-data", password=None, cache="nas-cache")
    assert "write-only key" in p.stdout and "no errors found" in p.stdout
    # a write-only key cannot manage keys or make a recovery kit
    for args in (["key", "add", "--comment", "x"], ["recovery-kit", "--output", str(tmp_path / "k")]):
        _one_line_error(env.run(*wo, *args, password=None, new="new", cache="nas-cache", code=1), WRITE_ONLY_MSG)
    assert not (tmp_path / "k").exists()

    # the full key restores what the write-only key wrote, byte for byte
    target = tmp_path / "restored"
    env.run("restore", summary["snapshot"][:12], "--target", str(target))
    assert_same_tree(nas_data, target)
    env.assert_no_secrets_printed()


def test_write_only_key_records_its_snapshot_before_saving_it(env: Env, tmp_path: Path) -> None:
    """The local record of a write-only key's work is written before the snapshot (a crash in between
    cannot leave a stored snapshot it does not know); a save that fails withdraws it again."""
    src = make_tree(tmp_path / "src", seed=5, size=200_000)
    key = tmp_path / "wo.key"
    env.run("key", "add", "--write-only", "--output", str(key))
    wo = ["--key-file", str(key)]
    first = env.json(*wo, "backup", str(src), password=None, cache="wo-cache")
    (src / "more.txt").write_text("changed\n")
    snapshots = env.repo / "snapshots"
    try:
        subprocess.run(["chattr", "+i", str(snapshots)], check=True, capture_output=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        pytest.skip(f"cannot make a directory immutable here: {e}")
    try:
        p = env.run(*wo, "backup", str(src), password=None, cache="wo-cache", code=1)
    finally:
        subprocess.run(["chattr", "-i", str(snapshots)], capture_output=True)
    _one_line_error(p, "snapshots")
    (log,) = (tmp_path / "wo-cache").rglob("own-work/*.jsonl")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [d["id"] for d in lines][0] == first["snapshot"]
    failed = lines[1]["id"]
    assert failed != first["snapshot"] and lines[1:] == [lines[1], {"id": failed, "withdrawn": True}]
    own = env.json(*wo, "snapshots", password=None, cache="wo-cache")
    assert [(s["id"], s["present"]) for s in own] == [(first["snapshot"], True)]
    second = env.json(*wo, "backup", str(src), password=None, cache="wo-cache")
    own = env.json(*wo, "snapshots", password=None, cache="wo-cache")
    assert [s["id"] for s in own] == [first["snapshot"], second["snapshot"]] and all(s["present"] for s in own)
    env.assert_no_secrets_printed()


def test_write_only_key_file_holds_no_private_key(env: Env, tmp_path: Path) -> None:
    make_tree(tmp_path / "t", seed=2, size=600_000)
    env.run("backup", str(tmp_path / "t"))
    key = tmp_path / "laptop.key"
    env.run("key", "add", "--write-only", "--output", str(key), "--comment", "unique-comment-xyzzy")
    raw = key.read_bytes()
    doc = json.loads(raw)
    assert doc["kind"] == "write-only" and doc["kdf"] == {"algorithm": "none"}

    backend = LocalBackend(str(env.repo))
    full_raw = next(backend.load(ObjectType.KEY, i.name) for i in backend.list(ObjectType.KEY)
                    if backend.load(ObjectType.KEY, i.name).startswith(b"{"))
    full = open_keyfile(full_raw, PASS.encode())
    assert full.root and full.data_private and full.meta_private

    # what the file holds, decrypted the way anyone holding the file can
    secret = aead.open_sealed(NO_KEY, base64.b64decode(doc["payload"]), _ad(doc))
    fields = msgpack.unpackb(secret)
    assert fields["kind"] == "write-only" and "root" not in fields
    for private in (full.root, full.data_private, full.meta_private):
        for form in (private, private.hex().encode(), base64.b64encode(private)):
            assert form not in raw and form not in secret

    # every 32-byte value the file holds, tried as a private key, opens no snapshot and no pack
    candidates = [v for v in fields.values() if isinstance(v, bytes) and len(v) == 32]
    assert len(candidates) == 5
    snap_name = next(backend.list(ObjectType.SNAPSHOT)).name
    snap = backend.load(ObjectType.SNAPSHOT, snap_name)
    packs = [p for i in backend.list(ObjectType.INDEX)
             for p in decode_index(backend.load(ObjectType.INDEX, i.name), fields["index_key"], i.name)]
    for pack in packs:
        data = backend.load(ObjectType.PACK, pack.name)
        right = full.data_private if pack.kind == 0 else full.meta_private
        assert PackKey(right, pack.epk).read_header(data)  # the test can tell success from failure
        for value in candidates:
            with pytest.raises(IntegrityError):
                PackKey(value, pack.epk).read_header(data)
    assert aead.open_sealed_to(full.meta_private, snap[5:], snapmodel.PURPOSE)
    for value in candidates:
        with pytest.raises(IntegrityError):
            aead.open_sealed_to(value, snap[5:], snapmodel.PURPOSE)
    repo = Repository.open(backend, None, key_file=raw)
    with pytest.raises(WriteOnlyKey):
        repo.load_snapshot(snap_name)

    # the storage provider gets neither the key's secrets nor its description: keys/ holds only a sealed record
    stored = b"".join(backend.load(ObjectType.KEY, i.name) for i in backend.list(ObjectType.KEY))
    for value in candidates:
        assert value not in stored and base64.b64encode(value) not in stored
    assert b"unique-comment-xyzzy" not in stored
    # and the record is readable with the full key
    assert any(k["comment"] == "unique-comment-xyzzy" for k in env.json("key", "list"))


def test_write_only_key_with_a_passphrase(env: Env, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "t", seed=3, size=100_000)
    key = tmp_path / "guarded.key"
    env.run("key", "add", "--write-only", "--passphrase", "--output", str(key), new="wo")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert json.loads(key.read_bytes())["kdf"]["algorithm"] == "argon2id"
    _one_line_error(env.run("--key-file", str(key), "backup", str(tree), password=None, code=2), "passphrase is needed")
    env.run("--key-file", str(key), "backup", str(tree), password="wo")
    _one_line_error(env.run("--key-file", str(key), "backup", str(tree), password="pw", code=1), "wrong passphrase")
    # an existing file is never overwritten
    before = key.read_bytes()
    _one_line_error(env.run("key", "add", "--write-only", "--output", str(key), code=2), "already exists")
    assert key.read_bytes() == before
    env.assert_no_secrets_printed()


# --------------------------------------------------------------------------- recovery kit


def test_lost_passphrase_end_to_end(env: Env, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "home", seed=4)
    env.run("backup", str(tree))
    kit = tmp_path / "kit"
    env.run("recovery-kit", "--shares", "5", "--threshold", "3", "--output", str(kit))
    files = sorted(p.name for p in kit.iterdir())
    assert files == sorted(f"share-{i}.{e}" for i in range(1, 6) for e in ("txt", "html"))
    assert all(stat.S_IMODE((kit / f).stat().st_mode) == 0o600 for f in files)
    page = (kit / "share-4.html").read_text()
    repo_id = json.loads((env.repo / "config").read_text())["id"]
    assert "<svg" in page and repo_id in page and "share 4 of 5" in page and "any 3 of the 5" in page

    # the passphrase is forgotten: nothing in the environment any more
    _one_line_error(env.run("snapshots", password=None, code=2), "passphrase is needed")
    share = lambda *ns: [str(kit / f"share-{n}.txt") for n in ns]  # noqa: E731
    r1 = tmp_path / "r1"
    env.run("restore", "latest", "--target", str(r1), "--recover", *share(1, 3, 4), password=None)
    assert_same_tree(tree, r1)

    env.run("key", "add", "--comment", "after recovery", "--recover", *share(2, 4, 5), password=None, new="new")
    r2 = tmp_path / "r2"
    env.run("restore", "latest", "--target", str(r2), password="new")
    assert_same_tree(tree, r2)
    # the old data is intact and every passphrase still in the repository works
    assert env.json("check", "--read-data", password="new")["ok"] is True
    pairs = []
    for n in range(1, 6):
        words = parse_share((kit / f"share-{n}.txt").read_text(), "s").mnemonic.split()
        pairs += [f"{a} {b}" for a, b in zip(words, words[1:])]
    env.assert_no_secrets_printed(extra=pairs)


def test_recovery_refusals(env: Env, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "t", seed=5, size=100_000)
    env.run("backup", str(tree))
    kit = tmp_path / "kit"
    env.run("recovery-kit", "--shares", "5", "--threshold", "3", "--output", str(kit))
    s = lambda n: str(kit / f"share-{n}.txt")  # noqa: E731
    target = str(tmp_path / "r")

    p = env.run("restore", "latest", "--target", target, "--recover", s(1), s(2), password=None, code=1)
    _one_line_error(p, "1 more share needed")
    assert not Path(target).exists()

    # one changed word: caught by the share's checksum, named by file and position
    lines = (kit / "share-3.txt").read_text().splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith(" 1 "))  # word 4 is on the row of word 1
    words = lines[row].split()
    original = words[words.index("4") + 1]
    lines[row] = lines[row].replace(f" 4 {original}", f" 4 {'academic' if original != 'academic' else 'acid'}")
    bad = tmp_path / "typed-share-3.txt"
    bad.write_text("\n".join(lines) + "\n")
    p = env.run("ls", "latest", "--recover", s(1), str(bad), s(5), password=None, code=1)
    _one_line_error(p, str(bad), "word 4 is wrong")
    assert original not in p.stderr

    # shares of another repository are refused, naming both repositories
    other = tmp_path / "other"
    env.run("init", repo=other)
    env.run("recovery-kit", "--shares", "3", "--threshold", "2", "--output", str(tmp_path / "kit2"), repo=other)
    ids = [json.loads((r / "config").read_text())["id"][:8] for r in (env.repo, other)]
    p = env.run("ls", "latest", "--recover", str(tmp_path / "kit2" / "share-1.txt"),
                str(tmp_path / "kit2" / "share-2.txt"), password=None, code=1)
    _one_line_error(p, ids[0], ids[1])
    # ... even when the repository line was edited to claim this repository: the secret fails the config check
    forged = []
    for n in (1, 2):
        text = (tmp_path / "kit2" / f"share-{n}.txt").read_text()
        path = tmp_path / f"forged-{n}.txt"
        path.write_text(text.replace(json.loads((other / "config").read_text())["id"],
                                     json.loads((env.repo / "config").read_text())["id"]))
        forged.append(str(path))
    p = env.run("ls", "latest", "--recover", *forged, password=None, code=1)
    _one_line_error(p, "do not unlock repository", ids[0])

    # --recover and --key-file exclude each other; a paper key is a kit of one
    p = env.run("--key-file", s(1), "ls", "latest", "--recover", s(1), s(2), s(3), password=None, code=2)
    _one_line_error(p, "either --key-file or --recover")
    env.run("recovery-kit", "--paper", "--output", str(tmp_path / "paper"))
    r = tmp_path / "from-paper"
    env.run("restore", "latest", "--target", str(r), "--recover", str(tmp_path / "paper" / "paper-key.txt"),
            password=None)
    assert_same_tree(tree, r)
    # before the command name, --recover takes one file at a time (repeatable)
    p = env.run("--recover", s(2), "--recover", s(4), "--recover", s(5), "snapshots", password=None)
    assert "1 snapshot(s)" in p.stdout
    # ... and given several there, the second file is not called an invalid command: the error says what to do
    p = env.run("--recover", s(2), s(4), s(5), "snapshots", password=None, code=2)
    assert "before the command name, --recover takes one share file" in p.stderr and s(4) in p.stderr
    assert "invalid choice" not in p.stderr and len(p.stderr.strip().splitlines()) == 1

    # a kit shape that makes no sense is refused, before the passphrase is asked and with nothing written
    # (a threshold or share count of 0 was taken as "not given": --threshold 0 made a 3-of-5 kit)
    for shares, threshold, words in (("3", "0", "threshold must be between 1 and the number of shares (3), not 0"),
                                     ("0", "2", "between 1 and 16 shares, not 0"),
                                     ("3", "4", "threshold must be between 1 and the number of shares (3), not 4")):
        p = env.run("recovery-kit", "--shares", shares, "--threshold", threshold, "--output",
                    str(tmp_path / "odd"), password=None, code=2)
        _one_line_error(p, words)
        assert not (tmp_path / "odd").exists()


def test_pages_of_an_old_and_a_new_kit_mixed_years_later(env: Env, tmp_path: Path) -> None:
    """A kit made, the passphrase changed, a second kit made (a piece of the first was lost): years later the
    keepers hand back pages of both. Enough of either kit restore, in any order; too few of each are refused
    naming which files belong together."""
    tree = make_tree(tmp_path / "t", seed=6, size=50_000)
    env.run("backup", str(tree))
    env.run("recovery-kit", "--shares", "5", "--threshold", "3", "--output", str(tmp_path / "old"))
    env.run("key", "passwd", new="new")
    env.run("recovery-kit", "--shares", "3", "--threshold", "2", "--output", str(tmp_path / "new"), password="new")
    old = lambda n: str(tmp_path / "old" / f"share-{n}.txt")  # noqa: E731
    new = lambda n: str(tmp_path / "new" / f"share-{n}.txt")  # noqa: E731

    r = tmp_path / "r1"
    env.run("restore", "latest", "--target", str(r), "--recover", old(2), new(1), old(5), old(1), password=None)
    assert_same_tree(tree, r)
    r = tmp_path / "r2"
    env.run("restore", "latest", "--target", str(r), "--recover", old(3), new(3), old(4), new(2), password=None)
    assert_same_tree(tree, r)

    p = env.run("snapshots", "--recover", old(1), new(2), old(4), password=None, code=1)
    _one_line_error(p, "2 different recovery kits", f"{old(1)}, {old(4)}: 1 more share needed (any 3)",
                    f"{new(2)}: 1 more share needed (any 2)")


def test_write_only_key_cannot_remove_a_lock_that_looks_alive(env: Env, tmp_path: Path) -> None:
    """docs/keys.md: a write-only key cannot remove existing objects through tuckbox. 'unlock --all' with it
    removed a running prune's exclusive lock (a backup could then run alongside the prune); stale locks it
    may still remove."""
    from tuckbox.repository.locks import Lock, read_locks

    key = tmp_path / "host.key"
    env.run("key", "add", "--write-only", "--output", str(key))
    repo = Repository.open(LocalBackend(str(env.repo)), lambda: PASS.encode(), load_index=False)
    held = Lock(repo.backend, repo.keys.index_key, exclusive=True, background=False, command="prune").acquire()
    try:
        p = env.run("--key-file", str(key), "unlock", "--all", password=None, code=1)
        _one_line_error(p, "cannot remove locks that look alive (--all) with a write-only key")
        assert [lk.name for lk in read_locks(repo.backend, repo.keys.index_key)] == [held.name]
        p = env.run("--key-file", str(key), "unlock", password=None)
        assert "1 lock(s) kept" in p.stdout
        env.run("unlock", "--all")  # the owner, with the passphrase, still can
        assert read_locks(repo.backend, repo.keys.index_key) == []
    finally:
        held.release()
        repo.close()


# --------------------------------------------------------------------------- key management


def test_key_list_add_passwd_remove(env: Env, tmp_path: Path) -> None:
    keys = env.json("key", "list")
    assert len(keys) == 1 and keys[0]["kind"] == "full" and keys[0]["in_use"] is True
    first = keys[0]["id"]
    assert stat.S_IMODE((env.repo / "keys" / first).stat().st_mode) == 0o600

    # add: needs a new passphrase from its own source, never the current one
    _one_line_error(env.run("key", "add", code=2), "new passphrase is needed")
    # nor one that already opens a key (else 'key passwd' would leave the old passphrase working)
    _one_line_error(env.run("key", "add", new="pw", code=2), f"already opens key {first[:8]}")
    env.run("key", "add", "--comment", "laptop", new="new")
    keys = env.json("key", "list")
    assert [k["comment"] for k in keys] == ["", "laptop"]
    laptop = keys[1]["id"]
    assert stat.S_IMODE((env.repo / "keys" / laptop).stat().st_mode) == 0o600
    assert next(k for k in env.json("key", "list", password="new") if k["in_use"])["id"] == laptop
    p = env.run("key", "list")
    assert "laptop" in p.stdout and first[:8] + " *" in p.stdout

    # passwd: the key in use gets a new passphrase; the old one stops working, the other key is untouched.
    # A passphrase another key already has is refused; the refusal says how to finish a 'key passwd' that was
    # killed after storing its new key (the state this is: two keys, the old one still there)
    p = env.run("key", "passwd", new="new", code=2)
    _one_line_error(p, f"already opens key {laptop[:8]}")
    assert f"tuckbox key remove {first[:8]}" in p.stderr
    out = env.json("key", "passwd", new="third")
    assert out["replaced"] == first
    _one_line_error(env.run("snapshots", code=1), "wrong passphrase")
    env.run("snapshots", password="third")
    env.run("snapshots", password="new")
    ids = {k["id"] for k in env.json("key", "list", password="third")}
    assert first not in ids and laptop in ids and len(ids) == 2

    # remove: never the key in use; then the other one
    third = out["id"]
    _one_line_error(env.run("key", "remove", third[:8], password="third", code=2), "key in use")
    _one_line_error(env.run("key", "remove", "zz", password="third", code=2), "not a key id")
    env.run("key", "remove", laptop[:6], password="third")
    _one_line_error(env.run("snapshots", password="new", code=1), "wrong passphrase")

    # the last full key is never removed, even when nothing is "in use" (opened with a recovery kit)
    env.run("recovery-kit", "--shares", "2", "--threshold", "2", "--output", str(tmp_path / "kit"), password="third")
    shares = [str(tmp_path / "kit" / f"share-{n}.txt") for n in (1, 2)]
    p = env.run("key", "remove", third[:8], "--recover", *shares, password=None, code=2)
    _one_line_error(p, "last full key")
    env.run("snapshots", password="third")

    # a write-only key's record can be removed (with a reminder that the file still works)
    wo = tmp_path / "wo.key"
    env.run("key", "add", "--write-only", "--output", str(wo), password="third")
    wo_id = next(k["id"] for k in env.json("key", "list", password="third") if k["kind"] == "write-only")
    p = env.run("key", "remove", wo_id[:8], password="third")
    assert "still works" in p.stdout
    assert [k["kind"] for k in env.json("key", "list", password="third")] == ["full"]
    env.assert_no_secrets_printed()


def test_tables_show_what_keys_and_snapshots_record_escaped(env: Env, tmp_path: Path) -> None:
    """A comment or host name with terminal controls (written, say, with a write-only key on another host)
    cannot move the cursor, retitle the terminal or add a row to a table."""
    env.run("key", "add", "--comment", "x\x1b[31mRED\nfake 0000 row", new="new")
    out = env.run("key", "list").stdout
    assert "\x1b" not in out and "fake 0000 row" not in out.splitlines()[-1][:14]
    assert "x\\x1b[31mRED\\x0afake 0000 row" in out
    src = tmp_path / "src"
    src.mkdir()
    from tuckbox.archiver.backup import BackupRequest, run_backup
    from tuckbox.repository.repo import Repository as Repo

    os.environ["TUCKBOX_CACHE_DIR"] = str(tmp_path / "cache")  # (restored after the test)
    repo = Repo.open(LocalBackend(str(env.repo)), lambda: PASS.encode())
    try:  # a host name the CLI refuses, as another program (or an old tuckbox) could record it
        run_backup(repo, BackupRequest([str(src)], host="evil\x1b]0;pwned\x07\rrow"))
    finally:
        repo.close()
    out = env.run("snapshots").stdout
    assert "\x1b" not in out and "\r" not in out and "evil\\x1b]0;pwned\\x07\\x0drow" in out


def test_write_only_key_sees_only_sealed_records(env: Env, tmp_path: Path) -> None:
    a, b = tmp_path / "a.key", tmp_path / "b.key"
    env.run("key", "add", "--write-only", "--output", str(a), "--comment", "host-a-secret-comment")
    env.run("key", "add", "--write-only", "--output", str(b), "--comment", "host-b")
    p = env.run("--key-file", str(a), "key", "list", password=None)
    assert "host-b" not in p.stdout and "host-a-secret-comment" not in p.stdout
    listed = env.json("--key-file", str(a), "key", "list", password=None)
    assert sorted(k["kind"] for k in listed) == ["full", "unknown", "unknown"]
    _one_line_error(env.run("--key-file", str(a), "key", "remove", listed[0]["id"][:8], password=None, code=1),
                    WRITE_ONLY_MSG)
