"""How raw paths (bytes, not necessarily UTF-8) are shown to people and written into JSON.

Both forms are lossless. On screen a backslash is shown doubled, so a single backslash always starts an
escape: ``\\xff`` on screen is a byte that is not UTF-8 and ``\\\\xff`` the four characters backslash, x, f, f.
In JSON, ``path`` is the exact text of a UTF-8 name; a name that is not UTF-8 shows each undecodable byte as
``\\xff`` and gets, beside ``path``, ``path_bytes``: its exact bytes in base64.
"""

from __future__ import annotations

import base64


def _raw(path: bytes | str) -> bytes:
    return path.encode("utf-8", "surrogateescape") if isinstance(path, str) else path


def json_path(path: bytes | str) -> str:
    """A path as JSON text: exact where it is UTF-8, undecodable bytes as ``\\xff`` (JSON escapes the rest)."""
    return _raw(path).decode("utf-8", "backslashreplace")


def json_path_fields(key: str, path: bytes | str) -> dict[str, str]:
    """``{key: text}``, plus ``{key}_bytes`` (base64 of the exact bytes) when the path is not UTF-8 and the
    text alone would be ambiguous."""
    raw = _raw(path)
    try:
        return {key: raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {key: raw.decode("utf-8", "backslashreplace"), f"{key}_bytes": base64.b64encode(raw).decode()}


def _escape(c: str) -> str:
    if c == "\\":
        return "\\\\"
    if c.isprintable():
        return c
    n = ord(c)
    # \xNN only below 0x80: above it, \xNN is a byte that is not UTF-8 (U+0085 is \u0085, never \x85)
    return f"\\x{n:02x}" if n < 0x80 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def display_path(path: bytes | str) -> str:
    """A path for a message or a listing: one line, with nothing a terminal acts on, and no two names shown
    alike. Undecodable bytes are shown as ``\\xff``; characters that are not printable (newline, tab,
    escape, the bidirectional overrides, zero-width and line-separator characters) as ``\\x0a``,
    ``\\u202e``; a backslash as ``\\\\``."""
    raw = _raw(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        if text.isprintable() and "\\" not in text:
            return text
    # character by character; an undecodable byte (a lone surrogate after surrogateescape) as \xNN
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if "\udc80" <= c <= "\udcff" else _escape(c)
                   for c in raw.decode("utf-8", "surrogateescape"))
