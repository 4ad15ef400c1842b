"""Names in the output of a machine whose locale is not UTF-8 (LANG=C with PYTHONUTF8=0, an ISO-8859-1 locale,
PYTHONIOENCODING=ascii under cron), and names that are not UTF-8 at all: shown losslessly, once, never an
internal error."""

from __future__ import annotations

import os

from .conftest import Tuckbox


def test_snapshots_shows_a_path_that_is_not_utf8_once_escaped(tb: Tuckbox, tmp_path) -> None:
    """'snapshots' escaped the paths column twice: a path with the byte 0xE9 was shown as l\\\\xe9nk, which by
    README's convention is the text backslash-x-e-9, and a backslash in a name came out quadrupled."""
    src = os.fsencode(tmp_path) + b"/l\xe9n\\k"
    os.mkdir(src)
    tb("init")
    tb("backup", os.fsdecode(src))
    out = tb("snapshots").out
    assert f"{tmp_path}/l\\xe9n\\\\k  " in out, out
