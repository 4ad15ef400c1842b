"""The repository's keys: list, add, change passphrase, remove; write-only keys; recovery shares.

``keys/`` holds two kinds of object (docs/keys.md):

* passphrase key files (JSON, crypto.keyfile): full keys, opened with a passphrase;
* sealed *key records* describing a write-only key that lives outside the repository::

      b"TBKR" | version u8 | seal_to(metadata public key, msgpack(record), purpose "key record")

  The record holds the key's id (the BLAKE3 name of its key file), kind, host, user, created, comment and
  whether the file has a passphrase - never key material. Only a full key can read it. The opener skips
  records (they are not JSON key files).

A write-only key also keeps a local log of the snapshots it saved (``state/own-work/<key id>.jsonl`` in the
repository's cache directory), which is how it "lists its own work" without being able to read snapshots.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import msgpack

from ..crypto import aead
from ..crypto.keyfile import keyfile_info, make_keyfile, needs_passphrase, open_keyfile
from ..crypto.keys import KeyKind, derive_keyset
from ..crypto.recovery import ParsedShare, check_repository, combine_kits, parse_shares
from ..errors import AccessDenied, IntegrityError, ObjectNotFound, UnsupportedFormat, UsageError, WrongPassphrase
from ..snapshot.model import Snapshot
from ..text import display_path
from ..types import Backend, ObjectType
from .repo import Repository, object_name

RECORD_MAGIC = b"TBKR"
RECORD_VERSION = 1
RECORD_PURPOSE = b"key record"
MAX_SHARE_FILE = 256 * 1024


@dataclass(frozen=True)
class KeyEntry:
    id: str  # the key's id: BLAKE3 name of its key file
    object: str  # its object name under keys/ (the key file itself, or the record describing it)
    kind: str  # "full" | "write-only" | "unknown" (a record this key cannot read)
    host: str = ""
    user: str = ""
    created: str = ""
    comment: str = ""
    protected: bool = True  # has a passphrase
    stored: str = "repository"  # "repository": the key file is in keys/; "outside": only a record is
    in_use: bool = False

    @property
    def short_id(self) -> str:
        return self.id[:8]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "short_id": self.short_id, "kind": self.kind, "host": self.host, "user": self.user, "created": self.created,
            "comment": self.comment, "passphrase": self.protected, "stored": self.stored, "in_use": self.in_use,
        }


# --------------------------------------------------------------------------- records


def seal_record(meta_public: bytes, doc: dict[str, Any]) -> bytes:
    body = aead.seal_to(meta_public, msgpack.packb(doc), RECORD_PURPOSE)
    return RECORD_MAGIC + bytes((RECORD_VERSION,)) + body


def open_record(meta_private: bytes, raw: bytes, name: str) -> dict[str, Any]:
    if raw[:4] != RECORD_MAGIC or len(raw) < 5 or raw[4] != RECORD_VERSION:
        raise IntegrityError(f"key record {name[:8]} is not a tuckbox key record")
    plain = aead.open_sealed_to(meta_private, raw[5:], RECORD_PURPOSE, what=f"key record {name[:8]}")
    try:
        doc = msgpack.unpackb(plain)
        if not isinstance(doc, dict) or doc.get("v") != 1:
            raise ValueError
        return doc
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise IntegrityError(f"key record {name[:8]} is malformed") from None


def _entry_from_object(repo: Repository, name: str, raw: bytes) -> KeyEntry | None:
    in_use = bool(repo.key_name) and name == repo.key_name
    if raw[:4] == RECORD_MAGIC:
        if repo.keys.meta_private is None:
            return KeyEntry(name, name, "unknown", stored="outside")
        doc = open_record(repo.keys.meta_private, raw, name)
        key_id = str(doc.get("key", name))
        return KeyEntry(
            key_id, name, str(doc.get("kind", "write-only")), str(doc.get("host", "")), str(doc.get("user", "")),
            str(doc.get("created", "")), str(doc.get("comment", "")), bool(doc.get("protected", False)),
            stored="outside", in_use=bool(repo.key_name) and key_id == repo.key_name,
        )
    info = keyfile_info(raw)
    if info.repository != repo.config.id:
        return None  # left by an 'init' that failed after its key: it opens no repository (see repository/unlock.py)
    return KeyEntry(name, name, info.kind, info.host, info.user, info.created, info.comment, info.protected,
                    in_use=in_use)


def list_keys(repo: Repository) -> list[KeyEntry]:
    """Every key of the repository, oldest first. Objects that cannot be read as a key are skipped."""
    entries: list[KeyEntry] = []
    for info in repo.backend.list(ObjectType.KEY):
        try:
            raw = repo.backend.load(ObjectType.KEY, info.name)
            entry = _entry_from_object(repo, info.name, raw)
            if entry is not None:
                entries.append(entry)
        except (IntegrityError, ObjectNotFound, UnsupportedFormat):
            continue  # damaged, vanished, or from a newer tuckbox: not listed
    return sorted(entries, key=lambda e: (e.created, e.id))


def resolve(entries: Sequence[KeyEntry], ref: str) -> KeyEntry:
    ref = ref.strip().lower()
    if len(ref) < 4 or any(c not in "0123456789abcdef" for c in ref):
        raise UsageError(f"'{ref}' is not a key id; give at least 4 hex digits of an id from 'tuckbox key list'")
    matches = [e for e in entries if e.id.startswith(ref)]
    if not matches:
        raise UsageError(f"no key {ref} in this repository; see 'tuckbox key list'")
    if len(matches) > 1:
        raise UsageError(f"key id {ref} is ambiguous ({len(matches)} match); give more digits")
    return matches[0]


# --------------------------------------------------------------------------- changes


@dataclass(frozen=True)
class Origin:
    """Who and when, recorded in a new key."""

    created: str
    host: str
    user: str


def _refuse_a_passphrase_in_use(repo: Repository, passphrase: bytes, passwd: bool = False) -> None:
    """A passphrase that already opens one of the repository's keys is refused: two keys with one passphrase
    would leave the old one working after 'key passwd' changed "the" passphrase (one key derivation per key).
    ``passwd``: for 'key passwd', whose interrupted run (new key stored, old one not yet removed) leaves
    exactly this state: the message says how to finish it."""
    for info in repo.backend.list(ObjectType.KEY):
        try:
            raw = repo.backend.load(ObjectType.KEY, info.name)
            if not needs_passphrase(raw) or keyfile_info(raw).repository != repo.config.id:
                continue
            open_keyfile(raw, passphrase)
        except (WrongPassphrase, IntegrityError, ObjectNotFound):
            continue
        hint = ""
        if passwd and info.name != repo.key_name:
            hint = (f" (if a 'key passwd' to it was interrupted, finish it: open the repository with that passphrase "
                    f"and run 'tuckbox key remove {repo.key_name[:8]}')")
        raise UsageError(f"that passphrase already opens key {info.name[:8]}; choose another one{hint}")


def add_passphrase_key(repo: Repository, passphrase: bytes, origin: Origin, comment: str = "") -> KeyEntry:
    repo.keys.require_full("add a key")
    _refuse_a_passphrase_in_use(repo, passphrase)
    name, raw = repo.add_key(repo.keys, passphrase, created=origin.created, host=origin.host, user=origin.user,
                             comment=comment)
    entry = _entry_from_object(repo, name, raw)
    assert entry is not None  # (made for this repository)
    return entry


def _write_new_private_file(path: Path, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{display_path(str(path))} already exists; choose a new file name for the key") from None
    except OSError as e:
        raise UsageError(f"cannot create the key file {display_path(str(path))}: {e.strerror}") from None
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError as e:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise UsageError(f"cannot write the key file {display_path(str(path))}: {e.strerror}") from None
    os.close(fd)


def add_write_only_key(
    repo: Repository, output: Path, passphrase: bytes | None, origin: Origin, comment: str = ""
) -> KeyEntry:
    """Write a write-only key file to ``output`` (mode 0600) and a sealed record of it into keys/."""
    repo.keys.require_full("make a write-only key")
    wo = repo.keys.write_only()
    raw = make_keyfile(wo, passphrase, repository_id=repo.config.id, created=origin.created, host=origin.host,
                       user=origin.user, comment=comment)
    key_id = object_name(raw)
    record = seal_record(repo.keys.meta_public, {
        "v": 1, "key": key_id, "kind": KeyKind.WRITE_ONLY.value, "host": origin.host, "user": origin.user,
        "created": origin.created, "comment": comment, "protected": passphrase is not None,
    })
    _write_new_private_file(output, raw)
    record_name = object_name(record)
    try:
        repo.backend.save(ObjectType.KEY, record_name, record)
    except BaseException:
        output.unlink(missing_ok=True)
        raise
    return KeyEntry(key_id, record_name, KeyKind.WRITE_ONLY.value, origin.host, origin.user, origin.created,
                    comment, passphrase is not None, stored="outside")


def remove_key(repo: Repository, ref: str) -> KeyEntry:
    """Remove a key file (or a write-only key's record). Never the key in use, never the last full key."""
    repo.keys.require_full("remove keys")
    entries = list_keys(repo)
    entry = resolve(entries, ref)
    if entry.in_use:
        raise UsageError(f"key {entry.short_id} is the key in use; open the repository with another key to remove "
                         "it, or use 'tuckbox key passwd' to change its passphrase")
    if entry.kind == KeyKind.FULL.value and entry.stored == "repository":
        others = [e for e in entries if e.kind == KeyKind.FULL.value and e.stored == "repository" and e.id != entry.id]
        if not others:
            raise UsageError(f"key {entry.short_id} is the last full key of {repo.backend.location}; without it "
                             "nothing could be restored: add another with 'tuckbox key add' first")
    repo.backend.remove(ObjectType.KEY, entry.object)
    return entry


def change_passphrase(repo: Repository, passphrase: bytes, origin: Origin) -> tuple[KeyEntry, str]:
    """Replace the passphrase key in use: store a new key file, check it opens, then remove the old one."""
    repo.keys.require_full("change a passphrase")
    if not repo.key_name:
        raise UsageError("no passphrase key is in use (the repository was opened with --recover); "
                         "set a passphrase with 'tuckbox key add --recover ...'")
    try:
        old_raw = repo.backend.load(ObjectType.KEY, repo.key_name)
    except ObjectNotFound:
        raise UsageError("the key in use is a key file outside the repository; 'key passwd' changes passphrase keys "
                         "stored in the repository") from None
    old = keyfile_info(old_raw)
    _refuse_a_passphrase_in_use(repo, passphrase, passwd=True)
    name, raw = repo.add_key(repo.keys, passphrase, created=origin.created, host=origin.host, user=origin.user,
                             comment=old.comment)
    stored = repo.backend.load(ObjectType.KEY, name)
    check = open_keyfile(stored, passphrase)
    if check.root != repo.keys.root:  # pragma: no cover - make_keyfile/open_keyfile round trip
        repo.backend.remove(ObjectType.KEY, name)
        raise IntegrityError("the new key file did not open correctly; the old passphrase is unchanged")
    old_name = repo.key_name
    repo.backend.remove(ObjectType.KEY, old_name)
    repo.key_name = name
    entry = _entry_from_object(repo, name, raw)
    assert entry is not None  # (made for this repository)
    return entry, old_name


# --------------------------------------------------------------------------- recovery shares


def read_share_files(files: Sequence[str]) -> list[ParsedShare]:
    parsed: list[ParsedShare] = []
    for f in files:
        path = os.path.expanduser(f)
        try:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_SHARE_FILE + 1)
        except OSError as e:
            raise UsageError(f"cannot read the share file {display_path(f)}: {e.strerror}") from None
        if len(raw) > MAX_SHARE_FILE:
            raise UsageError(f"{display_path(f)} is too large to be a recovery share")
        parsed.extend(parse_shares(raw.decode("utf-8", "replace"), display_path(f)))
    return parsed


