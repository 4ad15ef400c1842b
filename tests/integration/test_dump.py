"""``dump`` of what is not a regular file says what it is and what to do instead."""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import Tuckbox


def test_dump_of_a_symlink_names_its_target(tb: Tuckbox, tmp_path: Path) -> None:
    """It said 'is a symlink, not a file; use restore --include for directories'; it now names the file the
    link points to, which dump then prints."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "real").write_bytes(b"the content\n")
    os.symlink("sub/real", src / "link")
    tb("init")
    tb("backup", str(src))
    res = tb("dump", "latest", str(src / "link"), expect=2)
    lines = res.err.strip().splitlines()
    short = tb("snapshots", "--json").json()[0]["short_id"]
    assert lines == [f"tuckbox: error: {src}/link is a symbolic link to sub/real, not a file: dump {src}/sub/real, "
                     f"or restore the link with 'tuckbox restore {short} --target DIR --include {src}/link'"], res.err
    assert tb("dump", "latest", str(src / "sub" / "real")).raw == b"the content\n"
