"""Property: any generated tree (every kind of entry and metadata) restores exactly."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from tuckbox.archiver.backup import BackupRequest, run_backup
from tuckbox.backends.local import LocalBackend
from tuckbox.chunker import ChunkerParams
from tuckbox.repository.config import Config
from tuckbox.repository.repo import Repository
from tuckbox.restorer.restorer import Restorer
from tuckbox.testing.trees import compare_trees, materialize, tree_specs


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree_specs())
def test_backup_restore_round_trip(spec):
    work = Path(tempfile.mkdtemp(prefix="tuckbox-prop-"))
    try:
        os.environ["TUCKBOX_CACHE_DIR"] = str(work / "cache")
        src = work / "src"
        materialize(spec, src)
        # small chunks so that multi-chunk files, holes between chunks and several packs all occur
        config = Config.new("t", ChunkerParams(4096, 8192, 65536), pack_size=1 << 20)
        repo = Repository.init(LocalBackend(str(work / "repo")), b"pw", created="t", host="h", user="u", config=config)
        result = run_backup(repo, BackupRequest([str(src)]))
        assert result.warnings == []
        # a second backup goes through the files cache (unchanged files reuse their stored nodes)
        time.sleep(1.05)
        again = run_backup(repo, BackupRequest([str(src)]))
        assert again.warnings == [] and again.snapshot.summary["bytes_read"] <= result.snapshot.summary["bytes_read"]
        reopened = Repository.open(LocalBackend(str(work / "repo")), lambda: b"pw")
        for snap, out in ((reopened.find_snapshot(result.snapshot.id[:12]), work / "out1"), (reopened.find_snapshot("latest"), work / "out2")):
            restored = Restorer(reopened).restore(snap, os.fsencode(out))
            assert restored.errors == [] and restored.warnings == []
            assert compare_trees(src, Path(str(out) + str(src))) == []
    finally:
        shutil.rmtree(work, ignore_errors=True)
