"""Shared CLI plumbing: global options, the repository opener, passphrases, output."""

from __future__ import annotations

import argparse
import datetime
import getpass
import json
import os
import re
import subprocess
import sys
from typing import Any

from ..backends import open_backend
from ..crypto.keyfile import keyfile_info
from ..errors import IntegrityError, SnapshotNotFound, UnsupportedFormat, UsageError, WrongPassphrase
from ..redact import add_secret, child_environment
from ..repository.repo import Repository
from ..snapshot.model import Snapshot
from ..text import display_path as display
from ..text import given_forms, json_path, json_path_fields, json_paths_fields
from ..types import Backend

__all__ = ["display", "json_path", "json_path_fields", "json_paths_fields"]  # (re-exported for the commands)

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'2MiB', '500k', '1.5G' -> bytes (k/M/G are 1024-based, as everywhere in tuckbox)."""
    m = _SIZE.match(text)
    if not m:
        raise UsageError(f"'{text}' is not a size; write it like 512KiB, 2MiB or 1GiB")
    mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    return int(float(m.group(1)) * mult)


def parse_rate(text: str, option: str) -> int | None:
    """A bandwidth limit in bytes per second; None for no limit ('0'). A value that rounds to no whole byte
    (0.1, 0.5B) is refused: taken as 0 it silently meant no limit at all."""
    n = parse_size(text)
    if n:
        return n
    if float(_SIZE.match(text).group(1)):  # type: ignore[union-attr]
        raise UsageError(f"{option} {text} is less than one byte per second; write it like 512KiB (0 means no limit)")
    return None


def local_time(iso: str) -> str:
    """A recorded time (ISO 8601 with its host's offset) in this machine's time zone."""
    try:
        return datetime.datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso[:19].replace("T", " ")


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def print_table(rows: list[tuple[str | bytes, ...]]) -> None:
    """Rows of text in left-aligned columns, the first row a heading underlined with dashes. Every cell is shown
    as paths are (``display``): what a snapshot or key records (a host name, a tag, a comment, written maybe
    by an untrusted host with a write-only key) cannot move the cursor, retitle the terminal or add a row."""
    rows = [tuple(display(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for k, r in enumerate(rows):
        print("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip())
        if k == 0:
            print("-" * (sum(widths) + 2 * (len(widths) - 1)))


def nonempty(text: str) -> str:
    """argparse ``type`` of a path, file or command argument: an empty one (an unset variable in a script) is
    a usage error, not the current directory or "not given"."""
    if not text:
        raise argparse.ArgumentTypeError("an empty value is not allowed (an unset or empty variable in a script?)")
    return text


def pattern(text: str) -> str:
    """argparse ``type`` of an --include/--exclude/find pattern: one that starts with ``./`` or ``../`` (or is
    ``.`` or ``..``) is a path from the current directory, as the paths given to backup and ls are; made
    absolute here (matched against absolute paths as it was, it matched nothing)."""
    text = nonempty(text)
    if text in (".", "..") or text.startswith(("./", "../")):
        return os.fsdecode(os.path.abspath(os.fsencode(text)))
    return text


def tag(text: str) -> str:
    """argparse ``type`` of a tag: a word to list and select snapshots by, so not empty and one printable line."""
    if not text.strip() or not text.isprintable():
        raise argparse.ArgumentTypeError("a tag must be printable text on one line, not empty")
    return text


def host_name(text: str) -> str:
    """argparse ``type`` of a host name to record: printable text on one line (empty: this machine's)."""
    if text and (not text.strip() or not text.isprintable()):
        raise argparse.ArgumentTypeError("a host name must be printable text on one line")
    return text


def add_global_options(p: argparse.ArgumentParser, suppress: bool = False) -> None:
    """Options every command accepts, before or after the command name."""
    default = argparse.SUPPRESS if suppress else None
    p.add_argument("-r", "--repo", metavar="URL", type=nonempty, default=default,
                   help="repository location: a path, sftp://, s3://, tahoe://, webdav+https:// or rclone: "
                        "(default: $TUCKBOX_REPOSITORY)")
    p.add_argument("--password-file", metavar="FILE", type=nonempty, default=default,
                   help="read the passphrase from FILE, all of it but one line ending (\\n or \\r\\n) "
                        "(default: $TUCKBOX_PASSWORD_FILE)")
    p.add_argument("--password-command", metavar="CMD", type=nonempty, default=default,
                   help="run CMD and read the passphrase from its output (default: $TUCKBOX_PASSWORD_COMMAND)")
    p.add_argument("--key-file", metavar="FILE", type=nonempty, default=default,
                   help="use this key file (e.g. a write-only key) instead of the repository's passphrase keys")
    # after the command name --recover takes several files; before it, one per --recover (else it eats the command)
    p.add_argument("--recover", metavar="FILE", type=nonempty, nargs="+" if suppress else None, action="extend" if suppress else "append",
                   default=default, help="open with recovery-kit share files instead of a passphrase (enough shares of "
                                         "one kit; before the command name, repeat --recover for each file)")
    p.add_argument("-o", "--option", metavar="KEY=VALUE", action="append", default=default,
                   help="backend option, e.g. s3.endpoint=http://127.0.0.1:8333 (repeatable)")
    p.add_argument("--limit-upload", metavar="RATE", default=default, help="limit uploads to RATE per second, e.g. 2MiB (0: no limit)")
    p.add_argument("--limit-download", metavar="RATE", default=default, help="limit downloads to RATE per second (0: no limit)")
    p.add_argument("--connections", metavar="N", type=int, default=default, help="parallel storage transfers (default 4; 2 for local and SFTP repositories)")
    p.add_argument("--lock-wait", metavar="DURATION", type=_duration_text, default=default,
                   help="when another process holds a conflicting repository lock (a backup and a prune), wait up "
                        "to DURATION for it, e.g. 30m (default: stop at once)")
    p.add_argument("--json", action="store_true", default=default, help="machine-readable output (JSON)")
    p.add_argument("-q", "--quiet", action="store_true", default=default, help="print only errors and warnings")


def parse_duration(text: str) -> float:
    """Seconds from '90s', '15m', '1h', '1h30m' or a plain number of seconds."""
    if re.fullmatch(r"\s*\d+(?:\.\d+)?\s*", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])\s*", text)
    if not parts or not re.fullmatch(r"\s*(?:\d+(?:\.\d+)?\s*[hms]\s*)+", text):
        raise UsageError(f"'{display(text)}' is not a duration; write it like 90s, 15m, 1h or 1h30m")
    return sum(float(n) * {"s": 1, "m": 60, "h": 3600}[unit] for n, unit in parts)


def _duration_text(text: str) -> str:
    """argparse ``type`` of a duration option: checked when the command line is read (so that a typo fails
    every command, not only one that happens to need the value), kept as written."""
    try:
        parse_duration(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(e.message) from None
    return text


def lock_wait(args: argparse.Namespace) -> float:
    """--lock-wait in seconds (0: do not wait)."""
    text = opt(args, "lock_wait")
    return parse_duration(text) if text else 0.0


def say_waiting(text: str) -> None:
    print(f"note: {text}", file=sys.stderr)


def opt(args: argparse.Namespace, name: str, default: Any = None) -> Any:
    value = getattr(args, name, None)
    return default if value is None else value


def repo_url(args: argparse.Namespace) -> str:
    url = opt(args, "repo") or os.environ.get("TUCKBOX_REPOSITORY")
    if not url:
        raise UsageError("no repository given; use -r/--repo or set TUCKBOX_REPOSITORY")
    return url


def backend_options(args: argparse.Namespace) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in opt(args, "option", []) or []:
        if "=" not in item:
            raise UsageError(f"option '{item}' must look like KEY=VALUE")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


# secrets a backend takes from -o, and the environment variable that keeps them out of the process list
_SECRET_OPTIONS = {"webdav.password": "TUCKBOX_WEBDAV_PASSWORD", "tahoe.cap": "TUCKBOX_TAHOE_CAP"}
_TAHOE_CAP_IN_URL = re.compile(r"^tahoe://[^/]*/+URI(?::|%3A)", re.IGNORECASE)


def _warn_secrets_in_arguments(args: argparse.Namespace) -> None:
    """A secret given on the command line is readable by every user of the machine (``ps``, /proc) for as
    long as the command runs: say so, and where it belongs instead."""
    given = [(f"-o {k}=...", env) for k, env in _SECRET_OPTIONS.items() if backend_options(args).get(k)]
    for k in _SECRET_OPTIONS:
        add_secret(backend_options(args).get(k, ""))  # (kept out of TUCKBOX_DEBUG's output too)
    if _TAHOE_CAP_IN_URL.match(opt(args, "repo") or ""):
        given.insert(0, ("the Tahoe-LAFS capability in -r/--repo", "TUCKBOX_TAHOE_CAP (or TUCKBOX_REPOSITORY)"))
    for what, env in given:
        warn(f"{what} is a secret that other users of this machine can read in the process list while tuckbox "
             f"runs; set {env} instead")


def open_storage(args: argparse.Namespace) -> Backend:
    _warn_secrets_in_arguments(args)
    backend = open_backend(repo_url(args), backend_options(args))
    limit_up, limit_down = opt(args, "limit_upload"), opt(args, "limit_download")
    connections = opt(args, "connections")
    if connections is not None and connections < 1:
        raise UsageError("--connections must be at least 1")
    try:
        from ..backends.wrappers import wrap_backend
    except ImportError:  # pragma: no cover - wrappers ship with the package
        return backend
    retries: bool | dict[str, float] = not repo_url(args).startswith("memory:")
    # TEST-ONLY hook: TUCKBOX_TEST_FAULTS="rate=0.05,seed=7" (keys in tuckbox/testing/faults.py) puts a
    # FaultyBackend and exact crash/quota points directly around the real backend, under the retry wrapper,
    # so the test suite can prove real runs survive storage faults and kills. Never set it outside tests.
    faults = os.environ.get("TUCKBOX_TEST_FAULTS")
    if faults:
        from ..testing.faults import inject_faults

        backend, retries = inject_faults(backend, faults, retries)
    return wrap_backend(
        backend,
        retries=retries,
        limit_upload=parse_rate(limit_up, "--limit-upload") if limit_up else None,
        limit_download=parse_rate(limit_down, "--limit-download") if limit_down else None,
        connections=connections,
        notify=None if opt(args, "quiet", False) else _note,
    )


def _note(text: str) -> None:
    """Something the user should know while waiting (the storage is retried); stderr, never stdout."""
    print(f"tuckbox: note: {text}", file=sys.stderr, flush=True)


# passphrases read from a "\r\n"-ended file or command -> as read before that ending was stripped whole (with
# its "\r"): a repository made with such a file then still opens with it (see ``open_repository``)
_WITH_CR: dict[bytes, bytes] = {}


def _strip(secret: bytes) -> bytes:
    """A password file's or command's passphrase without its one line ending ("\n", or "\r\n" as a
    Windows editor writes it); everything else, other whitespace included, is part of the passphrase."""
    if secret.endswith(b"\r\n"):
        _WITH_CR[secret[:-2]] = secret[:-1]
        return secret[:-2]
    return secret[:-1] if secret.endswith(b"\n") else secret


def passphrase_from_sources(args: argparse.Namespace) -> bytes | None:
    """The passphrase from a flag, file, command or environment; None if none is configured.

    In the order README gives: --password-file, --password-command, $TUCKBOX_PASSWORD_FILE,
    $TUCKBOX_PASSWORD_COMMAND, $TUCKBOX_PASSWORD. A flag always beats the environment (a
    --password-command typed for one run is not overridden by the file a profile exports), and the two
    flags together are refused: which one was meant cannot be known."""
    pfile, pcmd = opt(args, "password_file"), opt(args, "password_command")
    if pfile and pcmd:
        raise UsageError("give either --password-file or --password-command, not both")
    if not pfile and not pcmd:
        pfile = os.environ.get("TUCKBOX_PASSWORD_FILE")
        pcmd = None if pfile else os.environ.get("TUCKBOX_PASSWORD_COMMAND")
    if pfile:
        try:
            with open(os.path.expanduser(pfile), "rb") as f:
                secret = _strip(f.read())
            if not secret:
                raise UsageError(f"the password file {display(pfile)} is empty; write the passphrase into it")
            return secret
        except OSError as e:
            raise UsageError(f"cannot read the password file {display(pfile)}: {e.strerror}") from None
    if pcmd:
        try:
            out = subprocess.run(pcmd, shell=True, check=True, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                 env=child_environment())
        except subprocess.CalledProcessError as e:
            raise UsageError(f"the password command failed with exit code {e.returncode}") from None
        secret = _strip(out.stdout)
        if not secret:
            raise UsageError("the password command printed no passphrase")
        return secret
    env = os.environ.get("TUCKBOX_PASSWORD")
    if env is not None:
        return os.fsencode(env)  # the variable's raw bytes, UTF-8 or not (as from a file or command)
    return None


def _tty_available() -> bool:
    try:
        with open("/dev/tty", "rb"):
            return sys.stdin.isatty()
    except OSError:
        return False


def ask_passphrase(args: argparse.Namespace, prompt: str = "Passphrase: ", confirm: bool = False) -> bytes:
    configured = passphrase_from_sources(args)
    if configured is not None:
        if not configured:
            raise UsageError("the configured passphrase is empty")
        return configured
    if not _tty_available():
        raise UsageError(
            "a passphrase is needed: set TUCKBOX_PASSWORD_FILE or TUCKBOX_PASSWORD_COMMAND, or run in a terminal"
        )
    first = getpass.getpass(prompt).encode()
    if not first:
        raise UsageError("an empty passphrase is not allowed")
    if confirm and getpass.getpass("Repeat passphrase: ").encode() != first:
        raise UsageError("the passphrases did not match; nothing was changed")
    return first


OPENED: list[Repository] = []


def report_problems() -> None:
    """Print, once, every damaged object the opened repositories skipped while reading, and their notes."""
    seen: set[str] = set()
    for repo in OPENED:
        for p in [*repo.problems, *repo.notes]:
            if p not in seen:
                seen.add(p)
                warn(p)


def _check_key_file(name: str, raw: bytes) -> None:
    """That the --key-file is one, with its name in the error (Repository.open only sees its bytes)."""
    try:
        keyfile_info(raw)
    except UnsupportedFormat as e:
        raise UnsupportedFormat(f"--key-file {display(name)}: {e.message}") from None
    except IntegrityError as e:
        raise IntegrityError(f"--key-file {display(name)}: {e.message}; check the path (key files are written by "
                             "'tuckbox key add --write-only')") from None


def open_repository(args: argparse.Namespace, *, load_index: bool = True, writes: bool = False) -> Repository:
    """The repository of ``args``, unlocked; ``writes``: the command will write to it (takes a lock)."""
    backend = open_storage(args)
    key_file = opt(args, "key_file")
    raw_key: bytes | None = None
    if key_file:
        try:
            with open(os.path.expanduser(key_file), "rb") as f:
                raw_key = f.read()
        except OSError as e:
            raise UsageError(f"cannot read the key file {display(key_file)}: {e.strerror}") from None
    cache: dict[str, bytes] = {}

    def passphrase() -> bytes:
        if "pw" not in cache:
            cache["pw"] = ask_passphrase(args)
        return cache["pw"]

    recover = opt(args, "recover")
    if recover:
        if raw_key is not None:
            raise UsageError("use either --key-file or --recover, not both")
        from ..repository.keyring import open_with_shares

        repo = open_with_shares(backend, recover, load_index=load_index, writes=writes)
    else:
        if raw_key is not None:
            _check_key_file(key_file, raw_key)
        try:
            repo = Repository.open(backend, passphrase, key_file=raw_key, load_index=load_index, writes=writes)
        except WrongPassphrase:
            with_cr = _WITH_CR.get(cache.get("pw", b""))
            if with_cr is None:
                raise
            repo = Repository.open(backend, lambda: with_cr, key_file=raw_key, load_index=load_index, writes=writes)
    OPENED.append(repo)
    connections = opt(args, "connections")
    if connections:
        repo.connections = connections
    elif repo_url(args).startswith("sftp://") or ("://" not in repo_url(args) and not repo_url(args).startswith("rclone:")):
        # a local disk gains nothing from more writers, nor does SFTP's one pipelined SSH connection;
        # each transfer holds a pack in memory
        repo.connections = 2
    return repo


def snapshot_paths(given: str) -> list[bytes]:
    """What a path in a snapshot given on the command line can mean, absolute and normalized: the name
    'ls' shows as ``given`` (escapes such as ``\\xff`` decoded), then ``given`` exactly as typed."""
    return [os.path.normpath(os.path.abspath(os.path.expanduser(form))) for form in given_forms(given)]


def emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, sort_keys=True) + "\n")
    sys.stdout.flush()


