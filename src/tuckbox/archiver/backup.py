"""One backup run: lock, adopt leftovers, walk, checkpoint, flush packs and index, save the snapshot.

Resuming after an interruption (Ctrl-C, kill -9, power loss, lost network):

* every uploaded pack is journaled locally before anything depends on it, and
  the next run *adopts* journaled packs that no index names yet, so no stored
  pack is uploaded again (see repository/journal.py);
* the files cache is written as the walk goes and flushed every second; an
  interrupted run's stream is consulted first by the next run (entries are
  trusted only if their chunks are indexed), so it re-reads only files that
  were not yet saved;
* every ``checkpoint_interval`` seconds the run saves a *checkpoint*: a partial
  snapshot (``partial: true``) of everything finished so far, restorable like
  any snapshot; a complete snapshot of the same paths later removes the
  checkpoints this machine wrote for them;
* ``should_stop`` (Ctrl-C) is watched by a thread: at once the packer stops
  taking data and cancels the data-pack uploads under way (it does not wait
  for them: on a slow link that would take minutes); the walk ends at the next
  chunk; the packs that were stored are kept and indexed, the unfinished ones
  are given up, files with a chunk in them are left out of the trees
  (archiver/store.py), and what is left is saved as a checkpoint.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import __version__, allocator
from ..backends.local import local_root
from ..chunker import Chunker
from ..errors import ObjectNotFound, TuckboxError
from ..repository.journal import PackJournal, read_journal
from ..repository.keyring import record_own_snapshot, withdraw_own_snapshot
from ..repository.locks import Lock
from ..repository.packer import Packer
from ..repository.packproc import PackProcess
from ..repository.repo import Repository
from ..snapshot.model import Snapshot, now_iso
from ..types import ObjectType
from .archiver import Archiver
from .report import Progress, devices_of, normalize_paths
from .files_cache import FilesCache
from .store import RunStore

DEFAULT_CHECKPOINT_INTERVAL = 15 * 60.0
WALK_KEEP_FREED = 32 << 20  # freed heap the walking process keeps (allocator.py)


@dataclass
class BackupRequest:
    paths: list[str | bytes]
    tags: list[str] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)
    host: str = ""
    one_file_system: bool = False
    exclude_caches: bool = False  # directories with a CACHEDIR.TAG are stored empty
    checkpoint_interval: float = DEFAULT_CHECKPOINT_INTERVAL  # seconds; 0 disables
    lock_wait: float = 0.0  # seconds to wait for a conflicting lock (a prune) to go away


@dataclass
class BackupResult:
    snapshot: Snapshot | None  # None: stopped before any file was finished, so no checkpoint was saved
    warnings: list[str]
    interrupted: bool = False
    adopted_packs: int = 0
    checkpoints: list[str] = field(default_factory=list)
    left_out: int = 0  # files finished by the walk but left out of the checkpoint: their data was not stored
    skipped_own: list[bytes] = field(default_factory=list)  # tuckbox's repository or cache inside the paths
    cache_problem: str = ""  # why the files cache or the pack journal could not be written (a full disk)
    summary: dict[str, Any] = field(default_factory=dict)  # the snapshot's summary (also without a snapshot)


def _own_dirs(repo: Repository) -> set[tuple[int, int]]:
    """The directories a backup never goes into: a local repository's object directories (backing them up
    into the repository would store each run's new packs again in the next) and this repository's cache
    (rewritten by every run). Only directories that hold nothing but tuckbox's own files: a repository made
    at the top of a disk leaves the user's files next to it in the backup."""
    paths: list[str] = []
    root = local_root(repo.backend)
    if root is not None:
        paths += [os.path.join(root, t.value) for t in ObjectType if t is not ObjectType.CONFIG]
    if repo.cache.enabled:
        paths.append(str(repo.cache.dir))
    own: set[tuple[int, int]] = set()
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            own.add((st.st_dev, st.st_ino))
    return own


def _find_parent(repo: Repository, host: str, paths: list[bytes]) -> str:
    if not repo.is_full():
        return ""
    candidates = [s for s in repo.snapshots() if s.host == host and sorted(s.paths) == sorted(paths) and not s.partial]
    return candidates[-1].id if candidates else ""


def adopt_journaled_packs(repo: Repository, journal: PackJournal) -> int:
    """Index packs an interrupted run stored but never indexed; return how many were adopted."""
    adopted = 0
    for path in journal.leftovers():
        records = [r for r in read_journal(path) if r.name not in repo.index.packs]
        keep = []
        for record in records:
            try:
                if repo.backend.stat(ObjectType.PACK, record.name).size == record.size:
                    keep.append(record)
            except ObjectNotFound:
                continue  # never fully stored: its blobs will be stored again
        if keep:
            repo.write_index(keep)
            for record in keep:
                repo.index.add_pack(record)
            adopted += len(keep)
        try:
            path.unlink()
        except OSError:
            pass
    return adopted


