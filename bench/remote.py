#!/usr/bin/env python3
"""tuckbox vs restic against real SFTP and S3 servers on this machine, in one invocation.

For each server (sftp = OpenSSH's sshd, s3 = SeaweedFS; both started by scripts/servers/*.sh)
and each tool (tuckbox, restic), back to back, on the same data (bench/work/data/<full|quick>/mixed):

  init a fresh repository under a unique path / key prefix, first backup, unchanged backup,
  restore latest into a fresh local directory (verified against the source by SHA-256),
  then (untimed) count the snapshots and delete the remote repository.

Then a raw-throughput baseline per server: plain parallel uploads (and downloads) of as many
bytes as tuckbox's repository on that server holds, in 16 MiB objects/files, 4 at a time:
boto3 put_object/get_object for S3; asyncssh (the library tuckbox uses) and OpenSSH's `sftp`
client for SFTP. It shows how fast the server takes plain writes, i.e. whether a backup is
server-bound. A local-disk run of both tools is added as a reference (--no-local to skip).

Every timed step goes through bench/_launch.py (wall, CPU of the process tree, peak RSS); the
server process's CPU time is sampled from /proc around each step (it includes other clients of
the same server, if any). Results: bench/results/remote.{md,json} (remote-quick.* with --quick).

    .venv/bin/python bench/remote.py              # full mixed set (~1 GiB)
    .venv/bin/python bench/remote.py --quick      # ~100 MiB smoke test
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dataset  # noqa: E402
import run  # noqa: E402  (bench/run.py: launcher-based Runner, machine info, tool versions)

BENCH, WORK, ROOT, RESULTS = run.BENCH, run.WORK, run.ROOT, run.RESULTS
MiB = 1 << 20
PASSWORD = run.PASSWORD
STATE_DIR = Path(os.environ.get("TUCKBOX_TEST_SERVERS_DIR", ROOT / ".test-servers"))
ALL_SERVERS = ("sftp", "s3")
ALL_TOOLS = ("tuckbox", "restic")
STEPS = ["init", "backup_first", "backup_unchanged", "restore"]
STEP_LABEL = {"init": "init", "backup_first": "first backup", "backup_unchanged": "unchanged backup",
              "restore": "restore latest"}
SERVER_SCRIPT = {"sftp": "sshd", "s3": "seaweedfs"}
SERVER_PIDFILE = {"sftp": "sshd/sshd.pid", "s3": "seaweedfs/weed.pid"}
SERVER_DESC = {"sftp": "OpenSSH sshd (internal-sftp)", "s3": "SeaweedFS `weed mini`", "local": "local disk"}
SSH_FAST_CIPHER = "aes128-gcm@openssh.com"  # what tuckbox's SFTP backend prefers


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- servers

def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k.strip()] = v.strip()
    return env


def server_env(kind: str) -> dict[str, str]:
    """The server's .test-servers/<name>.env; starts the server (idempotent script) if it is missing."""
    name = SERVER_SCRIPT[kind]
    path = STATE_DIR / f"{name}.env"
    if not path.exists():
        log(f"{kind}: {path} missing; running scripts/servers/{name}.sh start")
        p = subprocess.run(["bash", str(ROOT / "scripts" / "servers" / f"{name}.sh"), "start"],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
        if p.returncode != 0 or not path.exists():
            raise RuntimeError(f"cannot start the {kind} server: {run._tail(p.stderr or p.stdout, 5)}")
    return read_env_file(path)


def server_pid(kind: str) -> int | None:
    try:
        pid = int((STATE_DIR / SERVER_PIDFILE[kind]).read_text().split()[0])
        os.kill(pid, 0)
        return pid
    except (KeyError, OSError, ValueError, IndexError):
        return None


def proc_cpu_s(pid: int | None) -> float | None:
    """utime+stime+cutime+cstime of a process (its reaped children included: sshd's per-connection
    processes are reaped by the listener, so their CPU lands in its cutime/cstime)."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class Server:
    """Where a repository lives, how each tool addresses it, and how to size / delete it."""

    kind = ""

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.pid: int | None = None

    def describe(self) -> dict:
        return {}

    def tool_env(self) -> dict[str, str]:
        return {}

    def tuckbox(self, tool: str) -> tuple[str, list[str]]: ...
    def restic(self, tool: str) -> tuple[str, list[str]]: ...
    def size(self, tool: str) -> dict: ...
    def remove(self, tool: str) -> None: ...

    def finish(self) -> None:
        """Remove what is left of this run's root (after every tool and baseline cleaned up its part)."""


class LocalServer(Server):
    kind = "local"

    def __init__(self, run_id, base: Path):
        super().__init__(run_id)
        self.base = base

    def path(self, tool):
        return self.base / "local" / tool / "repo"

    def describe(self):
        return {"what": SERVER_DESC["local"], "path": str(self.base / "local")}

    def tuckbox(self, tool):
        return str(self.path(tool)), []

    def restic(self, tool):
        return str(self.path(tool)), []

    def size(self, tool):
        return run.tree_size(self.path(tool))

    def remove(self, tool):
        shutil.rmtree(self.path(tool), ignore_errors=True)

    def finish(self):
        shutil.rmtree(self.base / "local", ignore_errors=True)


class SFTPServer(Server):
    kind = "sftp"

    def __init__(self, run_id):
        super().__init__(run_id)
        e = self.e = server_env("sftp")
        self.pid = server_pid("sftp")
        root = e["SFTP_ROOT"] if e["SFTP_ROOT"].startswith("/") else "/" + e["SFTP_ROOT"]
        self.root = f"{root.rstrip('/')}/{run_id}"  # as the SFTP client sees it
        # the served directory on this machine (for sizing and deleting without a round trip)
        local = e.get("SFTP_LOCAL_ROOT")
        self.local = Path(local) / run_id if local and Path(local).is_dir() else None

    def describe(self):
        e = self.e
        return {"what": SERVER_DESC["sftp"], "host": e["SFTP_HOST"], "port": int(e["SFTP_PORT"]),
                "user": e["SFTP_USER"], "path": self.root, "local_path": str(self.local) if self.local else None,
                "pid": self.pid}

    def ssh_argv(self) -> list[str]:
        e = self.e
        return ["ssh", "-F", "/dev/null", "-i", e["SFTP_IDENTITY"], "-p", e["SFTP_PORT"],
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={e['SFTP_KNOWN_HOSTS']}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes", f"{e['SFTP_USER']}@{e['SFTP_HOST']}"]

    def tuckbox(self, tool):
        e = self.e
        url = f"sftp://{e['SFTP_USER']}@{e['SFTP_HOST']}:{e['SFTP_PORT']}{self.root}/{tool}"
        return url, [f"sftp.identity={e['SFTP_IDENTITY']}", f"sftp.known_hosts={e['SFTP_KNOWN_HOSTS']}",
                     f"sftp.config={os.devnull}"]

    def restic(self, tool):
        e = self.e
        cmd = " ".join(self.ssh_argv() + ["-s", "sftp"])
        return f"sftp:{e['SFTP_USER']}@{e['SFTP_HOST']}:{self.root}/{tool}", [f"sftp.command={cmd}"]

    def size(self, tool):
        if self.local:
            return run.tree_size(self.local / tool)
        return {"bytes": None, "files": None}

    def remove(self, tool):
        if self.local:
            shutil.rmtree(self.local / tool, ignore_errors=True)
            try:
                self.local.rmdir()  # only once empty
            except OSError:
                pass
        else:
            _sftp_rmtree(self.e, f"{self.root}/{tool}")

    def finish(self):
        if self.local:
            shutil.rmtree(self.local, ignore_errors=True)
        else:
            _sftp_rmtree(self.e, self.root)


class S3Server(Server):
    kind = "s3"

    def __init__(self, run_id):
        super().__init__(run_id)
        e = self.e = server_env("s3")
        self.pid = server_pid("s3")
        self.prefix = run_id
        import boto3
        from botocore.config import Config

        self.client = boto3.client("s3", endpoint_url=e["S3_ENDPOINT"], aws_access_key_id=e["AWS_ACCESS_KEY_ID"],
                                   aws_secret_access_key=e["AWS_SECRET_ACCESS_KEY"],
                                   region_name=e.get("AWS_REGION", "us-east-1"),
                                   config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}))

    def describe(self):
        e = self.e
        return {"what": SERVER_DESC["s3"], "endpoint": e["S3_ENDPOINT"], "bucket": e["S3_BUCKET"],
                "prefix": self.prefix, "pid": self.pid}

    def tool_env(self):
        e = self.e
        region = e.get("AWS_REGION", "us-east-1")
        return {"AWS_ACCESS_KEY_ID": e["AWS_ACCESS_KEY_ID"], "AWS_SECRET_ACCESS_KEY": e["AWS_SECRET_ACCESS_KEY"],
                "AWS_REGION": region, "AWS_DEFAULT_REGION": region}

    def tuckbox(self, tool):
        return f"s3://{self.e['S3_BUCKET']}/{self.prefix}/{tool}", [f"s3.endpoint={self.e['S3_ENDPOINT']}"]

    def restic(self, tool):
        return f"s3:{self.e['S3_ENDPOINT'].rstrip('/')}/{self.e['S3_BUCKET']}/{self.prefix}/{tool}", []

    def _keys(self, sub: str):
        pag = self.client.get_paginator("list_objects_v2")
        for page in pag.paginate(Bucket=self.e["S3_BUCKET"], Prefix=f"{self.prefix}/{sub}/"):
            yield from page.get("Contents", [])

    def size(self, tool):
        objs = list(self._keys(tool))
        return {"bytes": sum(o["Size"] for o in objs), "files": len(objs)}

    def remove(self, tool):
        _s3_delete(self.client, self.e["S3_BUCKET"], [o["Key"] for o in self._keys(tool)])

    def finish(self):
        pag = self.client.get_paginator("list_objects_v2")
        keys = [o["Key"] for page in pag.paginate(Bucket=self.e["S3_BUCKET"], Prefix=f"{self.prefix}/")
                for o in page.get("Contents", [])]
        _s3_delete(self.client, self.e["S3_BUCKET"], keys)