_LIST_OPEN = [False]  # a document of ls, find or diff is being streamed: its list is open


def open_json_list(key: str) -> None:
    """Start ls', find's or diff's document, ``{"KEY": [``, whose entries are streamed as they are read; a
    failure or an interrupt before ``close_json_list`` closes it with ``"error"`` (``close_json_list_with_error``),
    so that standard output stays one valid JSON document."""
    sys.stdout.write("{" + json.dumps(key) + ": [")
    _LIST_OPEN[0] = True


def close_json_list(tail: dict[str, Any]) -> None:
    """End the streamed list and the document with ``tail``'s fields."""
    _LIST_OPEN[0] = False
    sys.stdout.write("\n], " + json.dumps(tail, sort_keys=True)[1:] + "\n")
    sys.stdout.flush()


def forget_json_list() -> None:
    """A new command starts (a test runs several in one process): no document of an earlier one is open."""
    _LIST_OPEN[0] = False


def close_json_list_with_error(error: dict[str, Any]) -> bool:
    """The command failed with its document's list open: end it with ``"error": {...}`` (what is listed so far
    stays, cut short). Whether there was such a document."""
    if not _LIST_OPEN[0]:
        return False
    _LIST_OPEN[0] = False
    sys.stdout.write("\n], " + json.dumps({"error": error, "complete": False}, sort_keys=True)[1:] + "\n")
    sys.stdout.flush()
    return True


