"""How raw paths are shown in messages and listings, and written into JSON."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from tuckbox.text import display_path, json_path


def test_messages_get_one_line_and_nothing_a_terminal_acts_on():
    assert display_path(b"/a/new\nline") == "/a/new\\x0aline"
    assert display_path(b"/a/tab\there") == "/a/tab\\x09here"
    assert display_path(b"/a/\x1b[31mred") == "/a/\\x1b[31mred"
    assert display_path("/a/\u202etxt.exe".encode()) == "/a/\\u202etxt.exe"  # right-to-left override
    assert display_path(b"/a/bad\xff\xfe") == "/a/bad\\xff\\xfe"  # not UTF-8
    assert display_path("/plain/h\u00e9llo/\u65e5\u672c") == "/plain/h\u00e9llo/\u65e5\u672c"  # text stays text


def test_json_keeps_the_real_characters():
    assert json.loads(json.dumps(json_path(b"/a/new\nline"))) == "/a/new\nline"
    assert json_path(b"/a/bad\xff") == "/a/bad\\xff"
    assert json_path("/a/\udcff") == "/a/\\xff"  # a str from os.fsdecode with an undecodable byte


@given(st.binary(max_size=64))
def test_any_name_is_one_printable_line(raw):
    shown = display_path(raw)
    assert shown.isprintable(), repr(shown)  # (a space is printable)
