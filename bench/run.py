#!/usr/bin/env python3
"""Benchmark tuckbox against restic and borg on the same data, in one invocation.

For each dataset (mixed, small) and each tool, back to back:

  mixed: init, first backup, unchanged backup, [mutation], backup after mutation,
         restore latest (into a fresh dir, verified against the source),
         check --read-data
  small: init, first backup, unchanged backup, restore latest (verified)

tuckbox alone also runs the unchanged backup once more with a write-only key (made
untimed), as an unattended host runs it: such a key has no passphrase to derive.

Every step records wall time, CPU time (user+sys of the child process tree, from
os.wait4), peak RSS (ru_maxrss of the child tree), and the repository size after
the step.  Results go to bench/results/<out>.json (raw numbers, machine info,
tool versions) and bench/results/<out>.md (tables + the project's targets).

    .venv/bin/python bench/run.py                      # full run, all tools
    .venv/bin/python bench/run.py --quick              # ~100 MiB / 20k files smoke test
    .venv/bin/python bench/run.py --tools tuckbox --merge   # reuse restic/borg numbers
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dataset  # noqa: E402

BENCH = dataset.BENCH
WORK = dataset.WORK
ROOT = BENCH.parent
RESULTS = BENCH / "results"
LAUNCHER = BENCH / "_launch.py"
PASSWORD = "bench-password-not-a-secret"
ALL_TOOLS = ("tuckbox", "restic", "borg")
ALL_DATASETS = ("mixed", "small")
MiB = 1 << 20

STEPS = {
    "mixed": ["init", "backup_first", "backup_unchanged", "backup_unchanged_wo", "backup_mutated", "restore", "check"],
    "small": ["init", "backup_first", "backup_unchanged", "backup_unchanged_wo", "restore"],
}
# tuckbox only: the same unchanged backup with a write-only key, as an unattended host runs it (no passphrase,
# so no key derivation; the other tools have no such key)
ONLY = {"backup_unchanged_wo": ("tuckbox",)}
STEP_LABEL = {
    "init": "init",
    "backup_first": "first backup",
    "backup_unchanged": "unchanged backup",
    "backup_unchanged_wo": "unchanged backup, write-only key (tuckbox only)",
    "backup_mutated": "backup after mutation",
    "restore": "restore latest",
    "check": "check --read-data",
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- tools

class Tool:
    name = ""
    exe = ""

    def __init__(self, exe: str):
        self.exe = exe

    def env(self, repo: Path, home: Path) -> dict:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RESTIC_", "BORG_", "TUCKBOX_", "XDG_"))}
        env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"),
                   XDG_CONFIG_HOME=str(home / ".config"), XDG_DATA_HOME=str(home / ".local/share"),
                   XDG_STATE_HOME=str(home / ".local/state"), LC_ALL="C.UTF-8")
        return env

    def version(self) -> str:
        raise NotImplementedError

    def available(self) -> str | None:
        """None if usable, else the reason why not."""
        if not shutil.which(self.exe):
            return f"{self.exe} not found"
        return None

    # argv, cwd
    def init(self, repo: Path) -> list[str]: ...
    def backup(self, src: Path, label: str) -> list[str]: ...
    def restore(self, target: Path, label: str) -> tuple[list[str], Path | None]: ...
    def check(self) -> list[str]: ...
    def snapshots(self) -> list[str]: ...
    def count_snapshots(self, out: str) -> int: ...
    def extras(self) -> dict[str, list[str]]:
        return {}


class Restic(Tool):
    name = "restic"

    def env(self, repo, home):
        env = super().env(repo, home)
        env.update(RESTIC_REPOSITORY=str(repo), RESTIC_PASSWORD=PASSWORD,
                   RESTIC_CACHE_DIR=str(home / ".cache/restic"))
        return env

    def version(self):
        return _out([self.exe, "version"]).strip()

    def init(self, repo):
        return [self.exe, "init"]

    def backup(self, src, label):
        return [self.exe, "backup", "--tag", label, str(src)]

    def restore(self, target, label):
        return [self.exe, "restore", "latest", "--target", str(target)], None

    def check(self):
        return [self.exe, "check", "--read-data"]

    def snapshots(self):
        return [self.exe, "snapshots", "--json"]

    def count_snapshots(self, out):
        return len(json.loads(out))


class Borg(Tool):
    name = "borg"

    def env(self, repo, home):
        env = super().env(repo, home)
        env.update(BORG_REPO=str(repo), BORG_PASSPHRASE=PASSWORD, BORG_BASE_DIR=str(home),
                   BORG_DISPLAY_PASSPHRASE="no", BORG_RELOCATED_REPO_ACCESS_IS_OK="yes",
                   BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="no")
        return env

    def version(self):
        return _out([self.exe, "--version"]).strip()

    def init(self, repo):
        return [self.exe, "init", "--encryption=repokey-blake2"]

    def backup(self, src, label):
        return [self.exe, "create", "--compression", "zstd,3", f"::{label}", str(src)]

    def restore(self, target, label):
        # borg extracts into the cwd, paths without the leading '/': same layout as restic
        return [self.exe, "extract", f"::{label}"], target

    def check(self):
        return [self.exe, "check", "--verify-data"]

    def snapshots(self):
        return [self.exe, "list", "--json"]

    def count_snapshots(self, out):
        return len(json.loads(out)["archives"])


class Tuckbox(Tool):
    name = "tuckbox"

    def env(self, repo, home):
        env = super().env(repo, home)
        env.update(TUCKBOX_REPOSITORY=str(repo), TUCKBOX_PASSWORD=PASSWORD)
        return env

    def available(self):
        why = super().available()
        if why:
            return why
        try:
            p = subprocess.run([self.exe, "--help"], capture_output=True, text=True, timeout=120,
                               stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"`{self.exe} --help` failed: {e}"
        if p.returncode != 0:
            return f"`tuckbox --help` exited {p.returncode}: {_tail(p.stderr or p.stdout, 3)}"
        missing = [c for c in ("init", "backup", "restore", "check") if c not in p.stdout]
        if missing:
            return f"`tuckbox --help` lists no {', '.join(missing)} command"
        self.byte_compile()
        return None

    def byte_compile(self) -> None:
        """Write the .pyc files of tuckbox's modules, as ``pip install`` does, before anything is timed.

        The project's .venv holds an editable install; where PYTHONDONTWRITEBYTECODE is set (this
        machine sets it) a module changed since its .pyc was last written is compiled again on every
        run: up to 0.25 s per command, which no installed copy pays."""
        interpreter = sys.executable
        try:
            first = Path(shutil.which(self.exe) or self.exe).read_bytes().split(b"\n", 1)[0]
            if first.startswith(b"#!") and Path(first[2:].decode().strip()).exists():
                interpreter = first[2:].decode().strip()
        except (OSError, UnicodeDecodeError):
            pass
        subprocess.run([interpreter, "-c", "import compileall, os, tuckbox; "
                        "compileall.compile_dir(os.path.dirname(tuckbox.__file__), quiet=1)"],
                       capture_output=True, timeout=300, stdin=subprocess.DEVNULL)

    def version(self):
        for argv in ([self.exe, "--version"], [self.exe, "version"]):
            try:
                v = _out(argv).strip()
                if v:
                    return v.splitlines()[0]
            except (OSError, subprocess.CalledProcessError):
                pass
        try:
            from importlib.metadata import version
            return f"tuckbox {version('tuckbox')}"
        except Exception:  # noqa: BLE001
            return "unknown"

    def init(self, repo):
        return [self.exe, "init"]

    def backup(self, src, label):
        return [self.exe, "backup", str(src)]

    def restore(self, target, label):
        return [self.exe, "restore", "latest", "--target", str(target)], None

    def check(self):
        return [self.exe, "check", "--read-data"]

    def snapshots(self):
        return [self.exe, "snapshots", "--json"]

    def count_snapshots(self, out):
        data = json.loads(out)
        if isinstance(data, dict):
            for k in ("snapshots", "items", "data"):
                if isinstance(data.get(k), list):
                    return len(data[k])
        return len(data)

    def extras(self):
        return {"stats": [self.exe, "stats", "--json"]}


def tuckbox_source() -> dict:
    """Which tuckbox was measured: git commit plus a digest of src/tuckbox as it is on disk
    (the working tree may hold uncommitted work)."""
    import hashlib

    h = hashlib.sha256()
    src = ROOT / "src" / "tuckbox"
    n = 0
    for p in sorted(src.rglob("*.py")):
        h.update(str(p.relative_to(src)).encode() + b"\0" + p.read_bytes())
        n += 1
    info = {"files": n, "sha256": h.hexdigest()[:16]}
    try:
        info["commit"] = _out(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"]).strip()[:120]
        info["uncommitted_src_changes"] = bool(_out(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"]).strip())
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        pass
    return info


def _out(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60,
                          stdin=subprocess.DEVNULL).stdout


def _tail(s: str, n: int = 15) -> str:
    return "\n".join((s or "").strip().splitlines()[-n:])


def make_tool(name: str, args) -> Tool:
    if name == "restic":
        return Restic(args.restic)
    if name == "borg":
        return Borg(args.borg)
    return Tuckbox(args.tuckbox)


# --------------------------------------------------------------------------- measuring

def tree_size(path: Path) -> dict:
    apparent = disk = files = 0
    stack = [str(path)]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except FileNotFoundError:
            continue
        with it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                    disk += st.st_blocks * 512
                else:
                    files += 1
                    apparent += st.st_size
                    disk += st.st_blocks * 512
    return {"bytes": apparent, "disk_bytes": disk, "files": files}


class Runner:
    def __init__(self, args):
        self.args = args
        self.drop_caches = args.drop_caches

    def maybe_drop_caches(self) -> None:
        if not self.drop_caches:
            return
        try:
            os.sync()
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
        except OSError as e:
            log(f"cannot drop the page cache ({e}); continuing with a warm cache")
            self.drop_caches = False

    def warm(self, paths: list[Path]) -> None:
        """Read every file under ``paths`` (untimed) unless the cache is dropped before every step.

        This VM reclaims page-cache pages proactively, even with most memory free, so without this
        the tool that runs first after a quiet spell (or after another tool's big restore) would
        read its input from disk and the next one from memory. Every tool starts each step as
        warm as the machine allows.
        """
        if self.drop_caches:
            return
        for root in paths:
            for dirpath, _, files in os.walk(root):
                for name in files:
                    try:
                        with open(os.path.join(dirpath, name), "rb", buffering=0) as f:
                            while f.read(1 << 20):
                                pass
                    except OSError:
                        pass

    def run(self, argv: list[str], env: dict, cwd: Path | None, logfile: Path, timeout: float) -> dict:
        """Run one timed step through bench/_launch.py, which reports the command tree's rusage.

        wall / CPU / peak RSS come from the launcher's wait4() of the command (see _launch.py for
        why not straight from here); the outer wait4() of launcher + command is kept as a cross-check.
        """
        self.maybe_drop_caches()
        # write back what earlier steps (any tool's restore, the mutation) left dirty, so that
        # writeback lands in nobody's timed step
        os.sync()
        load = os.getloadavg()
        ru_file = logfile.with_suffix(".rusage.json")
        ru_file.unlink(missing_ok=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with open(logfile, "ab") as lf:
            lf.write(f"$ {' '.join(argv)}   (cwd={cwd or os.getcwd()})\n".encode())
            lf.flush()
            t0 = time.perf_counter()
            try:
                p = subprocess.Popen([sys.executable, "-S", str(LAUNCHER), str(ru_file), *argv], env=env, cwd=cwd,
                                     stdin=subprocess.DEVNULL, stdout=lf, stderr=subprocess.STDOUT,
                                     start_new_session=True)
            except OSError as e:
                return {"rc": 127, "error": str(e), "argv": argv}
            killed = []

            def kill():
                killed.append(True)
                try:
                    os.killpg(p.pid, signal.SIGKILL)  # the launcher's own process group: it and the command
                except ProcessLookupError:
                    pass

            timer = threading.Timer(timeout, kill)
            timer.start()
            try:
                _, status, outer = os.wait4(p.pid, 0)
            finally:
                timer.cancel()
            outer_wall = time.perf_counter() - t0
            p.returncode = os.waitstatus_to_exitcode(status)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            inner = json.loads(ru_file.read_text())
        except (OSError, ValueError):
            inner = None
        r = {"argv": argv, "rc": p.returncode}
        if inner:
            r.update({
                "rc": inner["rc"],
                "wall_s": round(inner["wall_s"], 3),
                "user_s": round(inner["user_s"], 3),
                "sys_s": round(inner["sys_s"], 3),
                "cpu_s": round(inner["user_s"] + inner["sys_s"], 3),
                "maxrss_kib": inner["maxrss_kib"],
                "read_bytes": inner["inblock"] * 512,
                "write_bytes": inner["oublock"] * 512,
            })
        r.update({
            "outer_wall_s": round(outer_wall, 3),
            "outer_cpu_s": round(outer.ru_utime + outer.ru_stime, 3),
            "cpu_s_rusage_children_delta": round((after.ru_utime - before.ru_utime)
                                                 + (after.ru_stime - before.ru_stime), 3),
            "loadavg_before": [round(x, 2) for x in load],
            "log": str(logfile.relative_to(BENCH)) if logfile.is_relative_to(BENCH) else str(logfile),
        })
        if killed:
            r["error"] = f"killed after the {timeout:.0f}s step timeout"
        elif r["rc"] != 0:
            r["error"] = f"exit code {r['rc']}"
        elif not inner:
            r["error"] = "the launcher wrote no rusage"
        if "error" in r:
            r["output_tail"] = _tail(logfile.read_text(errors="replace"), 20)
        return r


SETTLE_S = 2.5


# ext4 without a journal (this machine's root file system) skips inodes freed in the last 60 s when it
# allocates new ones, or the last 360 s while their inode-table block is still dirty (fs/ext4/ialloc.c,
# recently_deleted); measured here: a restore 70 s after deleting 15,000 files still paid it
RECENTLY_DELETED_S = 361
DELETED_STAMP = "last-deletion"  # in WORK: when empty_trash last deleted trees


def discard(path: Path) -> None:
    """Move a tree out of the way instead of deleting it while the benchmark runs (``empty_trash``).

    Deleting a restored tree of 200,000 files right before another tool's restore makes that
    restore much slower on ext4 without a journal: its inode allocator skips recently freed inodes
    (``recently_deleted``, see ``RECENTLY_DELETED_S``) and scans the bitmaps past them (measured
    here: a 7 s restore became 35-40 s, with 60 s of kernel time). A rename frees nothing, so every
    tool meets the same file system; the trash is emptied once nothing is being timed.
    """
    if not path.exists():
        return
    trash = WORK / "trash"
    trash.mkdir(parents=True, exist_ok=True)
    os.rename(path, trash / f"{time.time_ns()}-{path.name}")


def empty_trash(wait: bool = False) -> None:
    """Delete what ``discard`` kept; with ``wait``, then let freed inodes age before timing anything.

    The time of the deletion is recorded, so a run started soon after another one (which empties
    its trash at the end) also waits until those inodes have aged.
    """
    trash = WORK / "trash"
    stamp = WORK / DELETED_STAMP
    if trash.exists() and any(trash.iterdir()):
        shutil.rmtree(trash, ignore_errors=True)
        os.sync()
        stamp.write_text(str(time.time()))
    if not wait:
        return
    try:
        left = float(stamp.read_text()) + RECENTLY_DELETED_S - time.time()
    except (OSError, ValueError):
        return
    if left > 0:
        log(f"waiting {left:.0f} s after deleting old benchmark trees (ext4 inode reuse)")
        time.sleep(left)


def settle(st: dict | None = None) -> None:
    """Let the clock move past the last write to the dataset before a timed step.

    Files changed within about a second of a backup are "racy" for a files cache (size and
    times cannot prove they did not change again in the same tick), so a tool may rightly
    re-read them in the next backup; giving it a couple of seconds keeps that from skewing the
    unchanged backup of whichever tool happens to start right after a revert or the mutation.
    """
    while True:
        last = (st or {}).get("modified_at", 0)
        wait = last + SETTLE_S - time.time()
        if wait <= 0:
            return
        time.sleep(wait)


def untimed(argv: list[str], env: dict, cwd: Path | None = None, timeout: float = 1800) -> tuple[int, str, str]:
    try:
        p = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        return p.returncode, p.stdout, p.stderr
    except (OSError, subprocess.TimeoutExpired) as e:
        return -1, "", str(e)


# --------------------------------------------------------------------------- the benchmark

class Bench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.mode = "quick" if args.quick else "full"
        self.runner = Runner(args)
        self.stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.logdir = WORK / "logs" / f"{self.stamp}-{self.mode}"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.out = RESULTS / f"{args.out or ('quick' if args.quick else 'latest')}"
        self.manifests: dict[str, dict] = {}
        self.res = {
            "schema": 1,
            "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "finished": None,
            "mode": self.mode,
            "argv": sys.argv[1:],
            "machine": machine_info(),
            "settings": {
                "warm_page_cache": not args.drop_caches,
                "tuckbox": "defaults; env TUCKBOX_REPOSITORY / TUCKBOX_PASSWORD",
                "restic": "defaults of the version (repo v2, compression auto = zstd); env RESTIC_PASSWORD",
                "borg": "init --encryption=repokey-blake2, create --compression zstd,3; env BORG_PASSPHRASE",
                "step_timeout_s": args.step_timeout,
            },
            "tools": {},
            "datasets": {},
            "results": {},
        }

    # ---- output
    def save(self) -> None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.res, indent=1) + "\n")
        tmp.replace(self.out.with_suffix(".json"))
        self.out.with_suffix(".md").write_text(render_md(self.res))

    def merge_previous(self, tools: list[str], datasets: list[str]) -> None:
        """Carry over (dataset, tool) results this invocation does not produce, if made on the same data."""
        p = self.out.with_suffix(".json")
        try:
            old = json.loads(p.read_text())
        except (OSError, ValueError):
            log(f"--merge: no previous results in {p}")
            return
        for ds, per_tool in old.get("results", {}).items():
            old_info = old.get("datasets", {}).get(ds, {})
            if old_info.get("params") != dataset.params(ds, self.quick):
                log(f"--merge: previous {ds} results were made on different data; not merged")
                continue
            for tool, rec in per_tool.items():
                if (ds in datasets and tool in tools) or tool in self.res["results"].get(ds, {}):
                    continue
                rec = dict(rec)
                rec.setdefault("carried_over_from", old.get("started"))
                self.res["results"].setdefault(ds, {})[tool] = rec
                if ds not in self.res["datasets"]:
                    self.res["datasets"][ds] = old_info
                if tool in old.get("tools", {}):
                    self.res["tools"].setdefault(tool, old["tools"][tool])
                log(f"--merge: carried over {tool} on {ds} from the run of {old.get('started')}")

    # ---- main loop
    def main(self) -> int:
        tools = [t for t in self.args.tools.split(",") if t]
        datasets = [d for d in self.args.datasets.split(",") if d]
        for t in tools:
            if t not in ALL_TOOLS:
                sys.exit(f"unknown tool {t!r}; choose from {','.join(ALL_TOOLS)}")
        for d in datasets:
            if d not in ALL_DATASETS:
                sys.exit(f"unknown dataset {d!r}; choose from {','.join(ALL_DATASETS)}")

        usable: list[Tool] = []
        for name in tools:
            tool = make_tool(name, self.args)
            why = tool.available()
            if why:
                log(f"{name}: not available: {why}")
                self.res["tools"][name] = {"available": False, "reason": why}
                continue
            self.res["tools"][name] = {"available": True, "exe": shutil.which(tool.exe) or tool.exe,
                                       "version": tool.version()}
            if name == "tuckbox":
                self.res["tools"][name]["source"] = tuckbox_source()
            log(f"{name}: {self.res['tools'][name]['version']}")
            usable.append(tool)

        for ds in datasets:
            st = dataset.ensure(ds, self.quick, log)
            self.res["datasets"][ds] = {
                "path": str(dataset.data_dir(ds, self.quick)),
                "params": st["params"], "v1": st["v1"], "corpus": st["corpus"],
                "generate_seconds": st.get("generate_seconds"),
            }
        if self.args.merge:
            self.merge_previous(tools, datasets)
        self.save()
        empty_trash(wait=True)  # left by an interrupted run: deleted, then aged, before anything is timed

        try:
            for ds in datasets:
                runs: dict[str, list[dict]] = {t.name: [] for t in usable}
                for rep in range(self.args.repeat):  # tools interleaved, so load changes hit all alike
                    for tool in usable:
                        rec = {"steps": {}}
                        if self.args.repeat > 1:
                            log(f"[{ds}/{tool.name}] repetition {rep + 1} of {self.args.repeat}")
                        try:
                            self.run_one(tool, ds, rec)
                        except Exception as e:  # noqa: BLE001 - record and go on with the next tool
                            rec["ok"] = False
                            rec.setdefault("errors", []).append(f"harness error: {type(e).__name__}: {e}")
                            log(f"[{ds}/{tool.name}] harness error: {e!r}")
                        runs[tool.name].append(rec)
                        self.res["results"].setdefault(ds, {})[tool.name] = combine_repeats(runs[tool.name])
                        self.save()
        except KeyboardInterrupt:
            log("interrupted; writing partial results")
            self.res["interrupted"] = True
        finally:
            empty_trash()
        self.res["finished"] = dt.datetime.now().astimezone().isoformat(timespec="seconds")
        self.save()
        log(f"results: {self.out.with_suffix('.md')} and {self.out.with_suffix('.json')}")
        print(self.out.with_suffix(".md").read_text())
        failed = [f"{ds}/{t}" for ds, pt in self.res["results"].items() for t, r in pt.items()
                  if not r.get("ok", True) and "carried_over_from" not in r]
        if failed:
            log(f"FAILED: {', '.join(failed)}")
        return 1 if failed else 0

    def source_manifest(self, ds: str) -> dict:
        st = dataset.load_state(ds, self.quick)
        key = st[f"v{st['version']}"]["digest"]
        if key not in self.manifests:
            self.manifests[key] = dataset.manifest(dataset.data_dir(ds, self.quick))
        return self.manifests[key]

    def run_one(self, tool: Tool, ds: str, rec: dict) -> None:
        quick, a = self.quick, self.args
        tag = f"[{ds}/{tool.name}]"
        st = dataset.ensure(ds, quick, log)
        src = dataset.data_dir(ds, quick)
        rundir = WORK / "runs" / self.mode / ds / tool.name
        discard(rundir)
        repo, home, restore = rundir / "repo", rundir / "home", rundir / "restore"
        home.mkdir(parents=True)
        env = tool.env(repo, home)
        settle(st)
        rec.update(ok=True, errors=[], repo=str(repo), dataset_digest_v1=st["v1"]["digest"])
        labels = {"backup_first": "s1", "backup_unchanged": "s2", "backup_unchanged_wo": "s2w", "backup_mutated": "s3"}
        last_label = "s1"

        for step in STEPS[ds]:
            if step == "restore" and ds == "small" and a.no_small_restore:
                continue
            if tool.name not in ONLY.get(step, (tool.name,)):
                continue
            if step == "backup_mutated":
                st = dataset.mutate_mixed(quick, log)
                settle(st)
                rec["dataset_digest_v2"] = st["v2"]["digest"]
                self.res["datasets"][ds]["v2"] = st["v2"]
                self.res["datasets"][ds]["mutation"] = st["mutation"]
            cwd = None
            if step == "init":
                argv = tool.init(repo)
            elif step == "backup_unchanged_wo":
                key = home / "write-only.key"  # made untimed, with the passphrase
                rc, _, err = untimed([tool.exe, "key", "add", "--write-only", "--output", str(key)], env)
                if rc != 0:
                    rec["ok"] = False
                    rec["errors"].append(f"making a write-only key failed: {_tail(err, 3)}")
                    break
                last_label = labels[step]
                b = tool.backup(src, last_label)
                argv = [b[0], "--key-file", str(key), *b[1:]]
            elif step.startswith("backup_"):
                last_label = labels[step]
                argv = tool.backup(src, last_label)
            elif step == "restore":
                discard(restore)
                restore.mkdir()
                argv, cwd = tool.restore(restore, last_label)
            else:
                argv = tool.check()
            # the step's input as warm as the machine allows, for every tool alike (Runner.warm)
            self.runner.warm([src] if step.startswith("backup_") else [repo] if step in ("restore", "check") else [])
            r = self.runner.run(argv, env, cwd, self.logdir / f"{ds}-{tool.name}-{step}.log", a.step_timeout)
            r.update({f"repo_{k}": v for k, v in tree_size(repo).items()})
            r["cache_bytes"] = tree_size(home)["bytes"]
            rec["steps"][step] = r
            msg = (f"{tag} {STEP_LABEL[step]}: {r.get('wall_s', 0):.2f}s wall, {r.get('cpu_s', 0):.2f}s cpu, "
                   f"{r.get('maxrss_kib', 0) / 1024:.0f} MiB peak RSS, repo {r['repo_bytes'] / MiB:.1f} MiB")
            if "error" in r:
                msg += f"  FAILED: {r['error']}\n{r.get('output_tail', '')}"
            log(msg)
            if "error" in r:
                rec["ok"] = False
                rec["errors"].append(f"{STEP_LABEL[step]}: `{' '.join(map(str, argv))}`: {r['error']}: "
                                     f"{_tail(r.get('output_tail', ''), 3)}")
                break
            if step == "restore":
                rec["restore_verify"] = v = self.verify_restore(ds, src, restore)
                log(f"{tag} restore verification: {'OK' if v['ok'] else 'MISMATCH'} {v}")
                if not v["ok"]:
                    rec["ok"] = False
                    rec["errors"].append(f"restore differs from the source: {v}")
                if not a.keep:
                    discard(restore)
            self.save()

        # untimed sanity checks / extras
        expected = sum(1 for s in rec["steps"] if s.startswith("backup_") and "error" not in rec["steps"][s])
        rc, out, err = untimed(tool.snapshots(), env)
        try:
            n = tool.count_snapshots(out) if rc == 0 else None
        except (ValueError, KeyError, TypeError) as e:
            n = None
            err = f"cannot parse the output: {e}: {out[:300]}"
        rec["snapshots"] = n
        if n != expected:
            msg = (f"snapshots: `{' '.join(tool.snapshots())}` -> rc {rc}, {n} snapshots (expected {expected}) "
                   f"{_tail(err, 3)}")
            rec["errors"].append(msg)
            log(f"{tag} {msg}")
        for name, argv in tool.extras().items():
            rc, out, err = untimed(argv, env)
            rec.setdefault("extras", {})[name] = {"argv": argv, "rc": rc, "stdout": out[-4000:],
                                                   "stderr": _tail(err, 10)}
            if rc != 0:
                msg = f"{name}: `{' '.join(argv)}` -> rc {rc}: {_tail(err or out, 3)}"
                rec["errors"].append(msg)
                log(f"{tag} {msg}")
        if not a.keep:
            discard(rundir)

    def verify_restore(self, ds: str, src: Path, restore: Path) -> dict:
        root = restore / str(src).lstrip("/")
        if not root.is_dir():
            found = sorted(os.listdir(restore))[:5] if restore.exists() else []
            return {"ok": False, "error": f"{root} not found after restore; top level of the target: {found}"}
        t0 = time.perf_counter()
        v = dataset.compare_manifests(self.source_manifest(ds), dataset.manifest(root))
        v["seconds"] = round(time.perf_counter() - t0, 2)
        return v


def combine_repeats(recs: list[dict]) -> dict:
    """One record from repetitions of a tool's sequence: min wall and CPU time per step (the least
    disturbed run), max peak RSS, sizes of the first; every repetition's numbers stay in 'repeats'."""
    if len(recs) == 1:
        return recs[0]
    out = json.loads(json.dumps(recs[0]))
    out["ok"] = all(r.get("ok", False) for r in recs)
    out["errors"] = [f"repetition {i + 1}: {e}" for i, r in enumerate(recs) for e in r.get("errors", [])]
    for name, step in out["steps"].items():
        good = [r["steps"][name] for r in recs if name in r["steps"] and "error" not in r["steps"][name]]
        if not good or "error" in step:
            continue
        for key in ("wall_s", "cpu_s", "user_s", "sys_s"):
            step[key] = min(g[key] for g in good)
            step[f"{key}_all"] = [g[key] for g in good]
        step["maxrss_kib"] = max(g["maxrss_kib"] for g in good)
    bad = [r.get("restore_verify") for r in recs if r.get("restore_verify") and not r["restore_verify"]["ok"]]
    if bad:
        out["restore_verify"] = bad[0]
    out["repetitions"] = len(recs)
    out["repeats"] = [{"steps": {n: {k: st.get(k) for k in ("wall_s", "cpu_s", "maxrss_kib", "repo_bytes", "rc")}
                                 for n, st in r["steps"].items()}} for r in recs]
    return out


