"""Drive the real ``tuckbox`` command in a subprocess, with an isolated repository, cache and passphrase."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Result:
    code: int
    out: str
    err: str
    raw: bytes

    def json(self):
        return json.loads(self.out)


class Tuckbox:
    def __init__(self, tmp: Path, repo: str | None = None) -> None:
        self.tmp = tmp
        self.repo = repo or str(tmp / "repo")
        self.passfile = tmp / "passphrase"
        self.passfile.write_text("correct horse battery staple\n")
        self.passfile.chmod(0o600)
        self.env = {
            **os.environ,
            "TUCKBOX_REPOSITORY": self.repo,
            "TUCKBOX_PASSWORD_FILE": str(self.passfile),
            "TUCKBOX_CACHE_DIR": str(tmp / "cache"),
            "TUCKBOX_TEST_CHEAP_KDF": "1",
        }
        for k in ("TUCKBOX_PASSWORD", "TUCKBOX_PASSWORD_COMMAND", "TUCKBOX_DEBUG"):
            self.env.pop(k, None)

    def __call__(self, *args: str, env: dict | None = None, expect: int | None = 0, **kw) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "tuckbox.cli.main", *args],
            env={**self.env, **(env or {})},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=600,
            **kw,
        )
        res = Result(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"), proc.stdout)
        assert "Traceback" not in res.err, res.err
        if expect is not None:
            assert res.code == expect, f"tuckbox {' '.join(args)} exited {res.code}, expected {expect}\n{res.err}\n{res.out}"
        return res


@pytest.fixture
def tb(tmp_path) -> Tuckbox:
    return Tuckbox(tmp_path)


def count_worker_processes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record how many restore worker processes each restore starts (the list fills as restores run)."""
    from tuckbox.restorer import restorer as restorer_module

    started: list[int] = []

    class Counted(restorer_module.WorkerProcesses):  # type: ignore[misc,name-defined]
        def __init__(self, n, *args, **kwargs):
            started.append(n)
            super().__init__(n, *args, **kwargs)

    monkeypatch.setattr(restorer_module, "WorkerProcesses", Counted)
    return started
