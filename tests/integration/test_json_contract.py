"""The machine-readable contract (docs/json.md): under --json standard output holds only JSON - one document, or
backup's and restore's JSON lines, each with a "type" - with the documented fields; a failure is a JSON error
there as well as a line on standard error, with the documented exit code."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .conftest import Result, Tuckbox


def _lines(res: Result) -> list[dict]:
    docs = [json.loads(line) for line in res.out.splitlines()]
    assert docs and all(isinstance(d, dict) and isinstance(d.get("type"), str) for d in docs), res.out
    return docs


def _source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("hello\n")
    (src / "sub" / "b.txt").write_text("world\n" * 1000)
    os.link(src / "a.txt", src / "hardlink")
    return src


def test_a_restore_with_entries_not_restored_ends_its_stream_with_the_error(tb: Tuckbox, tmp_path: Path) -> None:
    """Exit 1 used to end the stream with the summary (no error line, as README promises) and say nothing on
    standard error."""
    src = _source(tmp_path)
    tb("init")
    tb("backup", str(src))
    snap = tb("snapshots", "--json").json()[-1]
    target = tmp_path / "target"
    target.mkdir()
    (target / ".tuckbox-restore").write_text(snap["id"] + "\n")  # (an interrupted restore's target, resumed)
    obstacle = Path(str(target) + str(src)) / "hardlink"
    obstacle.mkdir(parents=True)  # a directory where the second name of a hardlink goes
    (obstacle / "x").write_text("someone's\n")
    res = tb("restore", "latest", "--target", str(target), "--json", expect=1)
    docs = _lines(res)
    summary = [d for d in docs if d["type"] == "summary"]
    assert len(summary) == 1 and summary[0]["snapshot"] == snap["id"] and summary[0]["short_id"] == snap["short_id"]
    assert [e for e in summary[0]["errors"] if e.startswith(f"{src}/hardlink")], summary[0]["errors"]
    assert docs[-1]["type"] == "error" and docs[-1]["exit_code"] == 1, docs[-1]
    assert f"{src}/hardlink" in res.err and "1 entry not restored" in res.err


def test_a_check_that_finds_damage_says_so_on_standard_error_too(tb: Tuckbox, tmp_path: Path) -> None:
    src = _source(tmp_path)
    tb("init")
    tb("backup", str(src))
    packs = sorted((Path(tb.repo) / "data").rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else -1)
    victim = packs[-1]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    victim.chmod(0o600)
    victim.write_bytes(bytes(raw))
    res = tb("check", "--read-data", "--json", expect=1)
    report = res.json()  # (one document)
    assert report["ok"] is False and report["errors"]
    assert any(victim.name[:8] in e for e in report["errors"]), report["errors"]
    assert victim.name[:8] in res.err and "error(s) found" in res.err, res.err
