"""The repository: opening and creating, blobs with deduplication, indexes, snapshots.

Write order invariants (docs/design.md "Crash consistency"):
  init:     keys/<key> before config (config's presence means "a repository")
  backup:   packs -> index naming them -> snapshot naming their trees
Objects are never modified; every name is the BLAKE3 hash of the stored bytes
(except ``config`` and locks).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import blake3

from ..backends.local import local_root
from ..crypto import aead
from ..crypto.keyfile import keyfile_info, make_keyfile, open_keyfile
from ..crypto.keys import ROOT_LEN, KeyKind, KeySet, derive_keyset
from ..errors import (
    IntegrityError,
    NotARepository,
    ObjectExists,
    ObjectNotFound,
    RepositoryExists,
    RepositoryNotFound,
    SnapshotNotFound,
    TuckboxError,
    UnsupportedFormat,
    UsageError,
)
from ..pack.format import PackKey
from ..snapshot import model as snapmodel
from ..snapshot.model import Snapshot
from ..text import display_path
from ..types import Backend, BlobType, ObjectType
from .cache import Cache
from .config import Config
from .index import MasterIndex, PackRecord, RawPack, decode_index_raw, encode_index
from .journal import PackJournal
from .packer import Packer
from .packproc import PackProcess, open_packer
from .snapcache import SnapshotCache
from .unlock import PassphraseSource, unlock

TREE_PACK_CACHE = 24 << 20  # bytes of whole tree packs kept in memory
# the most a tree blob may hold (a directory of millions of entries); a data blob holds at most one chunk. Any
# key writes the index that gives a blob's length, and the blob is decompressed into that much memory before
# its id can be checked: a few KB of zeros must not make a restore take tens of GB
MAX_TREE_BLOB = 1 << 30
INDEX_SNAPSHOT = "master-index"  # the cache's copy of the loaded master index (state/)


def object_name(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


class Repository:
    def __init__(self, backend: Backend, config: Config, keys: KeySet, key_name: str = "") -> None:
        self.backend = backend
        self.config = config
        self.keys = keys
        self.key_name = key_name
        self.cache = Cache(config.id)
        self.index = MasterIndex()
        self._pack_keys: dict[str, PackKey] = {}
        self._tree_packs: dict[str, bytes] = {}
        self._damaged_packs: set[str] = set()  # tree packs that failed their hash: read blob by blob
        # check: tree packs come from storage, never from the local cache, whose copy would hide damage there
        self.trees_from_storage = False
        self._index_loaded = False
        self._snapcache = SnapshotCache(self.cache, aead.hkdf(keys.index_key, b"tuckbox local snapshot cache"))
        self._lock = threading.Lock()
        self.connections = 4
        self.problems: list[str] = []  # damaged objects skipped while reading (reported as warnings)
        self.notes: list[str] = []  # what the user should know that is no damage (also reported as warnings)
        self.damaged_snapshots: dict[str, str] = {}  # name -> why: stored, but cannot be read (forget removes them)
        # called before every index and snapshot this process writes (the held lock's ensure_held): a run
        # whose lock lapsed must not record anything that may name data a prune removed meanwhile
        self.guard: Callable[[], None] | None = None

    # ---------------------------------------------------------------- init / open

    @classmethod
    def check_room(cls, backend: Backend) -> None:
        """Raise RepositoryExists if ``backend`` already holds a repository (or what looks like one's data)."""
        if backend.exists():
            try:
                backend.stat(ObjectType.CONFIG, "config")
                raise RepositoryExists(f"a repository already exists at {backend.location}")
            except ObjectNotFound:
                pass
            if any(True for _ in backend.list(ObjectType.PACK)):
                raise RepositoryExists(f"{backend.location} holds packs but no config; refusing to initialise over it")

    @classmethod
    def init(
        cls,
        backend: Backend,
        passphrase: bytes,
        *,
        created: str,
        host: str,
        user: str,
        config: Config | None = None,
    ) -> "Repository":
        cls.check_room(backend)
        backend.create()
        cfg = config or Config.new(created)
        keys = derive_keyset(os.urandom(ROOT_LEN))
        keyfile = make_keyfile(keys, passphrase, repository_id=cfg.id, created=created, host=host, user=user)
        key_name = object_name(keyfile)
        backend.save(ObjectType.KEY, key_name, keyfile)
        try:
            backend.save(ObjectType.CONFIG, "config", cfg.encode(keys.config_key))
        except ObjectExists:
            backend.remove(ObjectType.KEY, key_name)
            raise RepositoryExists(f"a repository was created at {backend.location} at the same time") from None
        except TuckboxError:  # (a full disk): the key of a repository that does not exist goes too
            with contextlib.suppress(TuckboxError):
                backend.remove(ObjectType.KEY, key_name)
            raise
        return cls(backend, cfg, keys, key_name)

    @classmethod
    def read_config(cls, backend: Backend) -> tuple[Config, dict]:
        try:
            raw = backend.load(ObjectType.CONFIG, "config")
        except ObjectNotFound:
            if not backend.exists():
                disk = " (on a removable disk: is it mounted?)" if local_root(backend) is not None else ""
                raise RepositoryNotFound(
                    f"no repository at {backend.location}{disk}; check the path, or create one with 'tuckbox init'"
                ) from None
            raise NotARepository(
                f"{backend.location} is not a tuckbox repository (it has no config); check the path, or run 'tuckbox init'"
            ) from None
        return Config.decode_unverified(raw, backend.location)

    @classmethod
    def open(
        cls,
        backend: Backend,
        passphrase: PassphraseSource | None,
        *,
        key_file: bytes | None = None,
        keys: KeySet | None = None,
        load_index: bool = True,
        writes: bool = False,
    ) -> "Repository":
        """Open with a passphrase (tried on every passphrase key), a key file, or a key set
        already recovered (e.g. from recovery-kit shares). ``writes``: the caller will write (a lock at
        least), so storage that must find something out before its first save starts now (S3's probes),
        while the key is being derived."""
        config, doc = cls.read_config(backend)
        prepare = getattr(backend, "prepare_writes", None) if writes else None
        if callable(prepare):
            prepare()
        key_name = ""
        if keys is not None:
            pass
        elif key_file is not None:
            info = keyfile_info(key_file)
            if info.repository != config.id:
                raise UsageError(
                    f"the key file belongs to repository {info.repository[:8]}, not to {backend.location} ({config.id[:8]})"
                )
            pw = passphrase() if (info.protected and passphrase) else None
            if info.protected and pw is None:
                raise UsageError("the key file needs a passphrase; set TUCKBOX_PASSWORD_FILE or use a terminal")
            keys, key_name = open_keyfile(key_file, pw), object_name(key_file)
        else:
            keys, key_name = unlock(backend, passphrase, config.id)
        config.verify(doc, keys.config_key, backend.location)
        repo = cls(backend, config, keys, key_name)
        if load_index:
            repo.load_index()
        return repo

    def add_key(
        self, keys: KeySet, passphrase: bytes | None, *, created: str, host: str, user: str, comment: str = ""
    ) -> tuple[str, bytes]:
        keyfile = make_keyfile(
            keys, passphrase, repository_id=self.config.id, created=created, host=host, user=user, comment=comment
        )
        name = object_name(keyfile)
        self.backend.save(ObjectType.KEY, name, keyfile)
        return name, keyfile

    # ---------------------------------------------------------------- index

    def load_index(self) -> None:
        """Load every index object not loaded yet: first from the cache's snapshot of the whole master
        index (valid only if every index object it covers is still listed), the rest one by one; then
        the snapshot is replaced if anything was added."""
        self._index_loaded = True
        names = {i.name for i in self.backend.list(ObjectType.INDEX)}
        for stale in self.cache.names("index") - names:
            self.cache.discard("index", stale)
        if not self.index.index_names and not len(self.index):
            snapshot = self.cache.read_state(INDEX_SNAPSHOT)
            if snapshot is not None:
                self.index.load_snapshot(snapshot, self._snapshot_key(), names)
        todo = sorted(names - self.index.index_names)

        def fetch(name: str) -> tuple[str, list[RawPack]]:
            raw = self.cache.get("index", name)
            if raw is None:
                raw = self.backend.load(ObjectType.INDEX, name)
                if object_name(raw) != name:
                    raise IntegrityError(f"index {name[:8]} does not match its name: it was modified or damaged")
                self.cache.put("index", name, raw)
            return name, decode_index_raw(raw, self.keys.index_key, name)

        def fetch_safely(name: str) -> tuple[str, list[RawPack] | None]:
            try:
                return fetch(name)
            except (IntegrityError, UnsupportedFormat) as e:
                # a damaged index must not make the rest of the repository unreadable
                self.problems.append(f"index {name[:8]} skipped: {e}; 'tuckbox repair index' rebuilds it from the packs")
                return name, None

        added = False
        with ThreadPoolExecutor(self.connections) as pool:
            for name, packs in pool.map(fetch_safely, todo):
                if packs is None:
                    continue
                added = True
                try:
                    for pack in packs:
                        self.index.add_raw(pack)
                except IntegrityError as e:
                    self.problems.append(f"index {name[:8]} partly skipped: {e}; run 'tuckbox check'")
                self.index.index_names.add(name)
        if added:
            self.save_index_snapshot()

    def refresh_index(self) -> None:
        """Bring the index up to date once a lock is held: a prune may have run since it was loaded (one
        that a --lock-wait waited for, or one that began and ended before the lock was taken), removing
        index objects and the packs they named. Their entries must go (a backup would deduplicate against
        deleted data, a restore look for it), so the index is loaded afresh when any loaded index object
        is no longer stored; otherwise only new ones are added."""
        if self._index_loaded:
            names = {i.name for i in self.backend.list(ObjectType.INDEX)}
            if not self.index.index_names <= names:
                self.index = MasterIndex()
        self.load_index()

    def save_index_snapshot(self) -> None:
        """Replace the cache's snapshot of the master index, unless it holds a pack no stored index
        object lists yet (a backup calls this once everything it stored is indexed)."""
        if self.cache.enabled:
            snapshot = self.index.to_snapshot(self._snapshot_key())
            if snapshot is not None:
                self.cache.write_state(INDEX_SNAPSHOT, snapshot)

    def _snapshot_key(self) -> bytes:
        return aead.hkdf(self.keys.index_key, b"tuckbox local index snapshot")

    def write_index(self, packs: list[PackRecord]) -> str:
        if self.guard is not None:
            self.guard()
        sealed = encode_index(packs, self.keys.index_key)
        name = object_name(sealed)
        self.backend.save(ObjectType.INDEX, name, sealed)
        self.cache.put("index", name, sealed)
        self.index.indexed(name, [p.name for p in packs])
        return name

    def write_indexes(self, packs: list[PackRecord], entries_per_object: int = 100_000) -> int:
        """Index many packs in objects of about ``entries_per_object`` blobs each; return how many were written."""
        written, batch, count = 0, [], 0
        for i, pack in enumerate(packs):
            batch.append(pack)
            count += len(pack.blobs)
            if count >= entries_per_object or i == len(packs) - 1:
                self.write_index(batch)
                written += 1
                batch, count = [], 0
        return written

    # ---------------------------------------------------------------- blobs

    def blob_id(self, data: bytes | memoryview) -> bytes:
        return self.keys.chunk_id(data)

    def has_blob(self, blob_id: bytes) -> bool:
        return self.index.has(blob_id)

    def has_blobs(self, blob_ids: list[bytes]) -> bool:
        return self.index.has_all(blob_ids, ())

    def recipient(self, kind: BlobType) -> bytes:
        """The public key a new pack of ``kind`` is sealed to."""
        return self.keys.data_public if kind is BlobType.DATA else self.keys.meta_public

    def new_packer(self, on_pack_saved: Callable[[PackRecord], None] | None = None) -> Packer:
        return Packer(
            self.backend,
            self.index,
            self.recipient,
            self.config.pack_size,
            self.write_index,
            connections=self.connections,
            on_pack_saved=on_pack_saved,
        )

    def new_backup_packer(self, journal: PackJournal) -> Packer | PackProcess:
        """A backup's packer: in a process of its own where one can be forked now (packproc.py), so the
        walk keeps this process's GIL; it journals every pack it stores."""
        return open_packer(
            self.backend, self.index, self.recipient, self.config.pack_size, self.write_index, journal,
            connections=self.connections,
        )

    def pack_key(self, pack: PackRecord) -> PackKey:
        with self._lock:
            key = self._pack_keys.get(pack.name)
        if key is None:
            self.keys.require_full("read file contents or trees")
            private = self.keys.data_private if pack.kind is BlobType.DATA else self.keys.meta_private
            assert private is not None
            key = PackKey(private, pack.epk)
            with self._lock:
                if len(self._pack_keys) > 4096:
                    self._pack_keys.clear()
                self._pack_keys[pack.name] = key
        return key

    def _tree_pack_bytes(self, pack: PackRecord) -> bytes:
        with self._lock:
            data = self._tree_packs.get(pack.name)
        if data is not None:
            return data
        data = None if self.trees_from_storage else self.cache.get("trees", pack.name)
        if data is None:
            data = self.backend.load(ObjectType.PACK, pack.name)
            if object_name(data) != pack.name:
                raise IntegrityError(f"pack {pack.name[:8]} does not match its name: it was modified or damaged")
            self.cache.put("trees", pack.name, data)
        with self._lock:
            # a small window of whole tree packs (trees are read in walk order, so neighbours share packs)
            while self._tree_packs and sum(map(len, self._tree_packs.values())) + len(data) > TREE_PACK_CACHE:
                self._tree_packs.pop(next(iter(self._tree_packs)))
            self._tree_packs[pack.name] = data
        return data

    def open_blob(self, pack: PackRecord, entry, sealed: bytes | memoryview) -> bytes:
        """Decrypt, decompress and verify one blob's stored bytes."""
        limit = self.config.chunker.max_size if entry.type == BlobType.DATA else MAX_TREE_BLOB
        if not 0 <= entry.raw_length <= limit:
            raise IntegrityError(f"blob {entry.id.hex()[:8]} in pack {pack.name[:8]} claims {entry.raw_length} bytes, "
                                 f"more than a blob holds (its index entry was modified or damaged)")
        plain = self.pack_key(pack).open_blob(entry, sealed)
        if self.keys.chunk_id(plain) != entry.id:
            raise IntegrityError(f"blob {entry.id.hex()[:8]} in pack {pack.name[:8]} does not match its id")
        return plain

    def load_blob(self, blob_type: BlobType, blob_id: bytes) -> bytes:
        loc = self.index.lookup(blob_id)
        if loc is None:
            raise IntegrityError(
                f"blob {blob_id.hex()[:8]} is missing from the repository index (if 'tuckbox check' reports a "
                "damaged index, 'tuckbox repair index' rebuilds it)"
            )
        pack, entry = loc.pack, loc.entry
        self.keys.require_full("read file contents or trees")
        sealed: bytes | memoryview | None = None
        if pack.kind is BlobType.TREE and pack.name not in self._damaged_packs:
            try:
                data = self._tree_pack_bytes(pack)
                sealed = memoryview(data)[entry.offset : entry.offset + entry.length]
            except IntegrityError as e:
                # one damaged byte must not cost every directory listing in the pack: read blobs one by
                # one from now on (each is authenticated and checked against its id anyway)
                with self._lock:
                    self._damaged_packs.add(pack.name)
                self.problems.append(f"{e}; its intact blobs are still used; run 'tuckbox check --read-data'")
        if sealed is None:
            sealed = self.backend.load(ObjectType.PACK, pack.name, entry.offset, entry.length)
            if len(sealed) != entry.length:
                raise IntegrityError(f"pack {pack.name[:8]} is truncated")
        return self.open_blob(pack, entry, sealed)

    # ---------------------------------------------------------------- snapshots

    def save_snapshot(self, snap: Snapshot, before_save: Callable[[str], None] | None = None) -> str:
        """Store a snapshot; ``before_save(name)`` runs first (to record its name where a crash cannot lose it)."""
        if self.guard is not None:
            self.guard()
        body = aead.seal_to(self.keys.meta_public, snap.encode(), snapmodel.PURPOSE)
        data = snapmodel.MAGIC + bytes((snapmodel.VERSION,)) + body
        name = object_name(data)
        if before_save is not None:
            before_save(name)
        self.backend.save(ObjectType.SNAPSHOT, name, data)
        self.cache.put("snapshots", name, data)
        snap.id = name
        return name

    def has_snapshot(self, name: str) -> bool:
        """Whether snapshot ``name`` is stored; True when the storage cannot tell (errors count as maybe)."""
        try:
            self.backend.stat(ObjectType.SNAPSHOT, name)
        except ObjectNotFound:
            return False
        except Exception:  # noqa: BLE001 - asked while handling another failure: never raise from here
            return True
        return True

    def snapshot_names(self) -> list[str]:
        return sorted(i.name for i in self.backend.list(ObjectType.SNAPSHOT))

    def load_snapshot(self, name: str, from_storage: bool = False) -> Snapshot:
        """A snapshot, from the cache where it was read before; ``from_storage``: read and verify the
        repository's own object (check)."""
        self.keys.require_full("read snapshots")
        plain = None if from_storage else self._snapcache.get(name)
        if plain is None:
            data = None if from_storage else self.cache.get("snapshots", name)
            if data is None:
                data = self.backend.load(ObjectType.SNAPSHOT, name)
                if object_name(data) != name:
                    raise IntegrityError(f"snapshot {name[:8]} does not match its name: it was modified or damaged")
                self.cache.put("snapshots", name, data)
            if data[:4] != snapmodel.MAGIC or len(data) < 5:
                raise IntegrityError(f"snapshot {name[:8]} is not a tuckbox snapshot")
            if data[4] != snapmodel.VERSION:
                raise UnsupportedFormat(f"snapshot {name[:8]} has unknown version {data[4]}; upgrade tuckbox")
            assert self.keys.meta_private is not None
            plain = aead.open_sealed_to(self.keys.meta_private, data[5:], snapmodel.PURPOSE, what=f"snapshot {name[:8]}")
            snap = Snapshot.decode(plain, name)
            self._snapcache.put(name, plain)  # (only once it decodes)
            return snap
        return Snapshot.decode(plain, name)

    def snapshots(self) -> list[Snapshot]:
        """Every readable snapshot, oldest first; damaged ones are noted in ``problems`` and skipped."""
        names = self.snapshot_names()
        if self._index_loaded:
            # a backup running meanwhile stores its index before its snapshot: refreshing the index after
            # listing snapshots makes every listed snapshot's data known (load_index only adds new ones)
            self.load_index()
        for stale in self.cache.names("snapshots") - set(names):
            self.cache.discard("snapshots", stale)
        self.keys.require_full("read snapshots")

        def load(name: str) -> Snapshot | None:
            try:
                return self.load_snapshot(name)
            except ObjectNotFound:
                return None  # removed since it was listed (a superseded checkpoint): not damage
            except UnsupportedFormat as e:
                self.problems.append(snapshot_problem(name[:8], e, " skipped"))
                return None
            except IntegrityError as e:
                self.damaged_snapshots[name] = str(e)
                self.problems.append(f"{snapshot_problem(name[:8], e, ' skipped')}; {forget_hint(name)}")
                return None

        known = [n for n in names if self._snapcache.get(n) is not None]  # decrypted before: no pool needed
        unknown = sorted(set(names) - set(known))
        loaded = [load(n) for n in known]
        if unknown:
            with ThreadPoolExecutor(self.connections) as pool:
                loaded += pool.map(load, unknown)
        snaps = [s for s in loaded if s is not None]
        self._snapcache.save(set(names))
        return sorted(snaps, key=lambda s: (s.datetime, s.id))

    def find_snapshot(self, ref: str, snaps: list[Snapshot] | None = None) -> Snapshot:
        snaps = self.snapshots() if snaps is None else snaps
        if ref == "latest":
            complete = [s for s in snaps if not s.partial]
            pool = complete or snaps
            if not pool:
                raise SnapshotNotFound(f"repository {self.backend.location} has no snapshots yet")
            if note := ahead_of_clock(pool[-1]):
                self.notes.append(f"'latest' is snapshot {pool[-1].short_id} of {display_path(pool[-1].host)}, {note}; "
                                     "name a snapshot by its id to choose another")
            return pool[-1]
        given = display_path(ref)  # (messages quote what was typed, not the lowercased prefix)
        prefix = ref.lower()
        if len(prefix) < 4 or any(c not in "0123456789abcdef" for c in prefix):
            raise SnapshotNotFound(f"'{given}' is not a snapshot id; use 'latest' or at least 4 hex digits of an id "
                                   "from 'tuckbox snapshots'")
        matches = [s for s in snaps if s.id.startswith(prefix)]
        damaged = [n for n in self.damaged_snapshots if n.startswith(prefix)]
        if len(matches) + len(damaged) > 1:
            raise UsageError(f"snapshot id {given} is ambiguous ({len(matches) + len(damaged)} match); give more digits")
        if damaged:
            raise SnapshotNotFound(f"{snapshot_problem(damaged[0][:8], self.damaged_snapshots[damaged[0]])}; "
                                   f"{forget_hint(damaged[0])}")
        if not matches:
            raise SnapshotNotFound(f"no snapshot {given} in {self.backend.location}; see 'tuckbox snapshots'")
        return matches[0]

    def find_damaged_snapshot(self, ref: str) -> str | None:
        """The name of the one stored snapshot that ``ref`` (a unique prefix) names and that ``snapshots()``
        found damaged (it cannot be read), or None."""
        ref = ref.lower()
        if len(ref) < 4:
            return None
        damaged = [n for n in self.damaged_snapshots if n.startswith(ref)]
        return damaged[0] if len(damaged) == 1 else None

    # ---------------------------------------------------------------- misc

    def forget_damaged(self, name: str) -> None:
        """After ``name``, a damaged snapshot, was removed: no longer reported."""
        self.damaged_snapshots.pop(name, None)
        self.problems = [p for p in self.problems if not p.startswith(f"snapshot {name[:8]} skipped: ")]

    def is_full(self) -> bool:
        return self.keys.kind is KeyKind.FULL

    def close(self) -> None:
        self.backend.close()


def forget_hint(name: str) -> str:
    """What to do with a snapshot object that is stored but cannot be read."""
    return f"'tuckbox forget {name[:8]}' removes it"


AHEAD_NOTED = 300.0  # seconds: a snapshot dated further ahead of this machine's clock is pointed out


def ahead_of_clock(snap: Snapshot) -> str:
    """"dated 3 h ahead of this machine's clock (...)" for a snapshot from the future, else ""."""
    try:
        ahead = snap.datetime.timestamp() - time.time()
    except (ValueError, OverflowError):
        return ""
    if ahead <= AHEAD_NOTED:
        return ""
    span = f"{ahead / 3600:.0f} h" if ahead >= 5400 else f"{ahead / 60:.0f} min"
    return f"dated {span} ahead of this machine's clock (one of the clocks is wrong)"


def snapshot_problem(name: str, err: Exception | str, what: str = "") -> str:
    """``snapshot NAME{what}: why`` for an error about that snapshot, naming it once (``name`` as given: whole,
    or its first 8 digits)."""
    why = str(err)
    for prefix in (f"snapshot {name[:8]}: ", f"snapshot {name[:8]} "):
        if why.startswith(prefix):
            why = why[len(prefix):]
            break
    return f"snapshot {name}{what}: {why}"
