"""How raw paths (bytes, not necessarily UTF-8) are shown to people and written into JSON.

Both forms are lossless. On screen a backslash is shown doubled, so a single backslash always starts an
escape: ``\\xff`` on screen is a byte that is not UTF-8 and ``\\\\xff`` the four characters backslash, x, f, f.
In JSON, ``path`` is the exact text of a UTF-8 name; a name that is not UTF-8 shows each undecodable byte as
``\\xff`` and gets, beside ``path``, ``path_bytes``: its exact bytes in base64 (a list of paths, ``paths``, gets
``paths_bytes``, every path's bytes in order, when any of them is not UTF-8).

What is shown can be given back: ``parse_display`` reads a path or pattern typed as shown.
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


def json_paths_fields(key: str, paths: "list[bytes] | list[str]") -> dict[str, list[str]]:
    """``{key: [text, ...]}`` for a list of paths, plus ``{key}_bytes`` (the base64 of every path's exact bytes, in
    the same order) when any of them is not UTF-8: as ``json_path_fields`` does for one path."""
    raws = [_raw(p) for p in paths]
    doc = {key: [json_path(r) for r in raws]}
    try:
        for r in raws:
            r.decode("utf-8")
    except UnicodeDecodeError:
        doc[f"{key}_bytes"] = [base64.b64encode(r).decode() for r in raws]
    return doc


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


_WIDTH = {"x": 2, "u": 4, "U": 8}


def parse_display(text: str | bytes) -> bytes | None:
    """The exact bytes of a name or pattern given as ``display_path`` shows it, or None when ``text`` holds no
    escape or is not in that form (a backslash that starts none of ``\\\\``, ``\\xNN``, ``\\uNNNN``,
    ``\\UNNNNNNNN``): then it means itself. In a pattern, a decoded character is no different from a typed one
    (``\\x2a`` is ``*``, a wildcard); ``display_path`` never shows a printable character escaped."""
    raw = _raw(text) if isinstance(text, str) else text
    if b"\\" not in raw:
        return None
    s = raw.decode("utf-8", "surrogateescape")
    out = bytearray()
    i = 0
    while i < len(s):
        c = s[i]
        if c != "\\":
            out += c.encode("utf-8", "surrogateescape")
            i += 1
            continue
        kind = s[i + 1:i + 2]
        if kind == "\\":
            out += b"\\"
            i += 2
            continue
        width = _WIDTH.get(kind)
        digits = s[i + 2:i + 2 + width] if width else ""
        if not width or len(digits) != width or not all(d in "0123456789abcdefABCDEF" for d in digits):
            return None
        n = int(digits, 16)
        if kind == "x":
            chunk = bytes([n])
        elif n > 0x10FFFF or 0xD800 <= n <= 0xDFFF:
            return None
        else:
            chunk = chr(n).encode("utf-8")
        out += chunk
        i += 2 + width
    return bytes(out)


def given_forms(text: str | bytes) -> list[bytes]:
    """What a path or pattern given by a user can mean: the name ``ls``, ``find`` and ``diff`` show as
    ``text`` (backslash escapes decoded), then ``text`` itself, exactly (a name with a backslash in it,
    typed as it is on disk); one of them when they are the same."""
    raw = _raw(text) if isinstance(text, str) else text
    decoded = parse_display(raw)
    return [raw] if decoded is None or decoded == raw else [decoded, raw]