def _s3_delete(client, bucket: str, keys: list[str]) -> None:
    for i in range(0, len(keys), 1000):
        r = client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]],
                                                         "Quiet": True})
        if r.get("Errors"):
            raise RuntimeError(f"S3 delete failed for {len(r['Errors'])} objects: {r['Errors'][:2]}")


def _sftp_connect_kwargs(e: dict) -> dict:
    return {"host": e["SFTP_HOST"], "port": int(e["SFTP_PORT"]), "username": e["SFTP_USER"],
            "client_keys": [e["SFTP_IDENTITY"]], "known_hosts": e["SFTP_KNOWN_HOSTS"], "config": [os.devnull],
            "encryption_algs": [SSH_FAST_CIPHER, "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"],
            "window": 8 << 20}


def _sftp_rmtree(e: dict, path: str) -> None:
    import asyncio

    import asyncssh

    async def go():
        async with asyncssh.connect(**_sftp_connect_kwargs(e)) as conn:
            async with conn.start_sftp_client() as sftp:
                if await sftp.exists(path):
                    await sftp.rmtree(path)

    asyncio.run(go())


# --------------------------------------------------------------------------- tools

class Tool:
    name = ""

    def __init__(self, exe: str):
        self.exe = exe

    def env(self, server: Server, home: Path) -> dict:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RESTIC_", "TUCKBOX_", "XDG_", "AWS_", "BORG_"))}
        env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), XDG_CONFIG_HOME=str(home / ".config"),
                   XDG_DATA_HOME=str(home / ".local/share"), XDG_STATE_HOME=str(home / ".local/state"),
                   LC_ALL="C.UTF-8")
        env.update(server.tool_env())
        return env

    def argv(self, server: Server, *cmd: str) -> list[str]: ...