class _Checkpoints:
    """Local record of the checkpoint snapshots this machine wrote, per set of paths."""

    def __init__(self, state_dir: Path | None, paths: list[bytes]) -> None:
        self.file = None
        if state_dir is not None:
            key = json.dumps(sorted(p.decode("utf-8", "surrogateescape") for p in paths), ensure_ascii=True)
            import hashlib

            self.file = state_dir / "checkpoints" / hashlib.sha256(key.encode()).hexdigest()[:32]

    def names(self) -> list[str]:
        if self.file is None:
            return []
        try:
            return [n for n in self.file.read_text().split() if n]
        except OSError:
            return []

    def add(self, name: str) -> None:
        if self.file is None:
            return
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with open(self.file, "a") as f:
                f.write(name + "\n")
        except OSError:
            pass

    def supersede(self, repo: Repository) -> None:
        """A complete snapshot now exists: remove this machine's checkpoints of the same paths."""
        self.replace(repo, self.names())

    def replace(self, repo: Repository, names: list[str]) -> None:
        """Remove the checkpoints ``names`` (a newer one holds all they hold) and drop them from the record."""
        removed: set[str] = set()
        for name in names:
            try:
                repo.backend.remove(ObjectType.SNAPSHOT, name)
            except ObjectNotFound:
                pass
            except TuckboxError:
                break  # keep the rest in the record; the next complete snapshot removes them
            removed.add(name)
            repo.cache.discard("snapshots", name)
            if not repo.is_full():
                withdraw_own_snapshot(repo, name)  # (a write-only key's listing of its own work: not "gone")
        if self.file is None or not removed:
            return
        left = [n for n in self.names() if n not in removed]
        try:
            if left:
                tmp = self.file.with_name(self.file.name + ".tmp")
                tmp.write_text("".join(n + "\n" for n in left))
                os.replace(tmp, self.file)
            else:
                self.file.unlink()
        except OSError:
            pass


def _watch(should_stop: Callable[[], bool], packer: Packer | PackProcess, over: threading.Event) -> threading.Thread:
    """Tell the packer to stop as soon as ``should_stop`` says so: the walking thread may be waiting on it."""

    def loop() -> None:
        while not over.wait(0.05):
            if should_stop():
                packer.stop()
                return

    thread = threading.Thread(target=loop, name="tuckbox-stop-watch", daemon=True)
    thread.start()
    return thread


