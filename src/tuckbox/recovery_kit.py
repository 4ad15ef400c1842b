"""Recovery kit pages: one printable page per share (plain text and HTML with a QR code).

``write_kit`` splits the root secret (crypto.recovery) and writes, into a new
or empty directory created with mode 0700, for share N of n::

    share-N.txt    the plain-text page (what --recover reads)
    share-N.html   the same page for printing, with a QR code of the share

or ``paper-key.txt`` / ``paper-key.html`` for a single printed key (--paper).
Every file is created exclusively with mode 0600. The pages are written for
someone who is not technical: what the page is, how to keep it, how to use it.
"""

from __future__ import annotations

import html
import os
import shlex
import textwrap
from dataclasses import dataclass
from pathlib import Path

import segno

from .crypto.recovery import share_block, split_secret
from .errors import UsageError
from .text import display_path


@dataclass(frozen=True)
class KitPage:
    repository_id: str
    location: str
    number: int  # 1-based
    count: int
    threshold: int
    mnemonic: str
    created: str

    @property
    def paper(self) -> bool:
        return self.count == 1

    @property
    def name(self) -> str:
        return "paper-key" if self.paper else f"share-{self.number}"

    @property
    def title(self) -> str:
        if self.paper:
            return "Backup paper key"
        return f"Backup recovery share {self.number} of {self.count}"


_SEP = "\x1f"  # between the words of a command in _sections (a quoted location may hold spaces)


def _command(*words: str) -> str:
    return "$ " + _SEP.join(words)


def _sections(page: KitPage) -> list[tuple[str, list[str]]]:
    """The instructions, as (heading, paragraphs); shared by the text and HTML pages."""
    n, k = page.count, page.threshold
    recover = ["paper-key.txt"] if page.paper else [f"share-{i}.txt" for i in range(1, k + 1)]
    repo = ["tuckbox", "-r", shlex.quote(page.location)]
    if page.paper:
        what = [
            "This page is the master key to a set of computer backups made with the program tuckbox. "
            "The backups are locked (encrypted); normally they are opened with a password. If that password "
            "is ever forgotten, this page alone can open them instead.",
            "Anyone who has this page, or a photo or copy of it, can read every file in those backups.",
        ]
        keep = [
            "Keep it somewhere safe and private, such as a safe, a safe-deposit box or a sealed envelope with "
            "important papers. Do not photograph it, scan it, e-mail it or store it on a computer or online.",
            "It never expires and cannot be changed: it stays valid for as long as the backups exist.",
        ]
    else:
        what = [
            f"This page is one of {n} pieces of a key to a set of computer backups made with the program "
            "tuckbox. The backups are locked (encrypted); normally they are opened with a password. If that "
            f"password is ever forgotten, any {k} of the {n} pieces together can open them instead.",
            f"One piece on its own is useless to anyone, and so are up to {k - 1} pieces together: they reveal "
            f"nothing about the backups. {k} pieces together can read every file in them.",
        ]
        keep = [
            "Keep this page safe, dry and private, and keep it apart from the other pieces: for example one "
            "with a trusted relative, one in a safe-deposit box, one with a friend or lawyer. Never keep "
            f"{k} pieces in the same place.",
            "Do not photograph it, scan it, e-mail it or store it on a computer or online.",
            f"If a piece is lost, the others still work as long as {k} remain; tell the owner of the backups "
            "so they can make a new kit. The pieces never expire: they stay valid as long as the backups exist.",
        ]
    use = [
        "You need a computer with tuckbox installed and access to the place where the backups are stored "
        f"('Stored at' at the top of this page). If you are not comfortable with computers, give "
        f"{'this page' if page.paper else 'the pieces'} to someone you trust who is.",
        f"1. Put {'the page into a text file' if page.paper else 'each page into its own text file'}: use the "
        "original .txt file if it was kept, or type the block between the BEGIN and END lines (the words, "
        "in order; the numbers do not matter), or scan the QR code and save its text.",
        "2. To get the files back (into a new folder named restored-files), run:",
        _command(*repo, "restore", "latest", "--target", "restored-files", "--recover", *recover),
        "3. Or, to set a new password for the backups instead, run (it asks for the new password twice):",
        _command(*repo, "key", "add", "--recover", *recover),
        "If a word was typed wrongly, tuckbox says which page and which word number to check. Only the words "
        "matter; capital letters and spacing do not.",
    ]
    return [("What this is", what), ("Keep it safe", keep), ("How to use it", use)]