class Tuckbox(Tool):
    name = "tuckbox"

    def env(self, server, home):
        env = super().env(server, home)
        env.update(TUCKBOX_REPOSITORY=server.tuckbox(self.name)[0], TUCKBOX_PASSWORD=PASSWORD)
        return env

    def argv(self, server, *cmd):
        opts = server.tuckbox(self.name)[1]
        return [self.exe, *[a for o in opts for a in ("-o", o)], *cmd]

    def count_snapshots(self, out: str) -> int:
        return run.Tuckbox.count_snapshots(None, out)  # type: ignore[arg-type]


class Restic(Tool):
    name = "restic"

    def env(self, server, home):
        env = super().env(server, home)
        env.update(RESTIC_REPOSITORY=server.restic(self.name)[0], RESTIC_PASSWORD=PASSWORD,
                   RESTIC_CACHE_DIR=str(home / ".cache/restic"))
        return env

    def argv(self, server, *cmd):
        opts = server.restic(self.name)[1]
        return [self.exe, *[a for o in opts for a in ("-o", o)], *cmd]

    def count_snapshots(self, out: str) -> int:
        return len(json.loads(out))


# --------------------------------------------------------------------------- baseline worker
# Runs as a child process (through bench/_launch.py, so its CPU time and RSS are measured like a
# tool's): python bench/remote.py _worker KIND BYTES RESULT.json [--object-size N] [--threads N]

def _chunks(total: int, size: int) -> list[int]:
    n, rest = divmod(total, size)
    return [size] * n + ([rest] if rest else [])


def worker_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="remote.py _worker")
    ap.add_argument("kind", choices=["s3-boto3", "sftp-asyncssh", "sftp-openssh"])
    ap.add_argument("bytes", type=int)
    ap.add_argument("result")
    ap.add_argument("--location", required=True, help="S3 key prefix or SFTP directory (unique)")
    ap.add_argument("--object-size", type=int, default=16 * MiB)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--tmp", help="local scratch directory (sftp-openssh)")
    a = ap.parse_args(argv)
    sizes = _chunks(a.bytes, a.object_size)
    buf = os.urandom(a.object_size)  # incompressible; generated before the clock starts
    res = {"kind": a.kind, "bytes": a.bytes, "objects": len(sizes), "object_size": a.object_size,
           "parallel": a.threads}
    try:
        {"s3-boto3": _worker_s3, "sftp-asyncssh": _worker_asyncssh, "sftp-openssh": _worker_openssh}[a.kind](
            a, sizes, buf, res)
    except Exception as e:  # noqa: BLE001 - recorded, exit 1
        res["error"] = f"{type(e).__name__}: {e}"
    Path(a.result).write_text(json.dumps(res))
    return 1 if "error" in res else 0


def _timed(res: dict, key: str, fn) -> None:
    t0 = time.perf_counter()
    fn()
    res[f"{key}_s"] = round(time.perf_counter() - t0, 3)
    if key in ("upload", "download"):
        res[f"{key}_mib_s"] = round(res["bytes"] / MiB / max(res[f"{key}_s"], 1e-9), 1)


def _worker_s3(a, sizes, buf, res) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import boto3
    from botocore.config import Config

    e = read_env_file(STATE_DIR / "seaweedfs.env")
    bucket = e["S3_BUCKET"]
    # credentials from the environment; plain requests: no extra checksums (tuckbox's backend also
    # sets when_required) and no SHA-256 of the body in the signature (tuckbox's default too), path-style
    # addressing for a custom endpoint.
    s3 = boto3.client("s3", endpoint_url=e["S3_ENDPOINT"], region_name=e.get("AWS_REGION", "us-east-1"),
                      config=Config(s3={"addressing_style": "path", "payload_signing_enabled": False},
                                    max_pool_connections=a.threads * 2,
                                    request_checksum_calculation="when_required",
                                    response_checksum_validation="when_required"))
    keys = [f"{a.location}/obj-{i:05d}" for i in range(len(sizes))]
    mv = memoryview(buf)

    def put(i):
        s3.put_object(Bucket=bucket, Key=keys[i], Body=bytes(mv[:sizes[i]]))

    def get(i):
        n = len(s3.get_object(Bucket=bucket, Key=keys[i])["Body"].read())
        if n != sizes[i]:
            raise RuntimeError(f"{keys[i]}: got {n} bytes, expected {sizes[i]}")

    s3.head_bucket(Bucket=bucket)  # connect before the clock starts
    with ThreadPoolExecutor(a.threads) as ex:
        _timed(res, "upload", lambda: list(ex.map(put, range(len(sizes)))))
        _timed(res, "download", lambda: list(ex.map(get, range(len(sizes)))))
    _timed(res, "cleanup", lambda: _s3_delete(s3, bucket, keys))


def _worker_asyncssh(a, sizes, buf, res) -> None:
    import asyncio

    import asyncssh

    e = read_env_file(STATE_DIR / "sshd.env")
    names = [f"{a.location}/obj-{i:05d}" for i in range(len(sizes))]
    mv = memoryview(buf)

    async def go():
        # one connection, like tuckbox's backend (same cipher preference, window and request depth);
        # `threads` transfers in flight at a time
        async with asyncssh.connect(**_sftp_connect_kwargs(e)) as conn:
            res["cipher"] = conn.get_extra_info("send_cipher")
            async with conn.start_sftp_client() as sftp:
                await sftp.makedirs(a.location, exist_ok=True)
                sem = asyncio.Semaphore(a.threads)

                async def put(i):
                    async with sem:
                        async with sftp.open(names[i], "wb", block_size=-1, max_requests=64) as f:
                            await f.write(bytes(mv[:sizes[i]]), 0)

                async def get(i):
                    async with sem:
                        async with sftp.open(names[i], "rb", block_size=-1, max_requests=64) as f:
                            n = len(await f.read())
                    if n != sizes[i]:
                        raise RuntimeError(f"{names[i]}: got {n} bytes, expected {sizes[i]}")

                for key, fn in (("upload", put), ("download", get)):
                    t0 = time.perf_counter()
                    await asyncio.gather(*(fn(i) for i in range(len(sizes))))
                    res[f"{key}_s"] = round(time.perf_counter() - t0, 3)
                    res[f"{key}_mib_s"] = round(res["bytes"] / MiB / max(res[f"{key}_s"], 1e-9), 1)
                t0 = time.perf_counter()
                await sftp.rmtree(a.location)
                res["cleanup_s"] = round(time.perf_counter() - t0, 3)

    asyncio.run(go())