def run_backup(
    repo: Repository,
    request: BackupRequest,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> BackupResult:
    paths = normalize_paths(request.paths)
    host = request.host or socket.gethostname()
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    state = repo.cache.state_dir if repo.cache.enabled else None
    journal = PackJournal(state / "journal" if state else None)
    # the lock, and the parent snapshot, on the connection the repository was opened with; then a pack
    # process, forked only while this process has no other thread (the lock's refresh thread starts after)
    try:
        lock = Lock(repo.backend, repo.keys.index_key, exclusive=False, background=False, command="backup").acquire(
            request.lock_wait, progress.note if progress is not None else None, should_stop
        )
    except BaseException:
        journal.close(remove=True)
        raise
    try:
        # what the index says must be what is stored while the lock is held: not what was loaded before
        repo.refresh_index()
        parent = _find_parent(repo, host, paths)
        packer = repo.new_backup_packer(journal)
    except BaseException:
        lock.release()
        journal.close(remove=True)
        raise
    # the walk reads files and cuts chunks into fresh buffers (~1 MiB each): keep what it frees for the next
    # ones instead of having the kernel clear and map those pages again (allocator.py). Only now: a pack
    # process forked with this process's freed heap would count it as its own (it gives back what it frees)
    allocator.keep_freed(WALK_KEEP_FREED)
    lock.refresh_in_background()
    repo.guard = lock.ensure_held
    store = RunStore(repo, packer)
    over = threading.Event()
    if should_stop is not None:
        _watch(should_stop, packer, over)
    finished = False
    files_cache: FilesCache | None = None
    try:
        adopted = adopt_journaled_packs(repo, journal)
        lock.take_over_killed_backups()  # (the packs they stored are this run's to index now)
        checkpoints = _Checkpoints(state, paths)
        files_cache = FilesCache(state / "files-cache" if state else None, paths)
        written: list[str] = []

        left_out, left_bytes = 0, 0

        def stopping() -> bool:
            if should_stop is not None and should_stop():
                packer.stop()  # the watcher would, within its next poll
            return packer.stopping

        def holds_a_file() -> bool:
            """Whether the trees saved now hold anything but directories (a checkpoint of directories
            alone would restore nothing, yet become ``latest``): what the walk finished, less what was
            left out."""
            s = archiver.summary
            return s.files_new + s.files_changed + s.files_unmodified + s.others > left_out

        def summary_now() -> dict[str, Any]:
            summary = archiver.summary.as_dict()
            if left_out:  # finished by the walk, but their data was not stored: not in this snapshot
                summary["bytes_total"] -= left_bytes
                summary["files_left_out"] = left_out
            summary.update(
                {
                    "blobs_new": packer.stats.blobs_new,
                    "bytes_new_raw": packer.stats.bytes_new_raw,
                    "bytes_added": packer.stats.bytes_new_stored,
                    "packs_new": packer.stats.packs_new,
                    "packs_adopted": adopted,
                }
            )
            return summary

        def snapshot(tree: bytes, partial: bool) -> Snapshot:
            summary = summary_now()
            snap = Snapshot(
                time=now_iso(), host=host, user=user, paths=paths, tree=tree,
                tags=sorted(set(request.tags)), parent=parent, partial=partial,
                summary=summary, program=f"tuckbox {__version__}",
            )
            # only after the index is durable; a checkpoint is recorded before it is saved, so a crash in
            # between cannot leave one that the next complete snapshot does not supersede; so is the
            # snapshot of a write-only key (which cannot read it back, so remembers it locally)
            own = not repo.is_full()
            recorded: list[str] = []

            def before_save(name: str) -> None:
                if partial:
                    checkpoints.add(name)
                if own and record_own_snapshot(repo, snap, name):
                    recorded.append(name)

            try:
                repo.save_snapshot(snap, before_save=before_save)
            except BaseException:
                for name in recorded:
                    if not repo.has_snapshot(name):
                        withdraw_own_snapshot(repo, name)
                raise
            return snap

        clock = {"checkpoint": time.monotonic()}

        def after_entry() -> None:
            now = time.monotonic()
            if now - clock.get("journal", 0.0) >= 1.0:
                files_cache.flush()  # to the OS: survives kill -9
                clock["journal"] = now
            if request.checkpoint_interval and now - clock["checkpoint"] >= request.checkpoint_interval:
                if stopping():
                    return  # the stop saves the checkpoint, trimmed to what was stored
                if not holds_a_file():
                    return  # (looked at again after the next entry)
                tree = archiver.partial_tree()
                packer.flush()
                if stopping():
                    return  # stopped during the flush: data in it may have been given up; see above
                snap = snapshot(tree, partial=True)
                # this run's earlier checkpoint holds nothing this one lacks: one checkpoint per run, not one
                # every interval (a first backup of days over a slow line would list hundreds)
                checkpoints.replace(repo, written[-1:])
                written.append(snap.id)
                clock["checkpoint"] = time.monotonic()

        archiver = Archiver(
            store,
            Chunker(repo.config.chunker, repo.keys.chunker_seed),
            files_cache,
            excludes=request.excludes,
            progress=progress,
            one_file_system=request.one_file_system,
            file_systems=devices_of(request.paths) if request.one_file_system else None,
            exclude_caches=request.exclude_caches,
            should_stop=should_stop,
            after_entry=after_entry,
            skip_dirs=_own_dirs(repo),
        )
        tree = archiver.run(paths)
        if not stopping():
            packer.flush()  # every pack, then the index naming them, is stored
        if stopping():  # stopped during the walk or the flush: keep what was stored, give up the rest
            packer.abandon()
            tree, left_out, left_bytes = store.trim(tree)
            packer.flush()  # the trees of the checkpoint, and the index of every stored pack
        partial = archiver.stopped or left_out > 0
        snap: Snapshot | None = None
        if not partial:
            snap = snapshot(tree, partial=False)
            checkpoints.supersede(repo)
        elif holds_a_file():  # (else stopped before any file was finished: no checkpoint; the stored packs
            snap = snapshot(tree, partial=True)  # are indexed, so the next run still uploads none of them again)
            checkpoints.replace(repo, written[-1:])  # (as above: the stop's checkpoint holds all the last one did)
            written.append(snap.id)
        files_cache.finish(complete=not partial)
        repo.save_index_snapshot()  # every pack it stored is indexed: the next run loads the index at once
        finished = True
        return BackupResult(snap, archiver.summary.warnings, partial, adopted, written, left_out, archiver.skipped_own,
                            files_cache.problem or journal.problem, snap.summary if snap is not None else summary_now())
    except KeyboardInterrupt:
        packer.stop(grace=0)  # quit at once: wait for no upload (the journal covers what was stored)
        raise
    finally:
        over.set()
        if not finished and files_cache is not None:
            files_cache.abandon()
        packer.close()
        journal.close(remove=finished)
        repo.guard = None
        lock.release()