def _facts(page: KitPage) -> list[tuple[str, str]]:
    which = "a single key (1 of 1)" if page.paper else (
        f"share {page.number} of {page.count}; any {page.threshold} of the {page.count} restore the backups")
    return [
        ("Repository", page.repository_id),
        ("This page", which),
        ("Stored at", page.location),
        ("Made", page.created),
    ]


WIDTH = 78  # columns of the text page: a printer's 80, less a margin
_COMMAND_INDENT = "    "


def command_lines(command: str, width: int = WIDTH) -> list[str]:
    """A shell command as indented lines of at most ``width`` columns, continued with a backslash, so it can be
    typed back from paper as it is (a word longer than a line, say a long location, stays whole)."""
    words = command.split(_SEP)
    lines: list[str] = []
    current = _COMMAND_INDENT + words[0]
    for word in words[1:]:
        if len(current) + 1 + len(word) + 2 > width:  # (room for " \\")
            lines.append(current + " \\")
            current = _COMMAND_INDENT * 2 + word
        else:
            current += " " + word
    return lines + [current]


def render_text(page: KitPage) -> str:
    """The plain-text page (at most 78 columns, and the key right under its facts so a page that spills onto a
    second sheet never splits it); ``crypto.recovery.parse_share`` reads it back."""
    heading = f"TUCKBOX - {page.title.upper()}"
    out = [heading, "=" * len(heading), ""]
    width = max(len(k) for k, _ in _facts(page)) + 1
    out += [f"{(k + ':').ljust(width)} {v}" for k, v in _facts(page)]
    out += ["", "THE KEY (keep exactly these words, in this order):"]
    out.append(share_block(page.repository_id, page.mnemonic, page.number, page.count, page.threshold,
                           per_line=_PER_ROW).rstrip("\n"))
    for title, paras in _sections(page):
        out += ["", title.upper(), "-" * len(title)]
        for para in paras:
            if para.startswith("$ "):  # a command: continued over lines with a backslash, never wrapped mid-word
                out += command_lines(para[2:])
            else:  # (paragraphs of a section follow each other without a blank line: the page fits one sheet)
                out += textwrap.wrap(para, WIDTH, break_long_words=False, break_on_hyphens=False)
    return "\n".join(out) + "\n"


def qr_payload(page: KitPage) -> str:
    """What the QR code holds: the share block without numbering (parse_share reads it too)."""
    return share_block(page.repository_id, page.mnemonic, page.number, page.count, page.threshold, numbered=False)


_PER_ROW = 4  # words in a row of the key, on both pages
_HTML_COMMAND_WIDTH = 96  # columns of a command on the printed page (8.5 pt monospace in 182 mm)
_CSS = """
@page { size: A4; margin: 12mm 14mm; }
body { font-family: Georgia, 'Times New Roman', serif; font-size: 10pt; color: #000; max-width: 182mm; margin: auto; }
h1 { font-size: 16pt; margin: 0 0 2mm 0; }
h2 { font-size: 11pt; margin: 3mm 0 1mm 0; border-bottom: 1px solid #000; }
p { margin: 0 0 1.2mm 0; line-height: 1.25; }
table.facts td { padding: 0.3mm 3mm 0.3mm 0; vertical-align: top; }
table.facts td.v { font-family: 'DejaVu Sans Mono', monospace; font-size: 9pt; word-break: break-all; }
.key { display: flex; gap: 6mm; align-items: flex-start; border: 2px solid #000; padding: 3mm; margin-top: 3mm;
       break-inside: avoid; page-break-inside: avoid; }
table.words { border-collapse: collapse; font-family: 'DejaVu Sans Mono', monospace; font-size: 10.5pt; }
table.words td { padding: 0.6mm 2mm; }
table.words td.n { color: #444; text-align: right; font-size: 8.5pt; }
.qr svg { width: 46mm; height: 46mm; }
.small { font-size: 8.5pt; }
pre { font-family: 'DejaVu Sans Mono', monospace; font-size: 8.5pt; margin: 0.5mm 0 1.5mm 0; white-space: pre; }
"""