def out(args: argparse.Namespace, text: str) -> None:
    if not opt(args, "quiet", False):
        print(text)


def warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr)


def patterns_from_file(file: str) -> list[str]:
    """The patterns of an --exclude-file: one per line; blank lines and # comments skipped."""
    try:
        with open(os.path.expanduser(file), encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UsageError(f"cannot read the exclude file {display(file)}: {e.strerror}") from None
    patterns = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    for p in patterns:
        if p in (".", "..") or p.startswith(("./", "../")):
            raise UsageError(f"the exclude file {display(file)} has the pattern {display(p)}, a path from the current "
                             "directory, which a file cannot mean: write it from / (or as a name or the end of a path, "
                             "without ./)")
    return patterns


def add_latest_filters(p: argparse.ArgumentParser) -> None:
    """--host/--tag/--path: which snapshots 'latest' chooses among (a repository that several hosts back up
    into holds their snapshots side by side; 'latest' alone is the newest of any host's)."""
    p.add_argument("--host", action="append", default=[], metavar="HOST",
                   help="'latest' is the newest snapshot of this host (repeatable)")
    p.add_argument("--tag", action="append", default=[], metavar="TAG",
                   help="'latest' is the newest snapshot with this tag (repeatable)")
    p.add_argument("--path", action="append", default=[], type=nonempty, metavar="PATH", dest="snapshot_path",
                   help="'latest' is the newest snapshot of this backed-up path (repeatable)")


def _filters(args: argparse.Namespace | None) -> tuple[list[str], list[str], list[str]]:
    if args is None:
        return [], [], []
    return list(getattr(args, "host", [])), list(getattr(args, "tag", [])), list(getattr(args, "snapshot_path", []))


def _matching(snaps: list[Snapshot], hosts: list[str], tags: list[str], paths: list[str]) -> list[Snapshot]:
    wanted = {form.rstrip(b"/") or b"/" for p in paths for form in snapshot_paths(p)}
    return [
        s for s in snaps
        if (not hosts or s.host in hosts) and (not tags or set(tags) & set(s.tags))
        and (not wanted or wanted & set(s.paths))
    ]


def _describe(hosts: list[str], tags: list[str], paths: list[str]) -> str:
    parts = [f"--host {display(h)}" for h in hosts] + [f"--tag {display(t)}" for t in tags]
    return " ".join(parts + [f"--path {display(p)}" for p in paths])


def named_snapshot(
    repo: Repository, ref: str, snaps: list[Snapshot] | None = None, args: argparse.Namespace | None = None
) -> Snapshot:
    """The snapshot ``ref`` names ('latest' or an id prefix) for a command that reads it; 'latest' among the
    snapshots ``args``' --host/--tag/--path select (``add_latest_filters``). A checkpoint (of a backup that did
    not finish) is pointed out: the files that backup had not stored yet are not in it; so is a 'latest' of
    one host chosen, unfiltered, among several hosts' snapshots."""
    snaps = repo.snapshots() if snaps is None else snaps
    hosts, tags, paths = _filters(args)
    filtered = bool(hosts or tags or paths)
    if filtered and ref == "latest":
        chosen = _matching(snaps, hosts, tags, paths)
        if not chosen:
            raise SnapshotNotFound(f"no snapshot matches {_describe(hosts, tags, paths)} in {repo.backend.location}; "
                                   "see 'tuckbox snapshots'")
        snap = repo.find_snapshot(ref, chosen)
    else:
        snap = repo.find_snapshot(ref, snaps)
        if filtered and not _matching([snap], hosts, tags, paths):
            raise UsageError(f"snapshot {snap.short_id} (host {display(snap.host)}) does not match "
                             f"{_describe(hosts, tags, paths)}; those choose what 'latest' means: give no filter "
                             "with an id")
        if ref == "latest" and len(others := {s.host for s in snaps if not s.partial} - {snap.host}) > 0:
            repo.notes.append(f"'latest' is snapshot {snap.short_id} of host {display(snap.host)}; the repository also "
                              f"holds snapshots of {len(others)} other host{'s' if len(others) > 1 else ''}: "
                              "--host chooses whose")
    if snap.partial:
        saved = f"a checkpoint, saved at {local_time(snap.time)} by a backup that had not finished"
        if ref == "latest":  # (only when no backup has finished: 'latest' is the newest complete snapshot if any)
            note = f"'latest' is snapshot {snap.short_id}, {saved} (no backup has finished yet)"
        else:
            note = f"snapshot {snap.short_id} is {saved}"
        repo.notes.append(f"{note}: it holds only what that backup had stored by then "
                          "('ls -l' marks the directories it holds only part of: incomplete)")
    return snap


def select_snapshots(args: argparse.Namespace, snaps: list[Snapshot]) -> list[Snapshot]:
    """The snapshots matching --host, --tag and --path (each repeatable; none given: all)."""
    return _matching(snaps, args.host, args.tag, args.path)
