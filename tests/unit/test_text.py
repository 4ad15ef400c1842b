"""How raw paths are shown in messages and listings, and written into JSON."""

from __future__ import annotations

import json
import os

from hypothesis import given
from hypothesis import strategies as st

import base64
import re

from tuckbox.text import display_path, given_forms, json_path, json_path_fields, parse_display


def test_messages_get_one_line_and_nothing_a_terminal_acts_on():
    assert display_path(b"/a/new\nline") == "/a/new\\x0aline"
    assert display_path(b"/a/tab\there") == "/a/tab\\x09here"
    assert display_path(b"/a/\x1b[31mred") == "/a/\\x1b[31mred"
    assert display_path("/a/\u202etxt.exe".encode()) == "/a/\\u202etxt.exe"  # right-to-left override
    assert display_path(b"/a/bad\xff\xfe") == "/a/bad\\xff\\xfe"  # not UTF-8
    assert display_path("/plain/h\u00e9llo/\u65e5\u672c") == "/plain/h\u00e9llo/\u65e5\u672c"  # text stays text


def test_a_name_holding_a_backslash_is_not_shown_like_an_escaped_byte():
    assert display_path(b"/a/\\xff") == "/a/\\\\xff"  # the four characters \ x f f
    assert display_path(b"/a/\xff") == "/a/\\xff"  # one byte that is not UTF-8
    assert display_path(b"dos\\path") == "dos\\\\path"
    assert display_path("\u0085".encode()) == "\\u0085"  # the character NEL, not the lone byte 0x85
    assert display_path(b"\x85") == "\\x85"


def _undisplay(shown: str) -> bytes:
    """The inverse of display_path: every escape it writes, read back."""
    out = bytearray()
    for m in re.finditer(r"\\\\|\\x([0-9a-f]{2})|\\u([0-9a-f]{4})|\\U([0-9a-f]{8})|[^\\]", shown, re.S):
        if m.group(1):
            out.append(int(m.group(1), 16))  # a byte (below 0x80 the same as the character)
        elif m.group(2) or m.group(3):
            out += chr(int(m.group(2) or m.group(3), 16)).encode()
        else:
            out += ("\\" if m.group(0) == "\\\\" else m.group(0)).encode()
    return bytes(out)


@given(st.one_of(st.binary(max_size=64), st.text(max_size=32).map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_no_two_names_are_shown_alike(raw):
    shown = display_path(raw)
    assert _undisplay(shown) == raw, (raw, shown)


def test_json_keeps_the_real_characters():
    assert json.loads(json.dumps(json_path(b"/a/new\nline"))) == "/a/new\nline"
    assert json_path(b"/a/bad\xff") == "/a/bad\\xff"
    assert json_path("/a/\udcff") == "/a/\\xff"  # a str from os.fsdecode with an undecodable byte


def test_json_gives_the_exact_bytes_of_a_name_that_is_not_utf8():
    assert json_path_fields("path", b"/a/\\xff") == {"path": "/a/\\xff"}  # exact text, nothing beside it
    doc = json_path_fields("path", b"/a/\xff")
    assert doc["path"] == "/a/\\xff" and base64.b64decode(doc["path_bytes"]) == b"/a/\xff"
    assert json_path_fields("link_target", "/a/\udcfe")["link_target_bytes"] == base64.b64encode(b"/a/\xfe").decode()


@given(st.binary(max_size=64))
def test_any_name_is_one_printable_line(raw):
    shown = display_path(raw)
    assert shown.isprintable(), repr(shown)  # (a space is printable)


@given(st.one_of(st.binary(max_size=64), st.text(max_size=32).map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_what_is_shown_can_be_given_back(raw):
    """A name given as ls shows it means that name: parse_display inverts display_path."""
    shown = display_path(raw)
    assert (parse_display(shown) or shown.encode("utf-8", "surrogateescape")) == raw, (raw, shown)
    assert given_forms(shown)[0] == raw


def test_a_backslash_that_starts_no_escape_means_itself():
    for typed in ("dos\\path", "a\\x4", "a\\u12", "a\\", "a\\q", "\\udcff", "\\U00110000"):
        assert parse_display(typed) is None and given_forms(typed) == [typed.encode()], typed
    assert parse_display("plain") is None and given_forms("plain") == [b"plain"]


def test_a_name_typed_as_on_disk_is_still_meant():
    assert given_forms("x\\xff") == [b"x\xff", b"x\\xff"]  # as ls shows the byte, or the four characters
    assert given_forms("x\\\\xff") == [b"x\\xff", b"x\\\\xff"]
    assert given_forms(os.fsdecode(b"raw\xff")) == [b"raw\xff"]  # (from argv: a lone surrogate)