def open_with_shares(
    backend: Backend, files: Sequence[str], *, load_index: bool = True, writes: bool = False
) -> Repository:
    """Open a repository with recovery-kit shares instead of a passphrase.

    The share files must name this repository; the combined secret must authenticate its config.
    """
    if not files:
        raise UsageError("--recover needs at least one share file")
    shares = read_share_files(files)
    config, doc = Repository.read_config(backend)
    shares = check_repository(shares, config.id, backend.location)
    for secret in combine_kits(shares):  # (shares of several kits: each complete one in turn)
        keys = derive_keyset(secret)
        try:
            config.verify(doc, keys.config_key, backend.location)
        except IntegrityError:
            continue
        return Repository.open(backend, None, keys=keys, load_index=load_index, writes=writes)
    raise AccessDenied(
        f"the recovery shares do not unlock repository {config.id[:8]} at {backend.location}: they belong to "
        "another repository's kit (or the repository's config was modified)"
    )


# --------------------------------------------------------------------------- a write-only key's own work


@dataclass
class OwnSnapshot:
    id: str
    time: str
    host: str
    user: str
    paths: list[str]
    tags: list[str] = field(default_factory=list)
    partial: bool = False
    summary: dict[str, Any] = field(default_factory=dict)
    present: bool = True  # still in the repository (checked by name; it cannot be read)

    @property
    def short_id(self) -> str:
        return self.id[:8]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "short_id": self.short_id, "time": self.time, "host": self.host, "user": self.user,
            "tags": self.tags, "paths": self.paths, "partial": self.partial, "summary": self.summary,
            "present": self.present, "own_work": True,
        }


