"""Files in a local repository's object directories that tuckbox did not write (a user's notes, an operating
system's ``Thumbs.db``, a sync tool's conflict copy): ``check`` names them as warnings (ten, then a count)
and still passes, and neither check nor prune removes them."""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import Tuckbox


def test_check_names_files_that_are_not_objects_and_prune_leaves_them(tb: Tuckbox, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}").write_bytes(os.urandom(50_000))
    tb("init")
    tb("backup", str(src))
    repo = Path(tb.repo)
    shard = next(d for d in (repo / "data").iterdir() if d.is_dir())
    strays = [repo / "index" / "notes.txt", repo / "snapshots" / "Thumbs.db", shard / "desktop.ini",
              repo / "data" / ".DS_Store"]
    for p in strays:
        p.write_text("not tuckbox's")
    res = tb("check")
    warned = sorted(line for line in res.err.splitlines() if line.startswith("warning: "))
    assert warned == sorted(f"warning: {p.relative_to(repo)}: not a tuckbox object; left alone "
                            "(remove it yourself if nothing needs it)" for p in strays), res.err
    assert "no errors found" in res.out and "4 warning(s)" in res.out

    strays += [repo / "keys" / f"copy-{i}.txt" for i in range(9)]
    for p in strays[4:]:
        p.write_text("not tuckbox's")
    res = tb("check")
    warned = [line for line in res.err.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 11, res.err
    named = {line.split(": ")[1] for line in warned[:10]}
    assert len(named) == 10 and named <= {str(p.relative_to(repo)) for p in strays}, warned
    assert warned[-1] == "warning: 3 more file(s) in the repository's object directories are not tuckbox objects"
    doc = tb("check", "--json").json()
    assert doc["ok"] and doc["errors"] == [] and doc["warnings"] == [w.removeprefix("warning: ") for w in warned]
    assert doc["counts"]["foreign"] == len(strays)
    tb("forget", "latest")
    tb("prune")
    assert all(p.read_text() == "not tuckbox's" for p in strays)
    assert tb("check", "--json").json()["counts"]["foreign"] == len(strays)
