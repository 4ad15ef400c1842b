"""How raw paths (bytes, not necessarily UTF-8) are shown to people and written into JSON."""

from __future__ import annotations


def json_path(path: bytes | str) -> str:
    """A path as JSON text: exact where it is UTF-8, undecodable bytes as ``\\xff`` (JSON escapes the rest)."""
    raw = path.encode("utf-8", "surrogateescape") if isinstance(path, str) else path
    return raw.decode("utf-8", "backslashreplace")


def _escape(c: str) -> str:
    if c.isprintable():
        return c
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def display_path(path: bytes | str) -> str:
    """A path for a message or a listing: one line, with nothing a terminal acts on. Undecodable bytes are
    shown as ``\\xff``; characters that are not printable (newline, tab, escape, the bidirectional overrides,
    zero-width and line-separator characters) as ``\\x0a``, ``\\u202e``."""
    text = json_path(path)
    if text.isprintable():
        return text
    return "".join(map(_escape, text))