def _own_log(repo: Repository) -> Path | None:
    if not repo.cache.enabled:
        return None
    return repo.cache.state_dir / "own-work" / f"{repo.key_name or 'unnamed'}.jsonl"


def _append_own(repo: Repository, doc: dict[str, Any]) -> bool:
    path = _own_log(repo)
    if path is None:
        return False
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, json.dumps(doc, sort_keys=True).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        return False
    return True


def record_own_snapshot(repo: Repository, snap: Snapshot, name: str) -> bool:
    """Remember a snapshot a write-only key is about to save as ``name`` (it cannot read it back).

    Called before the snapshot is stored, so a crash cannot leave a stored snapshot that its key
    does not know about; one that was recorded but never stored is listed as gone. False if there
    is no cache.
    """
    return _append_own(repo, {
        "id": name, "time": snap.time, "host": snap.host, "user": snap.user,
        "paths": [p.decode("utf-8", "backslashreplace") for p in snap.paths],
        "tags": list(snap.tags), "partial": snap.partial, "summary": snap.summary,
    })


def withdraw_own_snapshot(repo: Repository, name: str) -> bool:
    """Forget a recorded snapshot whose save failed (and that is not in the repository)."""
    return _append_own(repo, {"id": name, "withdrawn": True})


def own_snapshots(repo: Repository) -> list[OwnSnapshot]:
    """The snapshots this key saved from this machine, oldest first, each marked present or gone."""
    path = _own_log(repo)
    items: dict[str, OwnSnapshot] = {}
    if path is not None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            lines = []
        for line in lines:
            try:
                d = json.loads(line)
                if d.get("withdrawn"):
                    items.pop(str(d["id"]), None)
                    continue
                items[d["id"]] = OwnSnapshot(
                    str(d["id"]), str(d["time"]), str(d["host"]), str(d["user"]), [str(p) for p in d["paths"]],
                    [str(t) for t in d.get("tags", [])], bool(d.get("partial", False)), dict(d.get("summary", {})),
                )
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line after a crash
    stored = set(repo.snapshot_names())
    for item in items.values():
        item.present = item.id in stored
    return sorted(items.values(), key=lambda s: (s.time, s.id))