def _worker_openssh(a, sizes, buf, res) -> None:
    """`threads` OpenSSH `sftp` processes (one connection each) in parallel, each putting / getting its
    share of the files with `sftp -b` (default request size and depth; AES-GCM like tuckbox)."""
    e = read_env_file(STATE_DIR / "sshd.env")
    tmp = Path(a.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    srcs = {}
    for n in sorted(set(sizes)):
        p = tmp / f"src-{n}"
        p.write_bytes(buf[:n])
        srcs[n] = p
    base = ["sftp", "-q", "-F", "/dev/null", "-i", e["SFTP_IDENTITY"], "-P", e["SFTP_PORT"], "-c", SSH_FAST_CIPHER,
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={e['SFTP_KNOWN_HOSTS']}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes"]
    dest = f"{e['SFTP_USER']}@{e['SFTP_HOST']}"
    names = [f"{a.location}/obj-{i:05d}" for i in range(len(sizes))]
    shares = [list(range(i, len(sizes), a.threads)) for i in range(a.threads)]
    shares = [s for s in shares if s]

    def batch(lines: list[str]) -> None:
        procs = []
        for j, ls in enumerate(lines):
            bf = tmp / f"batch-{j}"
            bf.write_text(ls)
            procs.append(subprocess.Popen(base + ["-b", str(bf), dest], stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        errs = [(p.wait(), p.stderr.read().decode(errors="replace")) for p in procs]
        bad = [err for rc, err in errs if rc != 0]
        if bad:
            raise RuntimeError(f"sftp failed: {bad[0].strip()[-300:]}")

    batch([f"-mkdir {a.location}\n"])
    _timed(res, "upload", lambda: batch(["".join(f"put {srcs[sizes[i]]} {names[i]}\n" for i in s) for s in shares]))
    dl = tmp / "dl"
    dl.mkdir(exist_ok=True)
    _timed(res, "download", lambda: batch(["".join(f"get {names[i]} {dl}/{i}\n" for i in s) for s in shares]))
    got = sum(p.stat().st_size for p in dl.iterdir())
    if got != res["bytes"]:
        raise RuntimeError(f"downloaded {got} bytes, expected {res['bytes']}")
    _timed(res, "cleanup", lambda: batch(["".join(f"rm {n}\n" for n in names) + f"rmdir {a.location}\n"]))
    shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- the benchmark

class RemoteBench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.mode = "quick" if args.quick else "full"
        self.runner = run.Runner(types.SimpleNamespace(drop_caches=False))
        self.stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.run_id = f"bench-remote-{self.stamp}-{secrets.token_hex(3)}"
        self.logdir = WORK / "logs" / f"{self.stamp}-remote-{self.mode}"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.base = WORK / "runs" / f"remote-{self.mode}"
        self.out = RESULTS / (args.out or ("remote-quick" if args.quick else "remote"))
        self.src = dataset.data_dir("mixed", self.quick)
        self.res = {
            "schema": 1,
            "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "finished": None,
            "mode": self.mode,
            "argv": sys.argv[1:],
            "run_id": self.run_id,
            "machine": run.machine_info(),
            "settings": {
                "tuckbox": "defaults (4 storage connections); env TUCKBOX_REPOSITORY / TUCKBOX_PASSWORD; "
                           "-o sftp.identity/known_hosts/config or -o s3.endpoint",
                "restic": "defaults of the version (repo v2, compression auto; 5 backend connections); "
                          "sftp via -o sftp.command=ssh ... -s sftp (OpenSSH's default cipher); "
                          "s3 via s3:http://HOST:PORT/BUCKET/PREFIX",
                "baseline": f"{args.object_size // MiB} MiB objects, {args.threads} in parallel",
                "warm_page_cache": True,
                "step_timeout_s": args.step_timeout,
            },
            "tools": {},
            "dataset": {},
            "servers": {},
        }

    def save(self) -> None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.res, indent=1) + "\n")
        tmp.replace(self.out.with_suffix(".json"))
        self.out.with_suffix(".md").write_text(render_md(self.res))

    def main(self) -> int:
        a = self.args
        tools: list[Tool] = []
        for name in [t for t in a.tools.split(",") if t]:
            if name not in ALL_TOOLS:
                sys.exit(f"unknown tool {name!r}; choose from {','.join(ALL_TOOLS)}")
            probe = run.make_tool(name, types.SimpleNamespace(tuckbox=a.tuckbox, restic=a.restic, borg="borg"))
            why = probe.available()
            if why:
                log(f"{name}: not available: {why}")
                self.res["tools"][name] = {"available": False, "reason": why}
                continue
            info = {"available": True, "exe": shutil.which(probe.exe) or probe.exe, "version": probe.version()}
            if name == "tuckbox":
                info["source"] = run.tuckbox_source()
            self.res["tools"][name] = info
            log(f"{name}: {info['version']}")
            tools.append(Tuckbox(a.tuckbox) if name == "tuckbox" else Restic(a.restic))
        kinds = [s for s in a.servers.split(",") if s]
        for k in kinds:
            if k not in ALL_SERVERS:
                sys.exit(f"unknown server {k!r}; choose from {','.join(ALL_SERVERS)}")
        if not a.no_local:
            kinds.append("local")

        st = dataset.ensure("mixed", self.quick, log)
        t0 = time.perf_counter()
        self.manifest = dataset.manifest(self.src)
        summary = dataset.manifest_summary(self.manifest)
        if summary["digest"] != st["v1"]["digest"]:
            log(f"WARNING: the dataset's digest {summary['digest'][:12]} differs from its state file's "
                f"{st['v1']['digest'][:12]}")
        self.res["dataset"] = {"name": "mixed", "path": str(self.src), "params": st["params"], "v1": summary,
                               "state_modified_at": st.get("modified_at"),
                               "manifest_seconds": round(time.perf_counter() - t0, 2)}
        log(f"dataset: {summary['bytes'] / MiB:,.0f} MiB in {summary['files']:,} files ({self.src})")
        self.save()
        run.empty_trash(wait=True)  # left by an interrupted run (see run.discard)
        run.settle(st)

        failed = False
        try:
            for kind in kinds:
                srec = self.res["servers"].setdefault(kind, {"results": {}, "baseline": {}})
                try:
                    server = (SFTPServer(self.run_id) if kind == "sftp" else S3Server(self.run_id) if kind == "s3"
                              else LocalServer(self.run_id, self.base))
                except Exception as e:  # noqa: BLE001 - server unusable: record, go on
                    srec["error"] = f"{type(e).__name__}: {e}"
                    log(f"[{kind}] server unusable: {e}")
                    failed = True
                    continue
                srec["server"] = server.describe()
                for tool in tools:
                    rec = srec["results"][tool.name] = {"steps": {}}
                    try:
                        self.run_tool(server, tool, rec)
                    except Exception as e:  # noqa: BLE001
                        rec["ok"] = False
                        rec.setdefault("errors", []).append(f"harness error: {type(e).__name__}: {e}")
                        log(f"[{kind}/{tool.name}] harness error: {e!r}")
                    finally:
                        if not a.keep:
                            self.cleanup(server, tool, rec)
                    failed |= not rec.get("ok", False)
                    self.save()
                try:
                    if kind != "local" and not a.no_baseline:
                        failed |= not self.baselines(server, srec)
                        self.save()
                finally:
                    if not a.keep:
                        try:
                            server.finish()
                        except Exception as e:  # noqa: BLE001
                            srec["cleanup_error"] = f"{type(e).__name__}: {e}"
                            failed = True
                            log(f"[{kind}] removing {self.run_id} failed: {e!r}")
        except KeyboardInterrupt:
            log("interrupted; writing partial results")
            self.res["interrupted"] = True
            failed = True
        st2 = dataset.load_state("mixed", self.quick) or {}
        if (st2.get("version"), st2.get("modified_at")) != (1, st.get("modified_at")):
            self.res["dataset"]["changed_during_run"] = True
            log("WARNING: the dataset was modified during the run (another benchmark?)")
        run.empty_trash()
        if not a.keep:
            shutil.rmtree(self.base, ignore_errors=True)
        self.res["finished"] = dt.datetime.now().astimezone().isoformat(timespec="seconds")
        self.res["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        self.save()
        log(f"results: {self.out.with_suffix('.md')} and {self.out.with_suffix('.json')}")
        print(self.out.with_suffix(".md").read_text())
        return 1 if failed else 0

    def step(self, server: Server, name: str, argv: list[str], env: dict, tag: str) -> dict:
        if name.startswith("backup_"):
            self.runner.warm([self.src])  # every tool starts as warm as the machine allows (run.Runner.warm)
        cpu0 = proc_cpu_s(server.pid)
        r = self.runner.run(argv, env, None, self.logdir / f"{tag.replace('/', '-')}-{name}.log",
                            self.args.step_timeout)
        if cpu0 is not None:
            time.sleep(0.3)  # let the server reap the connection's processes (sshd)
            cpu1 = proc_cpu_s(server.pid)
            if cpu1 is not None:
                r["server_cpu_s"] = round(cpu1 - cpu0, 2)
        return r

    def run_tool(self, server: Server, tool: Tool, rec: dict) -> None:
        tag = f"{server.kind}/{tool.name}"
        rundir = self.base / server.kind / tool.name
        run.discard(rundir)
        home, restore = rundir / "home", rundir / "restore"
        home.mkdir(parents=True)
        env = tool.env(server, home)
        url = server.tuckbox(tool.name)[0] if tool.name == "tuckbox" else server.restic(tool.name)[0]
        rec.update(ok=True, errors=[], repository=url)
        log(f"[{tag}] repository {url}")
        for step in STEPS:
            if step == "init":
                argv = tool.argv(server, "init")
            elif step.startswith("backup_"):
                argv = tool.argv(server, "backup", str(self.src))
            else:
                run.discard(restore)  # deleted at the end: see run.discard
                restore.mkdir()
                argv = tool.argv(server, "restore", "latest", "--target", str(restore))
            r = self.step(server, step, argv, env, tag)
            sz = server.size(tool.name)
            r["repo_bytes"], r["repo_files"] = sz.get("bytes"), sz.get("files")
            rec["steps"][step] = r
            msg = (f"[{tag}] {STEP_LABEL[step]}: {r.get('wall_s', 0):.2f}s wall, {r.get('cpu_s', 0):.2f}s cpu, "
                   f"{r.get('maxrss_kib', 0) / 1024:.0f} MiB peak RSS, server cpu {r.get('server_cpu_s', '-')}s, "
                   f"repo {(r['repo_bytes'] or 0) / MiB:.1f} MiB")
            if "error" in r:
                msg += f"  FAILED: {r['error']}\n{r.get('output_tail', '')}"
            log(msg)
            if "error" in r:
                rec["ok"] = False
                rec["errors"].append(f"{STEP_LABEL[step]}: {r['error']}: {run._tail(r.get('output_tail', ''), 3)}")
                break
            if step == "restore":
                t0 = time.perf_counter()
                root = restore / str(self.src).lstrip("/")
                if root.is_dir():
                    v = dataset.compare_manifests(self.manifest, dataset.manifest(root))
                else:
                    v = {"ok": False, "error": f"{root} not found after the restore"}
                v["seconds"] = round(time.perf_counter() - t0, 2)
                rec["restore_verify"] = v
                log(f"[{tag}] restore verification: {'OK' if v['ok'] else 'MISMATCH'} {v}")
                if not v["ok"]:
                    rec["ok"] = False
                    rec["errors"].append(f"restore differs from the source: {v}")
                if not self.args.keep:
                    run.discard(restore)
            self.save()
        expected = sum(1 for s in rec["steps"] if s.startswith("backup_") and "error" not in rec["steps"][s])
        rc, out, err = run.untimed(tool.argv(server, "snapshots", "--json"), env)
        try:
            n = tool.count_snapshots(out) if rc == 0 else None
        except (ValueError, KeyError, TypeError):
            n = None
        rec["snapshots"] = n
        if n != expected:
            rec["errors"].append(f"snapshots: rc {rc}, {n} snapshots (expected {expected}): {run._tail(err, 3)}")
            rec["ok"] = False
        if not self.args.keep:
            run.discard(rundir)

    def cleanup(self, server: Server, tool: Tool, rec: dict) -> None:
        t0 = time.perf_counter()
        try:
            server.remove(tool.name)
            left = server.size(tool.name).get("files")
            rec["cleanup"] = {"seconds": round(time.perf_counter() - t0, 2), "objects_left": left}
            if left:
                rec["ok"] = False
                rec.setdefault("errors", []).append(f"clean-up left {left} objects")
        except Exception as e:  # noqa: BLE001
            rec["cleanup"] = {"error": f"{type(e).__name__}: {e}"}
            rec["ok"] = False
            rec.setdefault("errors", []).append(f"clean-up failed: {e}")
            log(f"[{server.kind}/{tool.name}] clean-up failed: {e!r}")

    def baselines(self, server: Server, srec: dict) -> bool:
        """Raw upload/download of as many bytes as tuckbox's repository (else restic's) on this server."""
        nbytes, src = None, None
        for t in ("tuckbox", "restic"):
            b = run._metric(srec["results"].get(t), "backup_first", "repo_bytes")
            if b:
                nbytes, src = b, t
                break
        if not nbytes:
            nbytes, src = int(self.res["dataset"]["v1"]["bytes"] * 0.45), "45% of the dataset"
        ok = True
        kinds = ["s3-boto3"] if server.kind == "s3" else ["sftp-asyncssh", "sftp-openssh"]
        for kind in kinds:
            loc = (f"{self.run_id}/baseline-{kind}" if server.kind == "s3"
                   else f"{server.root}/baseline-{kind}")  # type: ignore[attr-defined]
            result = self.logdir / f"baseline-{kind}.result.json"
            result.unlink(missing_ok=True)
            argv = [sys.executable, str(Path(__file__).resolve()), "_worker", kind, str(nbytes), str(result),
                    "--location", loc, "--object-size", str(self.args.object_size),
                    "--threads", str(self.args.threads), "--tmp", str(self.base / "baseline-tmp")]
            env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
            env.update(server.tool_env())
            r = self.step(server, "baseline", argv, env, f"{server.kind}/{kind}")
            try:
                r["transfer"] = json.loads(result.read_text())
            except (OSError, ValueError):
                r["transfer"] = {"error": "the worker wrote no result"}
            r["bytes_from"] = src
            srec["baseline"][kind] = r
            tr = r["transfer"]
            if "error" in r or "error" in tr:
                ok = False
                log(f"[{server.kind}/{kind}] baseline FAILED: {r.get('error', '')} {tr.get('error', '')}\n"
                    f"{r.get('output_tail', '')}")
            else:
                log(f"[{server.kind}/{kind}] baseline: {nbytes / MiB:.0f} MiB up {tr['upload_s']:.2f}s "
                    f"({tr['upload_mib_s']:.0f} MiB/s), down {tr['download_s']:.2f}s ({tr['download_mib_s']:.0f} MiB/s), "
                    f"client cpu {r.get('cpu_s', 0):.1f}s, server cpu {r.get('server_cpu_s', '-')}s")
        return ok


# --------------------------------------------------------------------------- markdown

def _f(v, kind="s") -> str:
    if v is None:
        return "–"
    if kind == "s":
        return f"{v:.2f}"
    if kind == "s1":
        return f"{v:.1f}"
    if kind == "mib":
        return f"{v / MiB:,.1f}"
    if kind == "rss":
        return f"{v / 1024:,.0f}"
    if kind == "rate":
        return f"{v:,.0f}"
    if kind == "pct":
        return f"{100 * v:.0f} %"
    return str(v)


def _rate(nbytes, secs):
    return None if not nbytes or not secs else nbytes / MiB / secs


def _ratio(a, b) -> str:
    return "–" if a is None or b is None or not b else f"{a / b:.2f}"


def render_md(res: dict) -> str:
    m = res["machine"]
    ds = res.get("dataset", {})
    v1 = ds.get("v1", {})
    dbytes = v1.get("bytes")
    tools_line = "; ".join(
        f"{t}: {i.get('version') or 'n/a (' + i.get('reason', '') + ')'}"
        + (f" (commit {i['source'].get('commit', '?').split()[0]}"
           + (", with uncommitted changes" if i["source"].get("uncommitted_src_changes") else "")
           + f", src digest {i['source']['sha256']})" if i.get("source") else "")
        for t, i in res["tools"].items())
    loads = [st["loadavg_before"][0] for s in res["servers"].values() for r in s.get("results", {}).values()
             for st in r.get("steps", {}).values() if st.get("loadavg_before")]
    out = [
        f"# tuckbox vs restic on real servers ({res['mode']})", "",
        f"Started {res['started']}, finished {res['finished'] or '(running)'}"
        + (" — INTERRUPTED" if res.get("interrupted") else "") + ".",
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory']}, {m['os']}, kernel {m['kernel']}; "
        f"load average at start {m['loadavg_at_start']}, at end {m.get('loadavg_at_end', '–')}"
        + (f"; 1-minute load before the timed steps {min(loads):.1f}–{max(loads):.1f}" if loads else "")
        + " (2 cores: other work on the machine, and the server itself, compete with the tool).",
        f"Tools: {tools_line}.",
        f"Data: the {'quick ' if res['mode'] == 'quick' else ''}mixed dataset ({ds.get('path', '?')}): "
        f"{(dbytes or 0) / MiB:,.0f} MiB in {v1.get('files', 0):,} files, page cache warm (the source read just before every backup, untimed)."
        + (" **The dataset was modified during the run.**" if ds.get("changed_during_run") else ""),
        "",
        "Servers on 127.0.0.1, started by `scripts/servers/*.sh`: "
        + "; ".join(f"**{k}** = {s.get('server', {}).get('what', SERVER_DESC.get(k, k))}"
                    for k, s in res["servers"].items())
        + ". Every tool gets a fresh repository under a unique path/prefix, a fresh HOME/cache, and the "
          "repository is deleted afterwards. Wall/CPU/peak RSS are the tool's process tree (restic's CPU "
          "includes its `ssh` child; tuckbox's SSH runs in-process). *server CPU* is the server "
          "process's CPU time during the step (sshd: listener plus reaped per-connection processes), "
          "which also counts any other client of the same server at the time. Ratios are tuckbox ÷ "
          "restic (< 1: tuckbox faster/smaller).",
        "",
    ]
    # --- summary
    out += ["## Summary", "",
            "| server | tool | first backup (s) | source MiB/s | upload MiB/s | CPU (s) | peak RSS (MiB) | "
            "server CPU (s) | unchanged (s) | restore (s) | restore MiB/s (repo) | repo (MiB) | verified |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for kind, s in res["servers"].items():
        for t, r in s.get("results", {}).items():
            st = r.get("steps", {})
            fb, un, rs = (st.get(x, {}) for x in ("backup_first", "backup_unchanged", "restore"))
            ok = lambda x: "error" not in x and x.get("wall_s") is not None  # noqa: E731
            repo = fb.get("repo_bytes") if ok(fb) else None
            v = r.get("restore_verify")
            vs = "–" if v is None else ("OK" if v.get("ok") else "**MISMATCH**")
            if r.get("errors"):
                vs += " (errors)"
            peak = max([x.get("maxrss_kib", 0) for x in st.values() if ok(x)] or [0]) or None
            out.append(
                f"| {kind} | {t} | {_f(fb.get('wall_s') if ok(fb) else None)} | "
                f"{_f(_rate(dbytes, fb.get('wall_s')) if ok(fb) else None, 'rate')} | "
                f"{_f(_rate(repo, fb.get('wall_s')) if ok(fb) else None, 'rate')} | "
                f"{_f(fb.get('cpu_s') if ok(fb) else None)} | {_f(peak, 'rss')} | "
                f"{_f(fb.get('server_cpu_s') if ok(fb) else None)} | "
                f"{_f(un.get('wall_s') if ok(un) else None)} | {_f(rs.get('wall_s') if ok(rs) else None)} | "
                f"{_f(_rate(repo, rs.get('wall_s')) if ok(rs) else None, 'rate')} | {_f(repo, 'mib')} | {vs} |")
    out += ["", "*source MiB/s* = dataset bytes ÷ first-backup wall time; *upload MiB/s* = repository bytes "
            "after the first backup ÷ its wall time; *restore MiB/s* = repository bytes ÷ restore wall time. "
            "*peak RSS* is the maximum over the steps; *server CPU* is for the first backup.", ""]
    # --- ratios
    out += ["## tuckbox ÷ restic", "",
            "| server | first backup wall | first backup CPU | unchanged wall | restore wall | restore CPU | "
            "peak RSS | repo size |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for kind, s in res["servers"].items():
        t, r = s.get("results", {}).get("tuckbox"), s.get("results", {}).get("restic")
        if not t or not r:
            continue
        g = run._metric
        out.append(f"| {kind} | {_ratio(g(t, 'backup_first', 'wall_s'), g(r, 'backup_first', 'wall_s'))} | "
                   f"{_ratio(g(t, 'backup_first', 'cpu_s'), g(r, 'backup_first', 'cpu_s'))} | "
                   f"{_ratio(g(t, 'backup_unchanged', 'wall_s'), g(r, 'backup_unchanged', 'wall_s'))} | "
                   f"{_ratio(g(t, 'restore', 'wall_s'), g(r, 'restore', 'wall_s'))} | "
                   f"{_ratio(g(t, 'restore', 'cpu_s'), g(r, 'restore', 'cpu_s'))} | "
                   f"{_ratio(run._peak_rss(t), run._peak_rss(r))} | "
                   f"{_ratio(g(t, 'backup_first', 'repo_bytes'), g(r, 'backup_first', 'repo_bytes'))} |")
    out.append("")
    # --- per-step detail
    for kind, s in res["servers"].items():
        per = s.get("results", {})
        if not per:
            if s.get("error"):
                out += [f"## {kind}: not measured — {s['error']}", ""]
            continue
        out += [f"## {kind} — every step", "",
                "| step | wall tuckbox | wall restic | ratio | CPU tuckbox | CPU restic | ratio | RSS tuckbox | "
                "RSS restic | server CPU tuckbox | server CPU restic |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for step in STEPS:
            g = lambda t, k: run._metric(per.get(t), step, k)  # noqa: E731
            out.append(f"| {STEP_LABEL[step]} | {_f(g('tuckbox', 'wall_s'))} | {_f(g('restic', 'wall_s'))} | "
                       f"{_ratio(g('tuckbox', 'wall_s'), g('restic', 'wall_s'))} | {_f(g('tuckbox', 'cpu_s'))} | "
                       f"{_f(g('restic', 'cpu_s'))} | {_ratio(g('tuckbox', 'cpu_s'), g('restic', 'cpu_s'))} | "
                       f"{_f(g('tuckbox', 'maxrss_kib'), 'rss')} | {_f(g('restic', 'maxrss_kib'), 'rss')} | "
                       f"{_f(g('tuckbox', 'server_cpu_s'))} | {_f(g('restic', 'server_cpu_s'))} |")
        errs = [f"{t}: " + "; ".join(e.replace("|", "\\|").replace("\n", " ")[:300] for e in r["errors"])
                for t, r in per.items() if r.get("errors")]
        if errs:
            out += ["", "Errors: " + " / ".join(errs)]
        out.append("")
    # --- baseline
    rows = []
    for kind, s in res["servers"].items():
        for bk, b in s.get("baseline", {}).items():
            tr = b.get("transfer", {})
            if "error" in b or "error" in tr:
                rows.append(f"| {kind} | {bk} | – | – | – | – | – | – | – | "
                            f"failed: {(b.get('error') or '')} {tr.get('error', '')} |")
                continue
            rows.append(f"| {kind} | {bk} | {tr['bytes'] / MiB:,.0f} ({tr['objects']} × "
                        f"{tr['object_size'] // MiB} MiB, {tr['parallel']} at a time) | {_f(tr['upload_s'])} | "
                        f"{_f(tr['upload_mib_s'], 'rate')} | {_f(tr['download_s'])} | "
                        f"{_f(tr['download_mib_s'], 'rate')} | {_f(b.get('cpu_s'))} | "
                        f"{_f(b.get('server_cpu_s'))} | bytes = {b.get('bytes_from')}'s repository |")
    if rows:
        out += ["## Raw server throughput (baseline)", "",
                "Plain parallel uploads, then downloads, of as many bytes as the tool's repository holds, "
                "with no chunking, compression or encryption beyond the transport: `s3-boto3` = boto3 "
                "put_object/get_object from a thread pool, unsigned bodies; `sftp-asyncssh` = asyncssh (tuckbox's SSH "
                "library) on one connection, same cipher (AES-128-GCM), window and request depth as "
                "tuckbox, no fsync; `sftp-openssh` = OpenSSH `sftp -b` put/get, one process and connection "
                "per parallel stream, AES-128-GCM. Client CPU / server CPU cover the whole worker "
                "(upload + download + delete).", "",
                "| server | client | MiB | upload (s) | upload MiB/s | download (s) | download MiB/s | "
                "client CPU (s) | server CPU (s) | |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|", *rows, ""]
        # --- server-bound?
        out += ["## Is tuckbox server-bound?", "",
                "tuckbox's upload rate in its first backup (repository bytes ÷ wall time) against the best raw "
                "upload rate of the same server, and its first backup's wall time against the same backup to "
                "the local disk (in this run). A share near 100 % of the raw rate would mean the server is "
                "the limit; a wall time close to the local one means the remote costs little and tuckbox's "
                "own work (reading, chunking, compressing, encrypting) is the limit.", "",
                "| server | tuckbox upload MiB/s | best raw upload MiB/s | share of raw | first backup ÷ local | "
                "restore MiB/s | best raw download MiB/s | share of raw | restore ÷ local |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        loc = res["servers"].get("local", {}).get("results", {}).get("tuckbox")
        for kind, s in res["servers"].items():
            t = s.get("results", {}).get("tuckbox")
            bl = [b["transfer"] for b in s.get("baseline", {}).values()
                  if "error" not in b and "error" not in b.get("transfer", {"error": 1})]
            if not t or not bl:
                continue
            g = run._metric
            repo = g(t, "backup_first", "repo_bytes")
            up = _rate(repo, g(t, "backup_first", "wall_s"))
            down = _rate(repo, g(t, "restore", "wall_s"))
            bu = max(b["upload_mib_s"] for b in bl)
            bd = max(b["download_mib_s"] for b in bl)
            out.append(f"| {kind} | {_f(up, 'rate')} | {_f(bu, 'rate')} | {_f(up / bu if up else None, 'pct')} | "
                       f"{_ratio(g(t, 'backup_first', 'wall_s'), g(loc, 'backup_first', 'wall_s'))} | "
                       f"{_f(down, 'rate')} | {_f(bd, 'rate')} | {_f(down / bd if down else None, 'pct')} | "
                       f"{_ratio(g(t, 'restore', 'wall_s'), g(loc, 'restore', 'wall_s'))} |")
        out.append("")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- cli

def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_worker"]:
        return worker_main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the ~100 MiB quick mixed set; results go to remote-quick.*")
    ap.add_argument("--servers", default=",".join(ALL_SERVERS), help="comma-separated (default: %(default)s)")
    ap.add_argument("--tools", default=",".join(ALL_TOOLS), help="comma-separated (default: %(default)s)")
    ap.add_argument("--no-local", action="store_true", help="skip the local-disk reference run")
    ap.add_argument("--no-baseline", action="store_true", help="skip the raw-throughput baselines")
    ap.add_argument("--object-size", type=int, default=16 * MiB, help="baseline object size (default: 16 MiB)")
    ap.add_argument("--threads", type=int, default=4, help="baseline parallel transfers (default: %(default)s)")
    ap.add_argument("--keep", action="store_true", help="keep repositories and restored trees")
    ap.add_argument("--out", help="results name under bench/results/ (default: remote, or remote-quick)")
    ap.add_argument("--step-timeout", type=float, default=1800, help="seconds per step (default: %(default)s)")
    ap.add_argument("--tuckbox", default=run.default_exe("tuckbox"), help="tuckbox executable")
    ap.add_argument("--restic", default=run.default_exe("restic"), help="restic executable")
    ap.add_argument("--render", metavar="JSON", help="only re-render the Markdown next to an existing results JSON")
    args = ap.parse_args(argv)
    if args.render:
        p = Path(args.render)
        p.with_suffix(".md").write_text(render_md(json.loads(p.read_text())))
        print(p.with_suffix(".md").read_text())
        return 0
    return RemoteBench(args).main()


if __name__ == "__main__":
    sys.exit(main())
