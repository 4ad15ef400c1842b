"""A tree nested deeper than the open-file limit allows (each directory being walked is held open)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path


def _limited(tb, *args: str, limit: int = 64) -> subprocess.CompletedProcess:
    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))  # hard too: tuckbox cannot raise it

    return subprocess.run([sys.executable, "-m", "tuckbox.cli.main", *args], env=tb.env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=300, preexec_fn=lower)


def test_a_tree_deeper_than_the_open_file_limit_is_reported_with_what_to_do(tb, tmp_path):
    """Under 'ulimit -n 64' a chain 100 directories deep: backup and restore said only 'Too many open files',
    which reads like a leak in tuckbox, not like a limit the user can raise. Now the line says the tree is
    nested deeper than the limit (named) allows and how to raise it; backup still exits 3 with a snapshot
    of everything else, restore 1 with everything above that depth restored."""
    src = tmp_path / "src"
    d = src
    for i in range(100):
        d = d / f"d{i}"
    d.mkdir(parents=True)
    (src / "top.txt").write_text("top\n")
    (d / "deepest.txt").write_text("deep\n")
    tb("init")
    res = _limited(tb, "--json", "backup", str(src))
    assert res.returncode == 3 and "Traceback" not in res.stderr, res.stderr
    warnings = [json.loads(ln)["message"] for ln in res.stdout.splitlines() if '"warning"' in ln]
    assert len(warnings) == 1, warnings
    assert "cannot list directory: Too many open files: the tree is nested deeper than the open-file limit (64)" \
        in warnings[0] and "ulimit -n" in warnings[0]
    tb("check")
    tb("restore", "latest", "--target", str(tmp_path / "r"))
    assert (Path(str(tmp_path / "r") + str(src)) / "top.txt").read_text() == "top\n"

    tb("backup", str(src))  # without the limit: the whole tree
    res = _limited(tb, "restore", "latest", "--target", str(tmp_path / "r2"))
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert "Too many open files: the tree is nested deeper than the open-file limit (64) allows" in res.stderr
    assert (Path(str(tmp_path / "r2") + str(src)) / "top.txt").read_text() == "top\n"