# --------------------------------------------------------------------------- machine info

def machine_info() -> dict:
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    fs = ""
    try:
        best = ""
        for line in open("/proc/mounts"):
            dev, mnt, typ = line.split()[:3]
            if str(WORK).startswith(mnt) and len(mnt) >= len(best):
                best, fs = mnt, f"{typ} on {dev} ({mnt})"
    except OSError:
        pass
    git = {}
    try:
        git["commit"] = _out(["git", "-C", str(ROOT), "rev-parse", "HEAD"]).strip()
        git["dirty_files"] = len(_out(["git", "-C", str(ROOT), "status", "--porcelain"]).splitlines())
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        pass
    return {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "os": _os_release(),
        "python": sys.version.split()[0],
        "work_fs": fs,
        "git": git,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _os_release() -> str:
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


# --------------------------------------------------------------------------- markdown

def _fmt(v, kind: str) -> str:
    if v is None:
        return "–"
    if kind == "s":
        return f"{v:.2f}"
    if kind == "mib":
        return f"{v / MiB:,.1f}"
    if kind == "rss":
        return f"{v / 1024:,.0f}"
    return str(v)


def _ratio(a, b, floor=0) -> str:
    if a is None or b is None or not b or max(a, b) < floor:
        return "–"
    return f"{a / b:.2f}"


def _metric(rec: dict | None, step: str, key: str):
    if not rec:
        return None
    s = rec.get("steps", {}).get(step)
    if not s or "error" in s:
        return None
    return s.get(key)


def _growth(rec: dict | None):
    a, b = _metric(rec, "backup_unchanged", "repo_bytes"), _metric(rec, "backup_mutated", "repo_bytes")
    return None if a is None or b is None else b - a


def _peak_rss(rec: dict | None):
    if not rec:
        return None
    vals = [s["maxrss_kib"] for s in rec.get("steps", {}).values() if "maxrss_kib" in s and "error" not in s]
    return max(vals) if vals else None


def render_md(res: dict) -> str:
    m = res["machine"]
    def tool_desc(t, i):
        d = i.get("version") or f"n/a ({i.get('reason', '')})"
        src = i.get("source")
        if src:
            d += (f" (commit {src.get('commit', '?').split()[0]}"
                  + (", with uncommitted changes" if src.get("uncommitted_src_changes") else "")
                  + f", src digest {src['sha256']})")
        return f"{t}: {d}"

    tools_line = "; ".join(tool_desc(t, i) for t, i in res["tools"].items())
    out = [
        f"# tuckbox benchmark ({res['mode']})",
        "",
        f"Started {res['started']}, finished {res['finished'] or '(running)'}"
        + (" — INTERRUPTED" if res.get("interrupted") else "") + ".",
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory']}, {m['os']}, kernel {m['kernel']}, "
        f"work dir on {m['work_fs']}; load average at start {m['loadavg_at_start']}.",
        f"Tools: {tools_line}.",
        f"Settings: borg `repokey-blake2`, `--compression zstd,3`; restic defaults (repo v2, compression auto); "
        f"tuckbox defaults (its modules byte-compiled before the run, as an install does). Page cache {'warm (each step’s input read just before it, untimed)' if res['settings']['warm_page_cache'] else 'dropped before every step'}. "
        "Ratios are tuckbox's value divided by the other tool's (for time: < 1 means tuckbox is faster).",
        "",
    ]
    reps = {r.get("repetitions", 1) for pt in res["results"].values() for r in pt.values()}
    if reps - {1}:
        out[-1:] = [f"Each tool's sequence ran {max(reps)} times, tools interleaved; times are the fastest "
                    "repetition of each step, peak RSS the largest (all repetitions are in the JSON).", ""]
    tools = ["tuckbox", "restic", "borg"]
    for ds, per_tool in res["results"].items():
        info = res["datasets"].get(ds, {})
        v1 = info.get("v1", {})
        desc = f"{v1.get('bytes', 0) / MiB:,.0f} MiB in {v1.get('files', 0):,} files, {v1.get('dirs', 0):,} dirs"
        if info.get("mutation"):
            mu = info["mutation"]
            desc += (f"; mutation changed {mu['changed_bytes'] / MiB:.1f} MiB "
                     f"({100 * mu['changed_fraction']:.2f}%): {mu['files_modified']} files modified, "
                     f"{mu['files_added']} added, {mu['files_deleted']} deleted")
        out += [f"## {ds} — {desc}", ""]
        carried = {t: r["carried_over_from"] for t, r in per_tool.items() if r.get("carried_over_from")}
        if carried:
            out += ["Carried over from earlier runs (--merge): "
                    + ", ".join(f"{t} ({s})" for t, s in carried.items()) + ".", ""]
        loads = []
        for t in tools:
            la = [st["loadavg_before"][0] for st in per_tool.get(t, {}).get("steps", {}).values()
                  if st.get("loadavg_before")]
            if la:
                loads.append(f"{t} {min(la):.1f}–{max(la):.1f}")
        if loads:
            out += ["1-minute load average before the steps (2 cores; higher means other work competed): "
                    + ", ".join(loads) + ".", ""]
        steps = STEPS.get(ds, [])
        for title, key, kind in (("Wall time (s)", "wall_s", "s"), ("CPU time, user+sys (s)", "cpu_s", "s"),
                                 ("Peak RSS (MiB)", "maxrss_kib", "rss"),
                                 ("Repository size after the step (MiB, apparent)", "repo_bytes", "mib")):
            out += [f"**{title}**", "",
                    "| step | tuckbox | restic | borg | tuckbox/restic | tuckbox/borg |",
                    "|---|---:|---:|---:|---:|---:|"]
            for step in steps:
                vals = {t: _metric(per_tool.get(t), step, key) for t in tools}
                if all(v is None for v in vals.values()):
                    continue
                fl = MiB if kind == "mib" else 0  # no ratios of (nearly) empty repositories
                out.append(f"| {STEP_LABEL[step]} | " + " | ".join(_fmt(vals[t], kind) for t in tools)
                           + f" | {_ratio(vals['tuckbox'], vals['restic'], fl)} | {_ratio(vals['tuckbox'], vals['borg'], fl)} |")
            if key == "repo_bytes" and "backup_mutated" in steps:
                g = {t: _growth(per_tool.get(t)) for t in tools}
                out.append("| **growth from the mutation backup** | " + " | ".join(_fmt(g[t], "mib") for t in tools)
                           + f" | {_ratio(g['tuckbox'], g['restic'])} | {_ratio(g['tuckbox'], g['borg'])} |")
            if key == "maxrss_kib":
                p = {t: _peak_rss(per_tool.get(t)) for t in tools}
                out.append("| **max over steps** | " + " | ".join(_fmt(p[t], "rss") for t in tools)
                           + f" | {_ratio(p['tuckbox'], p['restic'])} | {_ratio(p['tuckbox'], p['borg'])} |")
            out.append("")
        # status
        out += ["**Status**", "", "| tool | restore verified | snapshots | errors |", "|---|---|---:|---|"]
        for t in tools:
            r = per_tool.get(t)
            if not r:
                continue
            v = r.get("restore_verify")
            if v is None:
                vs = "not run"
            elif v["ok"]:
                vs = "OK" + (f" (mode diffs {v['mode_differs']}, mtime diffs {v['mtime_differs']})"
                             if v.get("mode_differs") or v.get("mtime_differs") else "")
            else:
                vs = "**MISMATCH** " + ", ".join(f"{k} {v[k]}" for k in ("missing", "extra", "content_differs")
                                                  if v.get(k)) + (f" {v['error']}" if v.get("error") else "")
            errs = "; ".join(e.replace("|", "\\|").replace("\n", " ")[:300] for e in r.get("errors", [])) or "–"
            out.append(f"| {t} | {vs} | {r.get('snapshots', '–')} | {errs} |")
        out.append("")
    out += render_targets(res)
    return "\n".join(out) + "\n"


def render_targets(res: dict) -> list[str]:
    rows = []

    def add(target, ds, tv, ref_tool, rv, ok, fmt):
        rows.append(f"| {target} | {ds} | {fmt(tv)} | {ref_tool} {fmt(rv)} | {_ratio(tv, rv)} | "
                    f"{'–' if ok is None else ('PASS' if ok else '**FAIL**')} |")

    for ds, per_tool in res["results"].items():
        t, r, b = per_tool.get("tuckbox"), per_tool.get("restic"), per_tool.get("borg")
        if not t:
            continue
        s = lambda x: _fmt(x, "s")  # noqa: E731
        for step, factor, label in (("backup_first", 2, "first backup ≥ 2× faster than restic"),
                                    ("backup_unchanged", 3, "unchanged backup ≥ 3× faster than restic"),
                                    ("restore", 2, "restore ≥ 2× faster than restic")):
            tv, rv = _metric(t, step, "wall_s"), _metric(r, step, "wall_s")
            add(label, ds, tv, "restic", rv, None if tv is None or rv is None else tv * factor <= rv, s)
            if step == "backup_unchanged" and _metric(t, "backup_unchanged_wo", "wall_s") is not None:
                # for information, not the target: restic has no key that needs no passphrase
                add("(the same, tuckbox with a write-only key, as an unattended host runs it)", ds,
                    _metric(t, "backup_unchanged_wo", "wall_s"), "restic", rv, None, s)
        last = "backup_mutated" if "backup_mutated" in STEPS[ds] else "backup_unchanged"
        tv, rv = _metric(t, last, "repo_bytes"), _metric(r, last, "repo_bytes")
        if _metric(t, last, "wall_s") is None:
            tv = None
        add("repository no larger than restic's", ds, tv, "restic", rv,
            None if tv is None or rv is None else tv <= rv, lambda x: _fmt(x, "mib") + " MiB" if x else "–")
        if "backup_mutated" in STEPS[ds]:
            tv, bv = _growth(t), _growth(b)
            if _metric(t, "backup_mutated", "wall_s") is None:
                tv = None
            add("growth after mutation smaller than borg's", ds, tv, "borg", bv,
                None if tv is None or bv is None else tv < bv, lambda x: _fmt(x, "mib") + " MiB" if x is not None else "–")
        tv, rv = _peak_rss(t), _peak_rss(r)
        add("peak RSS no higher than restic's", ds, tv, "restic", rv,
            None if tv is None or rv is None else tv <= rv, lambda x: _fmt(x, "rss") + " MiB" if x else "–")
    if not rows:
        return ["## Targets", "", "No tuckbox results yet: nothing to compare against the targets.", ""]
    return ["## Targets", "",
            "| target | dataset | tuckbox | reference | ratio | verdict |", "|---|---|---:|---:|---:|---|",
            *rows, ""]


# --------------------------------------------------------------------------- cli

def default_exe(name: str) -> str:
    if name == "tuckbox":
        venv = ROOT / ".venv" / "bin" / "tuckbox"
        return str(venv) if venv.exists() else "tuckbox"
    if name == "borg":
        local = WORK / "venv" / "bin" / "borg"  # bench/setup.sh with BENCH_BORG=pip
        return str(local) if local.exists() else "borg"
    return name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tools", default=",".join(ALL_TOOLS), help="comma-separated (default: %(default)s)")
    ap.add_argument("--datasets", default=",".join(ALL_DATASETS), help="comma-separated (default: %(default)s)")
    ap.add_argument("--quick", action="store_true", help="scaled-down data (~100 MiB mixed, 20k small files)")
    ap.add_argument("--keep", action="store_true", help="keep repositories and restored trees under bench/work/runs")
    ap.add_argument("--merge", action="store_true",
                    help="carry over results of tools not run now from the previous results file (same data only)")
    ap.add_argument("--out", help="results name under bench/results/ (default: latest, or quick with --quick)")
    ap.add_argument("--no-small-restore", action="store_true", help="skip the restore of the small dataset")
    ap.add_argument("--drop-caches", action="store_true",
                    help="sync and drop the page cache before every timed step (needs root; default: warm cache)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run every tool's sequence N times (tools interleaved) and report the fastest time "
                         "per step (default: %(default)s)")
    ap.add_argument("--step-timeout", type=float, default=3600, help="seconds per step (default: %(default)s)")
    ap.add_argument("--tuckbox", default=default_exe("tuckbox"), help="tuckbox executable")
    ap.add_argument("--restic", default=default_exe("restic"), help="restic executable")
    ap.add_argument("--borg", default=default_exe("borg"), help="borg executable")
    ap.add_argument("--render", metavar="JSON", help="only re-render the Markdown next to an existing results JSON")
    args = ap.parse_args(argv)
    if args.render:
        p = Path(args.render)
        p.with_suffix(".md").write_text(render_md(json.loads(p.read_text())))
        print(p.with_suffix(".md").read_text())
        return 0
    return Bench(args).main()


if __name__ == "__main__":
    sys.exit(main())