def render_html(page: KitPage) -> str:
    """A self-contained printable page (one A4 or Letter sheet, the key at the top) with the words and a QR
    code."""
    e = html.escape
    qr = segno.make(qr_payload(page), error="m", micro=False)
    svg = qr.svg_inline(scale=3, border=4, dark="#000", light="#fff", omitsize=False)
    facts = "".join(f"<tr><td>{e(k)}</td><td class=\"v\">{e(v)}</td></tr>" for k, v in _facts(page))
    body = []
    for title, paras in _sections(page):
        body.append(f"<h2>{e(title)}</h2>")
        for para in paras:
            if para.startswith("$ "):
                # the same lines as the text page (continued with a backslash): nothing wraps mid-option
                body.append(f"<pre>{e(chr(10).join(command_lines(para[2:], _HTML_COMMAND_WIDTH)))}</pre>")
            else:
                body.append(f"<p>{e(para)}</p>")
    words = page.mnemonic.split()
    rows = (len(words) + _PER_ROW - 1) // _PER_ROW
    cells = []
    for r in range(rows):  # numbered row by row, as in the text page
        row = "".join(
            f"<td class=\"n\">{i + 1}</td><td>{e(words[i])}</td>"
            for i in range(r * _PER_ROW, min((r + 1) * _PER_ROW, len(words)))
        )
        cells.append(f"<tr>{row}</tr>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{e(page.title)}</title><style>{_CSS}</style></head><body>\n"
        f"<h1>{e(page.title)}</h1>\n<table class=\"facts\">{facts}</table>\n"
        "<div class=\"key\"><div><strong>The key</strong> (these words, in this order)"
        f"<table class=\"words\">{''.join(cells)}</table></div>"
        f"<div class=\"qr\">{svg}<div class=\"small\">The same key as a QR code</div></div></div>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` (owner-only, never over an existing file) holding ``text``; nothing is left if that fails."""
    data = text.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


def write_kit(
    output: Path,
    root: bytes,
    *,
    repository_id: str,
    location: str,
    created: str,
    shares: int,
    threshold: int,
) -> list[Path]:
    """Split ``root`` and write one text and one HTML page per share into ``output``."""
    mnemonics = split_secret(root, threshold, shares)
    location = display_path(location)  # (a path that is not UTF-8: its odd bytes as \xff)
    pages = [KitPage(repository_id, location, i + 1, shares, threshold, m, created) for i, m in enumerate(mnemonics)]
    try:
        output.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create the kit directory {display_path(str(output))}: {err.strerror}") from None
    names = [f"{p.name}.{ext}" for p in pages for ext in ("txt", "html")]
    clash = [n for n in names if (output / n).exists()]
    if clash:
        raise UsageError(f"{display_path(str(output / clash[0]))} already exists; write the kit to a new or empty directory")
    written: list[Path] = []
    try:
        for p in pages:
            for ext, text in (("txt", render_text(p)), ("html", render_html(p))):
                path = output / f"{p.name}.{ext}"
                _write_private(path, text)
                written.append(path)
    except OSError as err:
        for path in written:
            try:
                path.unlink()
            except OSError:
                pass
        raise UsageError(f"cannot write the recovery kit into {display_path(str(output))}: {err.strerror}") from None
    return written
