#!/usr/bin/env python3
"""Deterministic benchmark datasets for tuckbox / restic / borg.

Two datasets are generated under bench/work/data/{full,quick}/:

* ``mixed`` (~1 GiB; ~100 MiB with --quick): real text (varied copies of this
  machine's Python standard library sources), large partly random / partly
  repetitive binaries, a database-like file of 4 KiB pages (some random bytes,
  then zero padding), duplicate files and directories, already-compressed data
  (gzip / zstd blobs, random bytes labelled .jpg/.mp4), an empty file, an empty
  directory and a symlink.  ``mutate`` turns it into a second version in place
  (~2 % of the bytes changed: small insertions in the middle of large files and
  of the database file, in-place overwrites, added / deleted / edited small
  files); ``revert`` turns it back into the first version (only the touched
  files are rewritten).
* ``small``: 200,000 files of 100 B - 8 KiB in 2,000 directories (20,000 in
  200 with --quick).

Everything is derived from a fixed seed (AES-CTR keystreams for random bytes,
``random.Random(str)`` for decisions), file and directory mtimes are fixed
(2024-01-01 for the first version, a day later for whatever the mutation
touches) and modes are 0644/0755, so every tool sees exactly the same tree.  The
only input from the machine is the text corpus (the stdlib sources of the
running Python); its fingerprint is recorded in the state file next to the
dataset, together with a digest of the whole tree.

Usage:
    python bench/dataset.py generate mixed [--quick]
    python bench/dataset.py mutate mixed [--quick]
    python bench/dataset.py revert mixed [--quick]
    python bench/dataset.py generate small [--quick]
    python bench/dataset.py digest DIR
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import shutil
import stat
import struct
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

try:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
except ImportError:  # pragma: no cover - the project venv has it
    sys.exit("bench/dataset.py needs the 'cryptography' package (run it with the project's .venv/bin/python)")

try:
    import zstandard
except ImportError:  # pragma: no cover - the project venv has it
    sys.exit("bench/dataset.py needs the 'zstandard' package (run it with the project's .venv/bin/python)")

# bump whenever the generated content (or, for mixed, the mutation) changes
GEN_VERSION = {"mixed": 2, "small": 1}
SEED = 20240601
T1 = 1704067200 * 10**9  # 2024-01-01T00:00:00Z, mtime of version 1
T2 = T1 + 86400 * 10**9  # mtime of whatever the mutation touches
MiB = 1 << 20
KiB = 1 << 10
PAGE = 4096

BENCH = Path(__file__).resolve().parent
WORK = BENCH / "work"

FULL_SCALE = 1.0
QUICK_SCALE = 0.1
SMALL_FULL = 200_000
SMALL_QUICK = 20_000
FILES_PER_SMALL_DIR = 100

TEXT_EXTS = {
    ".py", ".decTest", ".txt", ".html", ".c", ".h", ".pem", ".rst", ".cfg", ".json", ".xml",
    ".ini", ".csv", ".toml", ".bat", ".ps1", ".sh", ".css", ".js", ".tcl",
}


# --------------------------------------------------------------------------- randomness

def prng_bytes(label: str, n: int) -> bytes:
    """n deterministic pseudo-random bytes (AES-256-CTR keystream keyed by label)."""
    if n <= 0:
        return b""
    key = hashlib.sha256(f"tuckbox-bench:{SEED}:{label}".encode()).digest()
    enc = Cipher(algorithms.AES(key), modes.CTR(b"\0" * 16)).encryptor()
    return enc.update(bytes(n))


def rng_for(label: str) -> random.Random:
    return random.Random(f"tuckbox-bench:{SEED}:{label}")


LOW_ENTROPY = bytes.maketrans(bytes(range(256)), bytes(0x41 + (i & 15) for i in range(256)))


# --------------------------------------------------------------------------- text corpus

def corpus_root() -> Path:
    return Path(os.path.dirname(os.__file__))


@lru_cache(maxsize=1)
def corpus() -> tuple[tuple[str, bytes], ...]:
    """Text files of the stdlib (sorted by relative path)."""
    root = corpus_root()
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "__pycache__", "dist-packages"))
        for fn in sorted(filenames):
            if os.path.splitext(fn)[1] not in TEXT_EXTS:
                continue
            p = os.path.join(dirpath, fn)
            if os.path.islink(p):
                continue
            try:
                st = os.stat(p)
                if not stat.S_ISREG(st.st_mode) or st.st_size > 4 * MiB:
                    continue
                with open(p, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            out.append((os.path.relpath(p, root), data))
    out.sort()
    if not out:
        sys.exit(f"no text files found under {root}")
    return tuple(out)


@lru_cache(maxsize=1)
def corpus_concat() -> bytes:
    return b"".join(d for _, d in corpus())


@lru_cache(maxsize=1)
def corpus_fingerprint() -> dict:
    h = hashlib.sha256()
    for rel, data in corpus():
        h.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    return {
        "root": str(corpus_root()),
        "python": sys.version.split()[0],
        "files": len(corpus()),
        "bytes": sum(len(d) for _, d in corpus()),
        "sha256": h.hexdigest(),
    }


def text_slice(rng: random.Random, n: int) -> bytes:
    c = corpus_concat()
    n = min(n, len(c))
    off = rng.randrange(len(c) - n + 1)
    return c[off:off + n]


def vary_text(data: bytes, rng: random.Random, tag: str, ops: int) -> bytes:
    lines = data.split(b"\n")
    for _ in range(ops):
        r = rng.random()
        i = rng.randrange(len(lines) + 1)
        if r < 0.5 or len(lines) < 3:
            lines.insert(i, f"# {tag} {rng.getrandbits(48):012x}".encode())
        elif r < 0.75:
            del lines[min(i, len(lines) - 1)]
        else:
            j = min(i, len(lines) - 2)
            lines[j], lines[j + 1] = lines[j + 1], lines[j]
    return b"\n".join(lines)


# --------------------------------------------------------------------------- plan

@dataclass
class Entry:
    kind: str  # "file" | "symlink" | "dir"
    make: Callable[[], bytes] | None = None  # file content
    target: str = ""  # symlink target


Plan = dict  # rel path -> Entry, in generation order


def _binary_blob(name: str, size: int, scale: float) -> bytes:
    rng = rng_for(f"bin:{name}")
    out = bytearray()
    lo, hi = max(16 * KiB, int(256 * KiB * scale)), max(64 * KiB, int(4 * MiB * scale))
    seg = 0
    while len(out) < size:
        n = min(size - len(out), rng.randint(lo, hi))
        r = rng.random()
        if r < 0.40:  # incompressible
            out += prng_bytes(f"bin:{name}:{seg}", n)
        elif r < 0.62:  # a short random pattern repeated
            pat = prng_bytes(f"binpat:{name}:{seg}", rng.choice((16, 100, 512, 4096, 65536)))
            out += (pat * (n // len(pat) + 1))[:n]
        elif r < 0.72:  # zeros (sparse regions)
            out += bytes(n)
        elif r < 0.88:  # low entropy (4 bits per byte)
            out += prng_bytes(f"binlow:{name}:{seg}", n).translate(LOW_ENTROPY)
        else:  # embedded text (as in a file system image)
            out += text_slice(rng, n)
        seg += 1
    return bytes(out[:size])


def db_page(page_no: int, payload: bytes) -> bytes:
    hdr = struct.pack(">IHH", page_no, 0x0D, len(payload))
    return (hdr + payload).ljust(PAGE, b"\0")


def _db_file(pages: int) -> bytes:
    rng = rng_for("db")
    lens = [rng.randint(200, 2400) for _ in range(pages)]
    pool = prng_bytes("db:pool", sum(lens))
    out = bytearray(pages * PAGE)
    off = 0
    for i, n in enumerate(lens):
        out[i * PAGE:(i + 1) * PAGE] = db_page(i, pool[off:off + n])
        off += n
    return bytes(out)


def _jpeg(label: str, n: int) -> bytes:
    head = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    return head + prng_bytes(label, max(0, n - len(head) - 2)) + b"\xff\xd9"


def _mp4(label: str, n: int) -> bytes:
    head = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41"
    return head + prng_bytes(label, max(0, n - len(head)))


def plan_mixed(scale: float) -> Plan:
    plan: Plan = {}
    files = corpus()

    # --- text: varied copies of the stdlib sources, ~200 MiB
    text_budget = int(200 * MiB * scale)
    used = 0
    copy = 0
    tree0: list[tuple[str, bytes]] = []
    while used < text_budget:
        for rel, data in files:
            if used >= text_budget:
                break
            r = rng_for(f"text:{copy}:{rel}")
            if copy == 0:
                content = data
                tree0.append((rel, data))
            else:
                x = r.random()
                if x < 0.10:
                    continue  # this copy lacks the file
                content = data if x < 0.55 else vary_text(data, r, f"variant {copy}", r.randint(1, 3))
            plan[f"text/tree{copy:02d}/{rel}"] = Entry("file", (lambda c=content: c))
            used += len(content)
        copy += 1

    # --- large binaries, partly random, partly repetitive, ~330 MiB
    binaries = [("vm-disk.img", 96), ("archive.bin", 80), ("sensor-data.bin", 64),
                ("backup-old.bak", 48), ("game-assets.pak", 40)]
    for name, mib in binaries:
        size = int(mib * MiB * scale)
        plan[f"binary/{name}"] = Entry("file", (lambda n=name, s=size: _binary_blob(n, s, scale)))

    # --- database-like file: 4 KiB pages, random bytes then zeros, ~160 MiB
    pages = int(160 * MiB * scale) // PAGE
    plan["db/app.sqlite"] = Entry("file", lambda: _db_file(pages))
    plan["db/app.sqlite-journal"] = Entry("file", lambda: b"")

    # --- duplicates: a copy of part of a source tree, a copy of a big file, many same small files
    dup_budget = int(25 * MiB * scale)
    used = 0
    for rel, data in tree0:
        if used >= dup_budget:
            break
        plan[f"dup/src-copy/{rel}"] = Entry("file", (lambda c=data: c))
        used += len(data)
    plan["dup/archive-copy.bin"] = plan["binary/archive.bin"]
    rng = rng_for("dup:small")
    distinct = [prng_bytes(f"dup:small:{i}", rng.randint(2 * KiB, 64 * KiB)) for i in range(20)]
    for i in range(max(10, int(300 * scale))):
        plan[f"dup/same/{i // 50:02d}/copy-{i:04d}.dat"] = Entry("file", (lambda c=distinct[rng.randrange(20)]: c))

    # --- already compressed data, ~200 MiB
    rng = rng_for("compressed")
    for i in range(max(4, int(40 * scale))):
        n = rng.randint(1 * MiB, 3 * MiB)
        plan[f"compressed/logs/app-{i:03d}.log.gz"] = Entry(
            "file", (lambda n=n, s=rng.random(): gzip.compress(text_slice(random.Random(s), n),
                                                             compresslevel=6, mtime=0)))
    for i in range(max(2, int(20 * scale))):
        n = rng.randint(1 * MiB, 4 * MiB)
        kind = "text" if i % 2 == 0 else "binary"
        plan[f"compressed/blobs/blob-{i:03d}.{kind}.zst"] = Entry(
            "file",
            (lambda n=n, s=rng.random(), k=kind, i=i: zstandard.ZstdCompressor(level=3).compress(
                text_slice(random.Random(s), n) if k == "text" else _binary_blob(f"zst{i}", n, scale))))
    photo_budget = int(130 * MiB * scale)
    used = 0
    i = 0
    while used < photo_budget:
        n = rng.randint(int(1 * MiB * scale), int(6 * MiB * scale))
        plan[f"compressed/photos/IMG_{i:04d}.jpg"] = Entry("file", (lambda n=n, i=i: _jpeg(f"photo:{i}", n)))
        used += n
        i += 1
    plan["compressed/video/clip.mp4"] = Entry("file", (lambda n=int(30 * MiB * scale): _mp4("video", n)))

    # --- odds and ends
    plan["misc/empty.txt"] = Entry("file", lambda: b"")
    plan["misc/empty-dir"] = Entry("dir")
    plan["misc/README-link"] = Entry("symlink", target="../text/tree00/os.py")
    plan["misc/notes.md"] = Entry("file", lambda: b"# notes\n\nbenchmark dataset for tuckbox\n" * 40)
    return plan


# --------------------------------------------------------------------------- writing

def write_file(path: str, data: bytes, mtime_ns: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        mv = memoryview(data)
        while mv:
            n = os.write(fd, mv)
            mv = mv[n:]
        os.fchmod(fd, 0o644)
        os.utime(fd, ns=(mtime_ns, mtime_ns))
    finally:
        os.close(fd)


def materialize(root: Path, rel: str, e: Entry, mtime_ns: int) -> int:
    p = root / rel
    if e.kind == "dir":
        p.mkdir(parents=True, exist_ok=True)
        return 0
    p.parent.mkdir(parents=True, exist_ok=True)
    if e.kind == "symlink":
        if p.is_symlink() or p.exists():
            p.unlink()
        os.symlink(e.target, p)
        os.utime(p, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
        return 0
    data = e.make()
    write_file(str(p), data, mtime_ns)
    return len(data)


def fix_dirs(root: Path, mtime_ns: int) -> None:
    for dirpath, _, _ in os.walk(root, topdown=False):
        os.chmod(dirpath, 0o755)
        os.utime(dirpath, ns=(mtime_ns, mtime_ns))


# --------------------------------------------------------------------------- manifest / digest

def _sha256_file(p: str) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while True:
            b = f.read(4 * MiB)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def manifest(root: Path) -> dict[str, tuple]:
    """rel path -> (kind, size, sha256 | link target, mode, mtime_ns) for everything under root."""
    from concurrent.futures import ThreadPoolExecutor

    out: dict[str, tuple] = {}
    todo: list[tuple[str, str, os.stat_result]] = []
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in dirnames + sorted(filenames):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("symlink", 0, os.readlink(p), mode, st.st_mtime_ns)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", 0, "", mode, st.st_mtime_ns)
            elif stat.S_ISREG(st.st_mode):
                todo.append((rel, p, st))
            else:
                out[rel] = ("other", 0, "", mode, st.st_mtime_ns)
    with ThreadPoolExecutor(max_workers=4) as ex:  # file reads and sha256 release the GIL
        for (rel, p, st), digest in zip(todo, ex.map(_sha256_file, (t[1] for t in todo), chunksize=64)):
            out[rel] = ("file", st.st_size, digest, stat.S_IMODE(st.st_mode), st.st_mtime_ns)
    return out


def manifest_digest(m: dict[str, tuple]) -> str:
    h = hashlib.sha256()
    for rel in sorted(m):
        h.update(json.dumps([rel, *m[rel]]).encode() + b"\n")
    return h.hexdigest()


def manifest_summary(m: dict[str, tuple]) -> dict:
    return {
        "files": sum(1 for v in m.values() if v[0] == "file"),
        "dirs": sum(1 for v in m.values() if v[0] == "dir"),
        "symlinks": sum(1 for v in m.values() if v[0] == "symlink"),
        "bytes": sum(v[1] for v in m.values() if v[0] == "file"),
        "digest": manifest_digest(m),
    }


def compare_manifests(src: dict[str, tuple], dst: dict[str, tuple]) -> dict:
    """Content comparison (kind, size, hash / link target) plus counts of metadata differences."""
    missing = sorted(set(src) - set(dst))
    extra = sorted(set(dst) - set(src))
    differ, mode_diff, mtime_diff = [], 0, 0
    for rel in set(src) & set(dst):
        a, b = src[rel], dst[rel]
        if a[:3] != b[:3]:
            differ.append(rel)
            continue
        if a[3] != b[3]:
            mode_diff += 1
        if a[0] != "dir" and a[4] != b[4]:
            mtime_diff += 1
    differ.sort()
    return {
        "ok": not (missing or extra or differ),
        "missing": len(missing), "extra": len(extra), "content_differs": len(differ),
        "examples": {"missing": missing[:5], "extra": extra[:5], "content_differs": differ[:5]},
        "mode_differs": mode_diff, "mtime_differs": mtime_diff,
    }


# --------------------------------------------------------------------------- datasets

def data_dir(name: str, quick: bool) -> Path:
    return WORK / "data" / ("quick" if quick else "full") / name


def state_path(name: str, quick: bool) -> Path:
    d = data_dir(name, quick)
    return d.parent / f"{name}.state.json"


def load_state(name: str, quick: bool) -> dict | None:
    try:
        return json.loads(state_path(name, quick).read_text())
    except (OSError, ValueError):
        return None


def save_state(name: str, quick: bool, st: dict, modified: bool = True) -> None:
    if modified:
        st["modified_at"] = time.time()  # wall clock of the last write to the tree
    p = state_path(name, quick)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(st, indent=1))
    tmp.replace(p)


def params(name: str, quick: bool) -> dict:
    p = {"gen_version": GEN_VERSION[name], "seed": SEED, "name": name, "quick": quick,
         "corpus": corpus_fingerprint()["sha256"]}
    if name == "mixed":
        p["scale"] = QUICK_SCALE if quick else FULL_SCALE
    else:
        p["files"] = SMALL_QUICK if quick else SMALL_FULL
    return p


def _rmtree(p: Path) -> None:
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.exists():
        shutil.rmtree(p)


def generate_mixed(quick: bool, log=print) -> dict:
    t0 = time.perf_counter()
    root = data_dir("mixed", quick)
    scale = QUICK_SCALE if quick else FULL_SCALE
    state_path("mixed", quick).unlink(missing_ok=True)
    _rmtree(root)
    root.mkdir(parents=True)
    plan = plan_mixed(scale)
    total = 0
    for rel, e in plan.items():
        total += materialize(root, rel, e, T1)
    fix_dirs(root, T1)
    gen_s = time.perf_counter() - t0
    m = manifest(root)
    st = {"params": params("mixed", quick), "version": 1, "v1": manifest_summary(m),
          "corpus": corpus_fingerprint(), "generate_seconds": round(gen_s, 2), "mutation": None}
    save_state("mixed", quick, st)
    log(f"generated mixed ({'quick' if quick else 'full'}): {st['v1']['files']} files, "
        f"{total / MiB:.1f} MiB in {gen_s:.1f}s -> {root}")
    return st


def generate_small(quick: bool, log=print) -> dict:
    t0 = time.perf_counter()
    root = data_dir("small", quick)
    count = SMALL_QUICK if quick else SMALL_FULL
    state_path("small", quick).unlink(missing_ok=True)
    _rmtree(root)
    root.mkdir(parents=True)
    rng = rng_for("small")
    lo, hi = 100, 8 * KiB
    import math
    llo, lhi = math.log(lo), math.log(hi)
    sizes = [int(math.exp(rng.uniform(llo, lhi))) for _ in range(count)]
    is_text = [rng.random() < 0.7 for _ in range(count)]
    pool = prng_bytes("small:pool", sum(s for s, t in zip(sizes, is_text) if not t))
    pool_off = 0
    c = corpus_concat()
    ndirs = max(1, count // FILES_PER_SMALL_DIR)
    total = 0
    for i in range(count):
        d = i // FILES_PER_SMALL_DIR
        if i % FILES_PER_SMALL_DIR == 0:
            dpath = root / f"d{d // 100:02d}" / f"s{d % 100:02d}"
            dpath.mkdir(parents=True)
        n = sizes[i]
        if is_text[i]:
            head = f"# small file {i}\n".encode()
            off = rng.randrange(len(c) - n)
            data = (head + c[off:off + n])[:n]
            name = f"f{i % FILES_PER_SMALL_DIR:03d}.txt"
        else:
            data = pool[pool_off:pool_off + n]
            pool_off += n
            name = f"f{i % FILES_PER_SMALL_DIR:03d}.bin"
        write_file(str(dpath / name), data, T1)
        total += n
    fix_dirs(root, T1)
    gen_s = time.perf_counter() - t0
    m = manifest(root)
    st = {"params": params("small", quick), "version": 1, "v1": manifest_summary(m),
          "corpus": corpus_fingerprint(), "generate_seconds": round(gen_s, 2), "mutation": None,
          "leaf_dirs": ndirs}
    save_state("small", quick, st)
    log(f"generated small ({'quick' if quick else 'full'}): {count} files in {ndirs} dirs, "
        f"{total / MiB:.1f} MiB in {gen_s:.1f}s -> {root}")
    return st


# --------------------------------------------------------------------------- mutation

def mutate_mixed(quick: bool, log=print) -> dict:
    """Turn version 1 of the mixed dataset into version 2, in place (~2 % of the bytes)."""
    st = load_state("mixed", quick)
    if not st or st.get("version") != 1:
        raise RuntimeError("mixed dataset is not at version 1; generate or revert it first")
    t0 = time.perf_counter()
    root = data_dir("mixed", quick)
    scale = st["params"]["scale"]
    rng = rng_for("mutate")
    stats = {"inserted": 0, "overwritten": 0, "added": 0, "deleted": 0}
    modified: list[str] = []
    deleted: list[str] = []
    added: list[str] = []
    added_dirs: list[str] = []
    touched_dirs: set[str] = set()

    def rewrite(rel: str, data: bytes) -> None:
        write_file(str(root / rel), data, T2)
        modified.append(rel)

    # 1. large binaries: small insertions in the middle + one in-place overwrite each
    for rel in sorted(p for p in os.listdir(root / "binary")):
        rel = f"binary/{rel}"
        buf = bytearray((root / rel).read_bytes())
        n = len(buf)
        for k in range(3):
            pos = rng.randrange(n // 10, 9 * n // 10)
            ins = prng_bytes(f"mut:ins:{rel}:{k}", rng.randint(1, 4096))
            buf[pos:pos] = ins
            stats["inserted"] += len(ins)
        ow = rng.randint(int(768 * KiB * scale), int(5 * MiB * scale) // 2)
        pos = rng.randrange(0, len(buf) - ow)
        buf[pos:pos + ow] = prng_bytes(f"mut:ow:{rel}", ow)
        stats["overwritten"] += ow
        rewrite(rel, bytes(buf))

    # 2. database: ~1.5 % of the pages updated in place -- most of them in a dozen hot spots (runs of
    #    nearby pages, as in B-tree leaves of busy tables), 0.1 % scattered all over -- and pages
    #    inserted at two places
    rel = "db/app.sqlite"
    buf = bytearray((root / rel).read_bytes())
    pages = len(buf) // PAGE
    updated: set[int] = set(rng.sample(range(pages), max(1, pages // 1000)))
    per_spot = max(1, int(pages * 0.014) // 12)
    for _ in range(12):
        start = rng.randrange(0, max(1, pages - 4 * per_spot))
        updated.update(rng.sample(range(start, min(pages, start + 4 * per_spot)), per_spot))
    for pg in sorted(updated):
        n = rng.randint(200, 2400)
        buf[pg * PAGE:(pg + 1) * PAGE] = db_page(pg, prng_bytes(f"mut:db:{pg}", n))
        stats["overwritten"] += 8 + n
    for k, count in enumerate((8, 3)):
        at = rng.randrange(pages // 4, 3 * pages // 4)
        new = b"".join(db_page(pages + k * 100 + j, prng_bytes(f"mut:dbins:{k}:{j}", rng.randint(200, 2400)))
                       for j in range(count))
        buf[at * PAGE:at * PAGE] = new
        stats["inserted"] += len(new)
    rewrite(rel, bytes(buf))
    rewrite("db/app.sqlite-journal", prng_bytes("mut:journal", 3 * PAGE))
    stats["added"] += 3 * PAGE

    # 3. text: edit ~3 % of the files, delete ~1 %, add new ones
    texts = sorted(p for p in st_files(root, "text"))
    for rel in rng.sample(texts, max(1, len(texts) * 3 // 100)):
        old = (root / rel).read_bytes()
        new = vary_text(old, rng, "edited", rng.randint(1, 5))
        if rng.random() < 0.3:
            new += b"\n# appended\n" + text_slice(rng, rng.randint(100, 4000))
        stats["inserted"] += max(0, len(new) - len(old)) or 1
        rewrite(rel, new)
    remaining = sorted(set(texts) - set(modified))
    for rel in rng.sample(remaining, max(1, len(texts) // 100)):
        stats["deleted"] += (root / rel).stat().st_size
        (root / rel).unlink()
        deleted.append(rel)
        touched_dirs.add(os.path.dirname(rel))
    tree0_dirs = sorted({os.path.dirname(p) for p in texts if p.startswith("text/tree00/")})
    for i in range(max(5, int(60 * scale))):
        rel = f"{rng.choice(tree0_dirs)}/bench_new_{i:03d}.py"
        data = f"# new module {i}\n".encode() + text_slice(rng, rng.randint(500, 20000))
        write_file(str(root / rel), data, T2)
        added.append(rel)
        touched_dirs.add(os.path.dirname(rel))
        stats["added"] += len(data)
    (root / "misc/new-files").mkdir()
    added_dirs.append("misc/new-files")
    for i in range(max(5, int(100 * scale))):
        rel = f"misc/new-files/n{i:03d}.bin"
        data = prng_bytes(f"mut:new:{i}", rng.randint(1 * KiB, 16 * KiB))
        write_file(str(root / rel), data, T2)
        added.append(rel)
        stats["added"] += len(data)

    # 4. photos: one replaced, two deleted, one added; a log rotated
    photos = sorted(st_files(root, "compressed/photos"))
    picks = rng.sample(photos, 3)
    for rel in picks[:1]:
        n = (root / rel).stat().st_size
        rewrite(rel, _jpeg(f"mut:photo:{rel}", n))
        stats["overwritten"] += n
    for rel in picks[1:]:
        stats["deleted"] += (root / rel).stat().st_size
        (root / rel).unlink()
        deleted.append(rel)
    for i in range(1):
        rel = f"compressed/photos/IMG_{len(photos) + i:04d}.jpg"
        data = _jpeg(f"mut:newphoto:{i}", rng.randint(int(1 * MiB * scale), int(6 * MiB * scale)))
        write_file(str(root / rel), data, T2)
        added.append(rel)
        stats["added"] += len(data)
    touched_dirs.add("compressed/photos")
    logs = sorted(st_files(root, "compressed/logs"))
    stats["deleted"] += (root / logs[0]).stat().st_size
    (root / logs[0]).unlink()
    deleted.append(logs[0])
    rel = "compressed/logs/app-new.log.gz"
    data = gzip.compress(text_slice(rng, 2 * MiB), compresslevel=6, mtime=0)
    write_file(str(root / rel), data, T2)
    added.append(rel)
    stats["added"] += len(data)
    touched_dirs.add("compressed/logs")

    for d in sorted(touched_dirs | set(added_dirs) | {"misc"}, key=lambda s: -s.count("/")):
        os.utime(root / d, ns=(T2, T2))

    m = manifest(root)
    total_v1 = st["v1"]["bytes"]
    changed = stats["inserted"] + stats["overwritten"] + stats["added"]
    st["version"] = 2
    st["v2"] = manifest_summary(m)
    st["mutation"] = {
        "bytes": stats, "changed_bytes": changed, "changed_fraction": round(changed / total_v1, 4),
        "files_modified": len(modified), "files_deleted": len(deleted), "files_added": len(added),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    st["touched"] = {"modified": sorted(set(modified)), "deleted": deleted, "added": added,
                     "added_dirs": added_dirs, "dirs": sorted(touched_dirs | {"misc"})}
    save_state("mixed", quick, st)
    log(f"mutated mixed: {changed / MiB:.1f} MiB changed ({100 * changed / total_v1:.2f}%), "
        f"{len(modified)} modified, {len(added)} added, {len(deleted)} deleted "
        f"in {st['mutation']['seconds']:.1f}s")
    return st


def st_files(root: Path, sub: str) -> list[str]:
    out = []
    for dirpath, _, filenames in os.walk(root / sub):
        for fn in filenames:
            p = os.path.join(dirpath, fn)
            if not os.path.islink(p):
                out.append(os.path.relpath(p, root))
    return out


def revert_mixed(quick: bool, log=print) -> dict:
    """Back from version 2 to version 1, rewriting only what the mutation touched."""
    st = load_state("mixed", quick)
    if not st or st.get("version") != 2 or "touched" not in st:
        raise RuntimeError("mixed dataset is not at a known version 2")
    t0 = time.perf_counter()
    root = data_dir("mixed", quick)
    plan = plan_mixed(st["params"]["scale"])
    t = st["touched"]
    for rel in t["added"]:
        (root / rel).unlink(missing_ok=True)
    for d in t["added_dirs"]:
        if (root / d).exists():
            shutil.rmtree(root / d)
    for rel in sorted(set(t["modified"]) | set(t["deleted"])):
        materialize(root, rel, plan[rel], T1)
    for d in sorted(set(t["dirs"]) | {os.path.dirname(r) for r in t["added"] + t["deleted"]},
                    key=lambda s: -s.count("/")):
        if (root / d).is_dir():
            os.utime(root / d, ns=(T1, T1))
    m = manifest(root)
    digest = manifest_digest(m)
    if digest != st["v1"]["digest"]:
        log("revert did not reproduce version 1; regenerating")
        return generate_mixed(quick, log)
    st["version"] = 1
    st.pop("touched", None)
    save_state("mixed", quick, st)
    log(f"reverted mixed to version 1 in {time.perf_counter() - t0:.1f}s")
    return st


def ensure(name: str, quick: bool, log=print) -> dict:
    """Make sure dataset `name` exists at version 1 with the current parameters."""
    st = load_state(name, quick)
    root = data_dir(name, quick)
    if st and st.get("params") == params(name, quick) and root.is_dir():
        if st.get("version") == 1:
            return st
        if name == "mixed" and st.get("version") == 2:
            try:
                return revert_mixed(quick, log)
            except (RuntimeError, KeyError, OSError) as e:
                log(f"revert failed ({e}); regenerating")
    return generate_mixed(quick, log) if name == "mixed" else generate_small(quick, log)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["generate", "ensure", "mutate", "revert", "digest"])
    ap.add_argument("name", help="mixed | small (or a directory for 'digest')")
    ap.add_argument("--quick", action="store_true", help="scaled-down datasets (~100 MiB / 20k files)")
    a = ap.parse_args(argv)
    if a.action == "digest":
        print(json.dumps(manifest_summary(manifest(Path(a.name))), indent=1))
        return 0
    if a.name not in ("mixed", "small"):
        ap.error("name must be mixed or small")
    if a.action == "generate":
        (generate_mixed if a.name == "mixed" else generate_small)(a.quick)
    elif a.action == "ensure":
        ensure(a.name, a.quick)
    elif a.name != "mixed":
        ap.error("only the mixed dataset has a second version")
    elif a.action == "mutate":
        ensure("mixed", a.quick)
        mutate_mixed(a.quick)
    else:
        revert_mixed(a.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
