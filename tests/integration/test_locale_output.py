"""Names in the output of a machine whose locale is not UTF-8 (LANG=C with PYTHONUTF8=0, an ISO-8859-1 locale,
PYTHONIOENCODING=ascii under cron), and names that are not UTF-8 at all: shown losslessly, once, never an
internal error."""

from __future__ import annotations

import os

from .conftest import Tuckbox


def test_names_the_output_encoding_lacks_are_escaped_not_an_internal_error(tb: Tuckbox, tmp_path) -> None:
    """ls, find and snapshots with an ASCII or Latin-1 standard output stopped at the first name holding a
    character it lacks: 'internal error: UnicodeEncodeError', exit 1, the listing cut off."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "naïve ü.txt").write_text("a")
    (src / "日本 😀.txt").write_text("b")
    tb("init")
    tb("backup", str(src))
    for env in ({"PYTHONIOENCODING": "ascii"}, {"PYTHONIOENCODING": "latin-1"}, {"LC_ALL": "C", "PYTHONUTF8": "0"}):
        listed = tb("ls", "latest", str(src), env=env).raw.decode("latin-1").splitlines()
        assert f"{src}/\\u65e5\\u672c \\U0001f600.txt" in listed, (env, listed)
        if env.get("PYTHONIOENCODING") == "latin-1":  # (what Latin-1 has is written as it is)
            assert f"{src}/naïve ü.txt" in listed
        else:  # (never \xef: that is how a byte that is not UTF-8 is shown)
            assert f"{src}/na\\u00efve \\u00fc.txt" in listed
        assert "\\U0001f600" in tb("find", "*.txt", env=env).out
        assert str(src) in tb("snapshots", env=env).out


def test_snapshots_shows_a_path_that_is_not_utf8_once_escaped(tb: Tuckbox, tmp_path) -> None:
    """'snapshots' escaped the paths column twice: a path with the byte 0xE9 was shown as l\\\\xe9nk, which by
    README's convention is the text backslash-x-e-9, and a backslash in a name came out quadrupled."""
    src = os.fsencode(tmp_path) + b"/l\xe9n\\k"
    os.mkdir(src)
    tb("init")
    tb("backup", os.fsdecode(src))
    out = tb("snapshots").out
    assert f"{tmp_path}/l\\xe9n\\\\k  " in out, out
