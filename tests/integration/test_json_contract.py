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


def test_lists_of_paths_that_are_not_utf8_carry_their_exact_bytes(tb: Tuckbox, tmp_path: Path) -> None:
    """snapshots' paths, forget's group key and rewrite's removed files wrote a byte that is not UTF-8 as the text
    backslash-x-f-f, the same as a name holding those four characters: no script could tell which was meant."""
    import base64

    odd = os.fsencode(tmp_path) + b"/d\xff"
    plain = os.fsencode(tmp_path) + b"/d\\xff"  # (the four characters: its JSON text is the same)
    for d in (odd, plain):
        os.mkdir(d)
        with open(d + b"/x.txt", "wb") as f:
            f.write(d)
    tb("init")
    for d in (odd, plain):
        tb("backup", os.fsdecode(d))

    def exact(doc: dict, key: str) -> list[bytes]:
        if f"{key}_bytes" not in doc:
            return [p.encode() for p in doc[key]]
        assert len(doc[f"{key}_bytes"]) == len(doc[key])
        return [base64.b64decode(b) for b in doc[f"{key}_bytes"]]

    snaps = tb("snapshots", "--json").json()
    assert snaps[0]["paths"] == snaps[1]["paths"] == [os.fsdecode(plain)]  # (the text alone is ambiguous)
    assert [exact(s, "paths") for s in snaps] == [[odd], [plain]]
    groups = tb("forget", "--keep-last", "1", "--dry-run", "--json").json()["groups"]
    assert sorted(exact(g["key"], "paths") for g in groups) == sorted([[odd], [plain]])
    removed = tb("rewrite", "--exclude", "x.txt", "--json").json()["snapshots"]
    assert sorted(exact(r, "removed") for r in removed) == sorted([[odd + b"/x.txt"], [plain + b"/x.txt"]])


def test_a_listing_cut_short_by_a_failure_is_still_one_json_document(
    tb: Tuckbox, tmp_path: Path, monkeypatch, capsys
) -> None:
    """ls, find and diff stream their list as the trees are read: a damaged tree or an interrupt half-way left
    '{"entries": [ ...,' on standard output, which no JSON parser reads (and no error in it)."""
    from tuckbox.cli import cmd_diff, cmd_find, cmd_ls
    from tuckbox.cli.main import main
    from tuckbox.errors import IntegrityError

    src = _source(tmp_path)
    tb("init")
    tb("backup", str(src))
    (src / "new.txt").write_text("new\n")
    tb("backup", str(src))
    for k, v in tb.env.items():
        if k.startswith("TUCKBOX_"):
            monkeypatch.setenv(k, v)

    def cut(entries, failure: BaseException):
        def walk(*args, **kwargs):
            yield from list(entries(*args, **kwargs))[:2]
            raise failure
        return walk

    damaged = IntegrityError("tree 0123abcd: blob failed authentication")
    monkeypatch.setattr(cmd_ls, "walk", cut(cmd_ls.walk, damaged))
    monkeypatch.setattr(cmd_find, "find_in_tree", cut(cmd_find.find_in_tree, KeyboardInterrupt()))
    monkeypatch.setattr(cmd_diff, "diff", cut(cmd_diff.diff, damaged))
    for argv, key, code in ((["ls", "latest"], "entries", 1), (["find", "*.txt"], "matches", 130),
                            (["diff", "latest", tb("snapshots", "--json").json()[0]["id"]], "changes", 1)):
        capsys.readouterr()
        assert main(["--json", *argv]) == code
        captured = capsys.readouterr()
        doc = json.loads(captured.out)  # one document, nothing after it
        assert len(doc[key]) >= 1 and doc["complete"] is False, doc
        assert doc["error"]["type"] == "error" and doc["error"]["exit_code"] == code
        assert ("interrupted" if code == 130 else "tree 0123abcd") in doc["error"]["message"]
        assert captured.err.splitlines()[-1] in (f"tuckbox: error: {doc['error']['message']}", "tuckbox: interrupted")
