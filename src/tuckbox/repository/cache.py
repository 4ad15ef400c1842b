"""The local cache: copies of content-addressed repository objects, and local state.

Layout under ``$TUCKBOX_CACHE_DIR`` or ``$XDG_CACHE_HOME/tuckbox`` (default
``~/.cache/tuckbox``), one directory per repository id::

    <repo id>/index/<name>     sealed index objects, as stored
    <repo id>/trees/<name>     whole tree (metadata) packs, as stored
    <repo id>/snapshots/<name> snapshot objects, as stored
    <repo id>/state/...        files cache, backup journals, the loaded master index (not copies)

Every cached copy is named by the BLAKE3 hash of its bytes, so it can be
verified on every read; a copy that fails is deleted and fetched again. The
cache is never the only copy of anything and can be deleted at any time.
"""

from __future__ import annotations

import os
import pwd
import secrets
from pathlib import Path

import blake3


class NoHomeError(OSError):
    """No cache directory can be named: no TUCKBOX_CACHE_DIR, no XDG_CACHE_HOME, and no home directory."""


def cache_root() -> Path:
    explicit = os.environ.get("TUCKBOX_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):  # (the XDG spec: a relative path is invalid and ignored)
        return Path(xdg) / "tuckbox"
    home = os.environ.get("HOME", "")
    if not os.path.isabs(home):  # unset, empty or relative (HOME= in a unit file): never the working directory
        try:
            home = pwd.getpwuid(os.getuid()).pw_dir
        except KeyError:  # a uid without a passwd entry (a container, systemd's DynamicUser=)
            home = ""
    if not os.path.isabs(home):
        raise NoHomeError(f"no home directory: HOME is not set and user {os.getuid()} has none")
    return Path(home) / ".cache" / "tuckbox"


def make_state_dir(path: Path) -> None:
    """Make a directory of the cache's local state (and its parents) unless it exists; OSError if it cannot.

    A file in its place is removed first: tuckbox of before the files cache became a directory of
    streams kept it as one file, ``state/files-cache``, which would otherwise keep every later backup
    from writing one (each reading every file again, in silence). Nothing in the cache is the only copy
    of anything.
    """
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:  # (with exist_ok: something that is not a directory is in the way)
        path.unlink()
        path.mkdir(mode=0o700, exist_ok=True)


class Cache:
    def __init__(self, repo_id: str, root: Path | None = None) -> None:
        self.enabled = True
        self.problem = ""  # why the cache cannot be used, when it cannot
        try:
            self.dir = (root or cache_root()) / repo_id
        except NoHomeError as e:
            self.dir = Path("~/.cache/tuckbox") / repo_id  # (only named in the message; never used)
            self.enabled = False
            self.problem = str(e)
            return
        try:
            # private from the top: the cache holds plaintext metadata (paths, hosts, times); made 0700 here, not
            # 0755 as mkdir's parents would be (an existing directory's mode is the user's to keep)
            self.dir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.dir.mkdir(exist_ok=True, mode=0o700)
            for sub in ("index", "trees", "snapshots", "state"):
                (self.dir / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            self.enabled = False  # a read-only home must not stop a restore
            self.problem = e.strerror or type(e).__name__

    def unwritable(self) -> str:
        """Why the cache can be read but not written ("" when it can), e.g. a read-only file system."""
        if not self.enabled:
            return ""
        probe = self.state_dir / f".probe-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError as e:
            return e.strerror or type(e).__name__
        try:
            probe.unlink()
        except OSError:
            pass
        return ""

    @property
    def state_dir(self) -> Path:
        return self.dir / "state"

    def _path(self, kind: str, name: str) -> Path:
        return self.dir / kind / name

    def get(self, kind: str, name: str) -> bytes | None:
        if not self.enabled:
            return None
        path = self._path(kind, name)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if blake3.blake3(data).hexdigest() != name:
            try:
                path.unlink()
            except OSError:
                pass
            return None
        return data

    def put(self, kind: str, name: str, data: bytes) -> None:
        if not self.enabled:
            return
        path = self._path(kind, name)
        tmp = path.with_name(f".tmp-{secrets.token_hex(6)}")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError:
            try:
                tmp.unlink()
            except OSError:
                pass

    def read_state(self, name: str) -> bytes | None:
        """A local state file (not a copy of a repository object: its reader verifies it)."""
        if not self.enabled:
            return None
        try:
            return (self.state_dir / name).read_bytes()
        except OSError:
            return None

    def write_state(self, name: str, data: bytes) -> None:
        """Replace a local state file atomically (a crash leaves the old one or the new one)."""
        self.put("state", name, data)

    def names(self, kind: str) -> set[str]:
        if not self.enabled:
            return set()
        try:
            return {p.name for p in (self.dir / kind).iterdir() if not p.name.startswith(".")}
        except OSError:
            return set()

    def discard(self, kind: str, name: str) -> None:
        try:
            self._path(kind, name).unlink()
        except OSError:
            pass
