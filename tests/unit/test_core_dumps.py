"""A tuckbox process holds the passphrase, the root secret and the keys derived from it: a crash must not
write them into a core file (or hand them to systemd-coredump or apport), and other processes of the same
user must not read its memory."""

from __future__ import annotations

import ctypes
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tuckbox.cli.main import main

_PR_GET_DUMPABLE, _PR_SET_DUMPABLE = 3, 4


@pytest.fixture
def restored_dumpable() -> Iterator[None]:
    limit = resource.getrlimit(resource.RLIMIT_CORE)
    yield
    ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)
    resource.setrlimit(resource.RLIMIT_CORE, limit)


def test_the_cli_process_is_not_dumpable(restored_dumpable: None, capsys: pytest.CaptureFixture[str]) -> None:
    ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)
    assert main([]) == 2  # (help: any command line goes through the same start)
    assert ctypes.CDLL(None).prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0) == 0
    assert resource.getrlimit(resource.RLIMIT_CORE)[0] == 0


def test_a_crash_leaves_no_core_file(tmp_path: Path) -> None:
    """The real command with the passphrase read, killed by SIGSEGV from its password command: no core file
    (this machine's core_pattern writes one into the working directory when a process may dump)."""
    pattern = Path("/proc/sys/kernel/core_pattern").read_text().strip()
    if pattern.startswith("|") or "/" in pattern or resource.getrlimit(resource.RLIMIT_CORE)[1] == 0:
        pytest.skip(f"core files do not go into the working directory here (core_pattern {pattern!r})")
    pw = "s3cret-Zq81xk"

    def allow_core_files() -> None:  # (as a shell with 'ulimit -c unlimited' would start it)
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    res = subprocess.run(
        [sys.executable, "-m", "tuckbox.cli.main", "-r", str(tmp_path / "repo"), "init"],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path), "TUCKBOX_CACHE_DIR": str(tmp_path / "c"),
             "TUCKBOX_PASSWORD_COMMAND": f"echo {pw}; kill -SEGV $PPID", "TUCKBOX_TEST_CHEAP_KDF": "1"},
        cwd=tmp_path, capture_output=True, timeout=120, preexec_fn=allow_core_files,
    )
    assert res.returncode == -11
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("core")]
