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


ID = r"[0-9a-f]{64}"
TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d"


def _has(doc: dict, *fields: str) -> None:
    missing = [f for f in fields if f not in doc]
    assert not missing, f"missing {missing} in {doc}"


def _ids(doc: dict, full: str = "id", short: str = "short_id") -> None:
    import re

    assert re.fullmatch(ID, doc[full]) and doc[short] == doc[full][:8], doc


def test_every_command_s_json_has_the_documented_fields(tb: Tuckbox, tmp_path: Path) -> None:
    """docs/json.md, command by command: one document (or JSON lines with a type), ids full and short, times
    ISO 8601 with an offset, sizes integers."""
    import re

    src = _source(tmp_path)
    init = tb("init", "--json").json()
    _has(init, "id", "location", "created")
    assert re.fullmatch(TIME, init["created"])

    lines = _lines(tb("backup", str(src), "--json"))
    summary = lines[-1]
    assert summary["type"] == "summary" and summary["interrupted"] is False and summary["skipped_own"] == []
    _ids(summary, "snapshot")
    _has(summary, "files_new", "files_changed", "files_unmodified", "dirs", "others", "bytes_total", "bytes_read",
         "bytes_added", "bytes_new_raw", "blobs_new", "packs_new", "packs_adopted", "warnings")
    assert all(isinstance(summary[k], int) for k in summary if k.startswith(("bytes_", "files_")))
    (src / "new.txt").write_text("new\n")
    second = _lines(tb("backup", str(src), "--json"))[-1]

    snaps = tb("snapshots", "--json").json()
    assert [s["id"] for s in snaps] == [summary["snapshot"], second["snapshot"]]
    for s in snaps:
        _ids(s)
        _has(s, "time", "host", "user", "tags", "paths", "parent", "partial", "tree", "summary")
        assert re.fullmatch(TIME, s["time"]) and s["paths"] == [str(src)]
    assert snaps[1]["parent"] == snaps[0]["id"]

    ls = tb("ls", "latest", "--json").json()
    _ids(ls, "snapshot")
    assert ls["complete"] is True
    by_path = {e["path"]: e for e in ls["entries"]}
    a = by_path[f"{src}/a.txt"]
    _has(a, "type", "mode", "uid", "gid", "user", "group", "size", "mtime_ns", "link_target")
    assert a["type"] == "file" and a["size"] == 6 and a["mode"] == (src / "a.txt").stat().st_mode & 0o7777
    assert a["mtime_ns"] == (src / "a.txt").stat().st_mtime_ns and a["link_target"] is None

    found = tb("find", "a.txt", "--json").json()
    assert found["count"] == 2 == len(found["matches"]) and found["complete"] is True
    for m in found["matches"]:
        _ids(m, "snapshot")
        _has(m, "time", "host", "path", "type", "size", "mtime_ns")

    changes = tb("diff", snaps[0]["short_id"], "latest", "--json").json()
    _ids(changes, "first", "first_short_id")
    _ids(changes, "second", "second_short_id")
    assert changes["changes"] == [{"change": "added", "path": f"{src}/new.txt"}]
    assert (changes["added"], changes["removed"], changes["modified"], changes["complete"]) == (1, 0, 0, True)

    rlines = _lines(tb("restore", "latest", "--target", str(tmp_path / "r"), "--json"))
    rsum = rlines[-1]
    assert rsum["type"] == "summary" and rsum["errors"] == [] and rsum["warnings"] == []
    _ids(rsum, "snapshot")
    _has(rsum, "partial", "files", "dirs", "others", "bytes_written", "files_skipped", "bytes_read_back")
    assert tb("dump", "latest", f"{src}/a.txt", "--json").raw == b"hello\n"

    check = tb("check", "--read-data", "--json").json()
    assert check["ok"] is True and check["read_data"] is True and check["read_data_subset"] is None
    _has(check, "errors", "damaged_files", "notes", "counts")
    _has(check["counts"], "snapshots", "indexes", "packs", "blobs", "packs_read")

    stats = tb("stats", "--json").json()
    _has(stats, "snapshots", "packs", "blobs", "data_blobs", "tree_blobs", "stored_bytes", "unique_bytes",
         "unique_data_bytes", "original_bytes", "latest_original_bytes", "compression_ratio", "dedup_ratio",
         "space_saving_ratio")
    assert all(isinstance(stats[k], int) for k in stats if k.endswith("_bytes"))

    assert tb("unlock", "--json").json() == {"removed": [], "kept": []}

    keys = tb("key", "list", "--json").json()
    assert len(keys) == 1 and keys[0]["in_use"] is True and keys[0]["kind"] == "full"
    _ids(keys[0])
    _has(keys[0], "host", "user", "created", "comment", "passphrase", "stored")
    wo = tb("key", "add", "--write-only", "--output", str(tmp_path / "wo.key"), "--json").json()
    _ids(wo)
    assert wo["kind"] == "write-only" and wo["output"] == str(tmp_path / "wo.key")
    assert tb("key", "remove", wo["short_id"], "--json").json()["removed"] == wo["id"]

    forget = tb("forget", "--keep-last", "1", "--dry-run", "--json").json()
    assert forget["dry_run"] is True and forget["removed"] == 0
    (group,) = forget["groups"]
    assert group["key"]["paths"] == [str(src)]
    assert [k["id"] for k in group["keep"]] == [snaps[1]["id"]] and group["keep"][0]["reasons"] == ["last"]
    assert [r["id"] for r in group["remove"]] == [snaps[0]["id"]]
    for b in group["keep"] + group["remove"]:
        _ids(b)
        _has(b, "time", "host", "tags", "partial", "damaged")

    prune = tb("prune", "--dry-run", "--json").json()
    assert prune["dry_run"] is True and "result" not in prune
    _has(prune["plan"], "snapshots", "used_blobs", "packs_kept", "packs_removed", "bytes_removed")
    rewrite = tb("rewrite", "--exclude", "new.txt", "--dry-run", "--json").json()
    assert rewrite["dry_run"] is True and rewrite["snapshots"][0]["removed"] == [f"{src}/new.txt"]
    _has(tb("repair", "index", "--dry-run", "--json").json(), "indexes_written", "packs_reindexed", "blobs_lost")
    assert tb("repair", "snapshots", "--dry-run", "--json").json() == {"dry_run": True, "snapshots": []}

    kit = tb("recovery-kit", "--shares", "3", "--threshold", "2", "--output", str(tmp_path / "kit"), "--json").json()
    assert (kit["repository"], kit["shares"], kit["threshold"]) == (init["id"], 3, 2) and len(kit["files"]) >= 3
    import re as _re

    page = (tmp_path / "kit" / "share-1.txt").read_text()
    block = page.split("-----BEGIN TUCKBOX RECOVERY SHARE-----")[1].split("-----END")[0].strip().splitlines()[2:]
    words = _re.findall(r"\b\d+ +([a-z]+)\b", "\n".join(block))  # (the numbered words of the share)
    assert len(words) >= 20 and not any(f'"{w}' in json.dumps(kit) or f" {w}" in json.dumps(kit) for w in words)
