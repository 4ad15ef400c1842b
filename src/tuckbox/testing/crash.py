"""Helpers for the "never lose a byte" tests: crashes, storage faults, concurrency, corruption.

Everything here drives or inspects *real* things: the ``tuckbox`` command in a
subprocess, real repositories on a local disk, the real SFTP and S3 test
servers (``tuckbox.testing.servers``), and real signals.

Storage faults and crashes are injected into real runs by ``tuckbox.testing.faults`` (the
``TUCKBOX_TEST_FAULTS`` hook); real dropped connections come from ``tuckbox.testing.proxy``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..types import Backend, ObjectType
from .faults import FAULTS_ENV, FAULTS_REPORT_ENV, SAVES_LOG_ENV

KiB = 1024
MiB = 1024 * KiB


# ----------------------------------------------------------------------------- source trees


def _write(path: Path, data: bytes, mtime_ns: int | None = None) -> None:
    path.write_bytes(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def make_tree(
    root: Path,
    seed: int,
    *,
    big: int = 4,
    big_size: tuple[int, int] = (2 * MiB, 5 * MiB),
    dirs: int = 10,
    files_per_dir: int = 50,
    small_size: tuple[int, int] = (0, 40 * KiB),
    shared: dict[str, bytes] | None = None,
) -> int:
    """Write a tree of a few large files and many small ones (incompressible, seeded); return its size.

    File times are set two seconds in the past so the files cache may remember them.
    ``shared`` files (name -> bytes) are added as they are: content several trees have in common.
    """
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    when = time.time_ns() - 2_000_000_000
    total = 0
    for i in range(big):
        n = rng.randint(*big_size)
        _write(root / f"big-{i}.bin", rng.randbytes(n), when)
        total += n
    for d in range(dirs):
        sub = root / f"dir-{d:02d}" / ("deep" if d % 3 == 0 else "")
        sub.mkdir(parents=True, exist_ok=True)
        for j in range(files_per_dir):
            n = rng.randint(*small_size)
            _write(sub / f"file-{j:03d}.dat", rng.randbytes(n), when)
            total += n
    (root / "empty-dir").mkdir(exist_ok=True)
    _write(root / "empty-file", b"", when)
    link = root / "a-link"
    if not link.is_symlink():
        link.symlink_to("big-0.bin")
    for name, data in (shared or {}).items():
        _write(root / name, data, when)
        total += len(data)
    for d in sorted((p for p in root.rglob("*") if p.is_dir() and not p.is_symlink()), key=lambda p: -len(p.parts)):
        os.utime(d, ns=(when, when))
    os.utime(root, ns=(when, when))
    return total


def mutate_tree(root: Path, seed: int, *, new_bytes: int = 6 * MiB) -> None:
    """Change a tree the way a day of work would: new files, a rewritten large file, deletions."""
    rng = random.Random(seed)
    when = time.time_ns() - 2_000_000_000
    batch = root / f"new-{seed}"
    batch.mkdir()
    left = new_bytes
    i = 0
    while left > 0:
        n = min(left, rng.randint(4 * KiB, 2 * MiB))
        _write(batch / f"n-{i:03d}.bin", rng.randbytes(n), when)
        left -= n
        i += 1
    bigs = sorted(root.glob("big-*.bin"))
    if bigs:
        victim = bigs[rng.randrange(len(bigs))]
        data = bytearray(victim.read_bytes())
        at = rng.randrange(len(data))
        data[at:at] = rng.randbytes(100 * KiB)  # an insertion: most chunks still deduplicate
        _write(victim, bytes(data), when)
    smalls = sorted(root.glob("dir-*/**/*.dat"))
    for p in rng.sample(smalls, min(5, len(smalls))):
        p.unlink()
    for d in [batch, root, *{p.parent for p in smalls}]:
        if d.exists():
            os.utime(d, ns=(when, when))


def file_hashes(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every regular file (symlinks as 'link:target')."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "link:" + os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                out[rel] = h.hexdigest()
    return out


def restored(target: Path, source: Path) -> Path:
    """Where a restore into ``target`` puts ``source`` (restores keep absolute paths)."""
    return Path(str(target) + str(source.resolve()))


# ----------------------------------------------------------------------------- storage locations


@dataclass
class Storage:
    """A repository location for the CLI: URL, backend options, extra environment."""

    kind: str  # local, sftp, s3
    url: str
    options: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    local_root: Path | None = None  # where the objects are on this machine's disk, when they are
    connections: int = 4  # the CLI's default number of storage connections (upload threads)

    def cli_args(self) -> list[str]:
        out: list[str] = []
        for k, v in self.options.items():
            out += ["-o", f"{k}={v}"]
        return out

    def backend(self) -> Backend:
        from ..backends import open_backend

        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            return open_backend(self.url, dict(self.options))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def cleanup(self) -> None:
        import shutil

        if self.local_root is not None:
            shutil.rmtree(self.local_root, ignore_errors=True)
        if self.kind == "s3":
            b = self.backend()
            try:
                for t in ObjectType:
                    for info in list(b.list(t)):
                        try:
                            b.remove(t, info.name)
                        except Exception:  # noqa: BLE001 - best effort cleanup
                            pass
            finally:
                b.close()


def local_storage(path: Path) -> Storage:
    return Storage("local", str(path), local_root=path, connections=2)  # the CLI's default for local disks


def sftp_storage(env: dict[str, str], name: str) -> Storage:
    root = env["SFTP_ROOT"]
    path = (root if root.startswith("/") else "/" + root).rstrip("/") + "/" + name
    local = Path(env["SFTP_LOCAL_ROOT"]) / name if env.get("SFTP_LOCAL_ROOT") else None
    return Storage(
        "sftp",
        f"sftp://{env['SFTP_USER']}@{env['SFTP_HOST']}:{env['SFTP_PORT']}{path}",
        {"sftp.identity": env["SFTP_IDENTITY"], "sftp.known_hosts": env["SFTP_KNOWN_HOSTS"], "sftp.config": os.devnull},
        local_root=local,
    )


def s3_storage(env: dict[str, str], name: str) -> Storage:
    creds = {k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")}
    creds.update({"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull})
    return Storage("s3", f"s3://{env['S3_BUCKET']}/{name}", {"s3.endpoint": env["S3_ENDPOINT"]}, env=creds)


# ----------------------------------------------------------------------------- the CLI


@dataclass
class Result:
    code: int
    out: str
    err: str

    def lines(self) -> list[dict[str, Any]]:
        docs = []
        for line in self.out.splitlines():
            line = line.strip()
            if line.startswith("{"):
                docs.append(json.loads(line))
        return docs

    def json(self) -> Any:
        return json.loads(self.out)

    def summary(self) -> dict[str, Any]:
        found = [d for d in self.lines() if d.get("type") == "summary"]
        assert found, f"no JSON summary in the output:\n{self.out}\n{self.err}"
        return found[-1]


class Cli:
    """The real ``tuckbox`` command with an isolated repository, cache and passphrase."""

    def __init__(self, tmp: Path, storage: Storage, *, cache: Path | None = None, name: str = "cli") -> None:
        self.tmp = tmp
        self.storage = storage
        self.name = name
        self.passfile = tmp / "passphrase"
        if not self.passfile.exists():
            self.passfile.write_text("correct horse battery staple\n")
            self.passfile.chmod(0o600)
        self.cache = cache or tmp / f"cache-{name}"
        self.env = {
            **os.environ,
            **storage.env,
            "TUCKBOX_REPOSITORY": storage.url,
            "TUCKBOX_PASSWORD_FILE": str(self.passfile),
            "TUCKBOX_CACHE_DIR": str(self.cache),
            "TUCKBOX_TEST_CHEAP_KDF": "1",
        }
        for k in ("TUCKBOX_PASSWORD", "TUCKBOX_PASSWORD_COMMAND", "TUCKBOX_DEBUG", FAULTS_ENV, FAULTS_REPORT_ENV, SAVES_LOG_ENV):
            self.env.pop(k, None)
        self._n = 0

    @property
    def passphrase(self) -> bytes:
        return self.passfile.read_bytes().rstrip(b"\n")

    def argv(self, args: tuple[str, ...]) -> list[str]:
        return [sys.executable, "-m", "tuckbox.cli.main", *self.storage.cli_args(), *args]

    def __call__(self, *args: str, expect: int | None = 0, env: dict[str, str] | None = None, timeout: float = 600) -> Result:
        proc = subprocess.run(
            self.argv(args), env={**self.env, **(env or {})}, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout
        )
        res = Result(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))
        assert "Traceback" not in res.err, res.err
        if expect is not None:
            assert res.code == expect, (
                f"tuckbox {' '.join(args)} exited {res.code}, expected {expect}\n{res.err[-3000:]}\n{res.out[-3000:]}"
            )
        return res

    def start(self, *args: str, env: dict[str, str] | None = None) -> "Running":
        self._n += 1
        out = self.tmp / f"{self.name}-{self._n}.out"
        err = self.tmp / f"{self.name}-{self._n}.err"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            proc = subprocess.Popen(self.argv(args), env={**self.env, **(env or {})}, stdin=subprocess.DEVNULL, stdout=fo, stderr=fe)
        return Running(proc, out, err, args)


@dataclass
class Running:
    proc: subprocess.Popen
    out_path: Path
    err_path: Path
    args: tuple[str, ...]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)  # our own child, by pid

    def wait(self, timeout: float = 600) -> Result:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait()
            raise AssertionError(f"tuckbox {' '.join(self.args)} did not finish within {timeout}s") from None
        res = Result(code, self.out_path.read_text(errors="replace"), self.err_path.read_text(errors="replace"))
        assert "Traceback" not in res.err, res.err
        return res


def wait_for(cond: Callable[[], bool], timeout: float, what: str, poll: float = 0.02) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)


# ----------------------------------------------------------------------------- repository inspection


def open_repo(storage: Storage, passphrase: bytes, cache: Path):
    """The repository opened in this process (its own cache directory), indexes not loaded."""
    from ..repository.repo import Repository

    old = os.environ.get("TUCKBOX_CACHE_DIR")
    os.environ["TUCKBOX_CACHE_DIR"] = str(cache)
    try:
        return Repository.open(storage.backend(), lambda: passphrase, load_index=False)
    finally:
        if old is None:
            os.environ.pop("TUCKBOX_CACHE_DIR", None)
        else:
            os.environ["TUCKBOX_CACHE_DIR"] = old


class PackInspector:
    """Reads, with the full key, which blobs every stored pack holds: indexed, journaled or orphaned.

    A pack's blob list comes from its own encrypted header (prefix, trailer and
    header are fetched with ranged reads), so packs no index names are seen too.
    Packs are immutable, so what was read once is remembered by name.
    """

    def __init__(self, repo: Any) -> None:
        self.repo = repo
        self.backend = repo.backend
        self._blobs: dict[str, list[Any]] = {}

    def stored(self) -> dict[str, int]:
        return {i.name: i.size for i in self.backend.list(ObjectType.PACK)}

    def blobs(self, name: str, size: int) -> list[Any]:
        """BlobEntry list of a stored pack (from its header)."""
        if name not in self._blobs:
            from ..crypto.aead import counter_nonce, decrypt_with_nonce
            from ..pack.format import PREFIX_LEN, TRAILER_LEN, TRAILER_PLAIN, PackKey, parse_prefix

            prefix = self.backend.load(ObjectType.PACK, name, 0, PREFIX_LEN)
            trailer = self.backend.load(ObjectType.PACK, name, size - TRAILER_LEN, TRAILER_LEN)
            epk = parse_prefix(prefix)
            last: Exception | None = None
            for private in (self.repo.keys.data_private, self.repo.keys.meta_private):
                key = PackKey(private, epk)
                try:
                    plain = decrypt_with_nonce(key._trailer_key, counter_nonce(0), trailer, b"", "pack trailer")
                except Exception as e:  # noqa: BLE001 - sealed to the other key
                    last = e
                    continue
                offset, length = TRAILER_PLAIN.unpack(plain)
                header = self.backend.load(ObjectType.PACK, name, offset, length)
                buf = bytearray(size)
                buf[:PREFIX_LEN] = prefix
                buf[offset : offset + length] = header
                buf[size - TRAILER_LEN :] = trailer
                self._blobs[name] = key.read_header(bytes(buf))
                break
            else:
                raise AssertionError(f"pack {name[:8]}: cannot read its trailer with either key: {last}")
        return self._blobs[name]

    def indexed(self) -> dict[str, Any]:
        """pack name -> PackRecord, from every index object now stored."""
        from ..repository.index import decode_index

        out: dict[str, Any] = {}
        for info in self.backend.list(ObjectType.INDEX):
            raw = self.backend.load(ObjectType.INDEX, info.name)
            for rec in decode_index(raw, self.repo.keys.index_key, info.name):
                out[rec.name] = rec
        return out


def journaled(cache: Path) -> set[str]:
    """Names of the packs recorded in every pack journal in a CLI cache directory."""
    from ..repository.journal import read_journal

    out: set[str] = set()
    for d in cache.glob("*/state/journal"):
        for p in d.iterdir():
            out.update(r.name for r in read_journal(p))
    return out


def snapshot_blobs(repo: Any, snap_ref: str = "latest") -> tuple[dict[bytes, int], set[bytes]]:
    """(data blob id -> raw length, tree ids) of one snapshot, via a freshly loaded index."""
    from ..snapshot.tree import DIR, FILE, decode_tree
    from ..types import BlobType

    repo.load_index()
    snap = repo.find_snapshot(snap_ref)
    data: dict[bytes, int] = {}
    trees: set[bytes] = set()

    def visit(tree_id: bytes) -> None:
        if tree_id in trees:
            return
        trees.add(tree_id)
        for node in decode_tree(repo.load_blob(BlobType.TREE, tree_id)):
            if node.type == DIR and node.subtree:
                visit(node.subtree)
            elif node.type == FILE:
                for c in node.content:
                    if isinstance(c, bytes):
                        loc = repo.index.lookup(c)
                        assert loc is not None, f"chunk {c.hex()[:8]} of the snapshot is not indexed"
                        data[c] = loc.entry.raw_length

    visit(snap.tree)
    return data, trees
