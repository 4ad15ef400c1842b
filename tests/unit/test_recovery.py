"""Recovery shares (crypto.recovery) and kit pages (recovery_kit): split, parse, combine, refuse."""

from __future__ import annotations

import itertools
import re
import errno
import os
import random
import stat
import subprocess
from pathlib import Path

import pytest
from shamir_mnemonic.share import Share
from shamir_mnemonic.wordlist import WORDLIST

from tuckbox.crypto.recovery import (
    BEGIN,
    WORDS_PER_SHARE,
    check_repository,
    combine,
    parse_share,
    share_block,
    split_secret,
)
from tuckbox.errors import AccessDenied, IntegrityError, TuckboxError, UsageError
from tuckbox.recovery_kit import KitPage, qr_payload, render_html, render_text, write_kit

REPO = "5a" * 32
OTHER = "c3" * 32


def _kit(root: bytes, k: int = 3, n: int = 5, repo: str = REPO) -> list[str]:
    return [share_block(repo, m, i + 1, n, k) for i, m in enumerate(split_secret(root, k, n))]


def _parse_all(blocks: list[str]) -> list:
    return [parse_share(b, f"share-{i + 1}.txt") for i, b in enumerate(blocks)]


def _words(block: str) -> list[str]:
    return [w for line in block.splitlines()[3:-1] for w in line.split() if not w.isdigit()]


def _with_word(block: str, index: int, new: str) -> str:
    """``block`` with its ``index``-th share word (as ``_words`` counts them) replaced by ``new``: by position,
    not by the first match of its text (which may be an earlier, equal word, or part of the header)."""
    lines = block.splitlines(keepends=True)
    seen = 0
    for k in range(3, len(lines) - 1):
        tokens = lines[k].split(" ")
        for t, token in enumerate(tokens):
            word = token.strip()
            if not word or word.isdigit():
                continue
            if seen == index:
                tokens[t] = token.replace(word, new)
                lines[k] = " ".join(tokens)
                return "".join(lines)
            seen += 1
    raise AssertionError(f"no word {index}")


def _no_words_in(message: str, blocks: list[str]) -> None:
    words = {w for b in blocks for w in _words(b)}
    leaked = [w for w in message.replace(",", " ").replace(";", " ").split() if w in words]
    assert not leaked, f"share words in an error message: {leaked}"


def test_every_threshold_subset_recovers_the_root() -> None:
    root = os.urandom(32)
    shares = _parse_all(_kit(root))
    for subset in itertools.combinations(shares, 3):
        assert combine(list(subset)) == root
    assert combine(shares) == root  # extra shares are checked against the others, not ignored
    assert all(len(_words(b)) == WORDS_PER_SHARE for b in _kit(root))


def test_paper_key_is_one_of_one() -> None:
    root = os.urandom(32)
    (block,) = _kit(root, 1, 1)
    share = parse_share(block, "paper-key.txt")
    assert share.threshold == 1 and share.number == 1
    assert combine([share]) == root


@pytest.mark.parametrize("given,missing", [(2, "1 more share needed"), (1, "2 more shares needed")])
def test_fewer_shares_than_the_threshold_reveal_nothing(given: int, missing: str) -> None:
    root = os.urandom(32)
    blocks = _kit(root)
    with pytest.raises(AccessDenied) as e:
        combine(_parse_all(blocks)[:given])
    assert missing in e.value.message
    assert root.hex() not in e.value.message
    _no_words_in(e.value.message, blocks)


def test_the_same_share_twice_counts_once() -> None:
    shares = _parse_all(_kit(os.urandom(32)))
    with pytest.raises(AccessDenied, match="1 more share needed"):
        combine([shares[0], shares[0], shares[1]])


def test_one_changed_word_is_named_by_position_at_every_position() -> None:
    blocks = _kit(os.urandom(32))
    rng = random.Random(7)
    for pos in range(WORDS_PER_SHARE):
        words = _words(blocks[1])
        words[pos] = rng.choice([w for w in WORDLIST if w != words[pos]])
        with pytest.raises(IntegrityError) as e:
            parse_share(" ".join(words), "kit/share-2.txt")
        assert f"word {pos + 1} is wrong" in e.value.message
        assert "kit/share-2.txt" in e.value.message
        _no_words_in(e.value.message, blocks)


def test_two_changed_words_are_caught_without_a_false_position() -> None:
    blocks = _kit(os.urandom(32))
    words = _words(blocks[0])
    words[5], words[20] = WORDLIST[(WORDLIST.index(words[5]) + 1) % 1024], WORDLIST[(WORDLIST.index(words[20]) + 3) % 1024]
    with pytest.raises(IntegrityError, match="more than one word is wrong"):
        parse_share(" ".join(words), "s.txt")


def test_a_misspelt_word_is_named_without_quoting_it() -> None:
    blocks = _kit(os.urandom(32))
    words = _words(blocks[0])
    typo = words[6][:-1] + "qq"
    words[6] = typo
    with pytest.raises(IntegrityError) as e:
        parse_share(" ".join(words), "s.txt")
    assert "word 7" in e.value.message and "word list" in e.value.message
    assert typo not in e.value.message


def test_a_missing_word_is_reported_with_the_count() -> None:
    block = _kit(os.urandom(32))[0]
    lines = block.splitlines()
    damaged = "\n".join(lines[:4] + [lines[4].split("  ")[0]] + lines[5:])  # drop words 2 and 3 of the first row
    with pytest.raises(IntegrityError, match=f"has {WORDS_PER_SHARE - 2} words, a share has {WORDS_PER_SHARE}"):
        parse_share(damaged, "s.txt")


def test_something_that_is_not_a_share_is_refused() -> None:
    with pytest.raises(UsageError, match="does not hold a recovery share"):
        parse_share("my passphrase is hunter2\n", "notes.txt")


def test_a_share_of_another_repository_is_refused_naming_both() -> None:
    shares = _parse_all(_kit(os.urandom(32), repo=OTHER))
    with pytest.raises(AccessDenied) as e:
        check_repository(shares, REPO, "/backups")
    assert OTHER[:8] in e.value.message and REPO[:8] in e.value.message
    mixed = _parse_all(_kit(os.urandom(32)))[:2] + shares[:1]
    with pytest.raises(AccessDenied, match="different repositories"):
        combine(mixed)


def test_a_typing_mistake_in_the_repository_line_does_not_refuse_the_share() -> None:
    """The line is typed back from paper too; a digit or two wrong is not 'the kit of another repository'
    (it is not authenticated anyway: the combined secret is what must unlock the repository)."""
    root = os.urandom(32)
    blocks = _kit(root)
    typo = REPO[:10] + "0" + REPO[11:40] + "ff" + REPO[42:]
    blocks[1] = blocks[1].replace(REPO, typo)
    shares = _parse_all(blocks[:3])
    assert shares[1].repository == typo
    checked = check_repository(shares, REPO, "/backups")
    assert {s.repository for s in checked} == {REPO}
    assert combine(checked) == root


def test_shares_of_two_kits_of_the_same_secret_do_not_mix() -> None:
    root = os.urandom(32)
    a, b = _parse_all(_kit(root)), _parse_all(_kit(root))
    with pytest.raises(AccessDenied, match="different recovery kits"):
        combine([a[0], a[1], b[2]])


def test_a_share_altered_with_a_valid_checksum_is_caught() -> None:
    root = os.urandom(32)
    shares = _parse_all(_kit(root))
    s = shares[3].share
    forged = Share(s.identifier, s.extendable, s.iteration_exponent, s.group_index, s.group_threshold,
                   s.group_count, s.index, s.member_threshold, bytes([s.value[0] ^ 1]) + s.value[1:])
    bad = parse_share(forged.mnemonic(), "forged.txt")  # passes its own checksum
    with pytest.raises(IntegrityError, match="forged.txt does not agree"):
        combine(shares[:3] + [bad])
    with pytest.raises(IntegrityError, match="do not fit together"):
        combine(shares[:2] + [bad])


@pytest.mark.parametrize("k,n", [(4, 3), (1, 3), (2, 17), (0, 1)])
def test_impossible_kits_are_refused(k: int, n: int) -> None:
    with pytest.raises(UsageError):
        split_secret(os.urandom(32), k, n)


def _page(number: int = 2, mnemonic: str | None = None, count: int = 5, threshold: int = 3) -> KitPage:
    mnemonic = mnemonic or split_secret(os.urandom(32), threshold, count)[number - 1]
    return KitPage(REPO, "/mnt/<usb> & backups", number, count, threshold, mnemonic, "2025-01-02 03:04 UTC")


def test_every_page_form_parses_back_to_the_share() -> None:
    root = os.urandom(32)
    mnemonics = split_secret(root, 3, 5)
    pages = [_page(i + 1, m) for i, m in enumerate(mnemonics)]
    from_text = [parse_share(render_text(p), "t") for p in pages[:3]]
    from_qr = [parse_share(qr_payload(p), "q") for p in pages[2:]]
    assert all(s.repository == REPO for s in from_text + from_qr)
    assert combine(from_text) == root and combine(from_qr) == root
    # just the words, typed by hand in capitals with odd spacing
    typed = [parse_share("\n  ".join(m.upper().split()), "typed") for m in mnemonics[1:4]]
    assert typed[0].repository is None and combine(typed) == root


def test_text_page_tells_a_non_technical_keeper_what_to_do() -> None:
    page = _page()
    text = render_text(page)
    for needed in (REPO, "share 2 of 5", "any 3 of the 5", "WHAT THIS IS", "KEEP IT SAFE", "HOW TO USE IT",
                   "--recover share-1.txt share-2.txt share-3.txt", BEGIN):
        assert needed in text
    last = page.mnemonic.split()[-1]
    numbered = [line for line in text.splitlines() if f"33 {last}" in line]
    assert numbered, "words are numbered so errors can name a position"


def test_html_page_has_qr_code_words_and_escaped_fields() -> None:
    page = _page(count=5, threshold=3)
    doc = render_html(page)
    assert doc.startswith("<!DOCTYPE html>") and "<svg" in doc
    assert REPO in doc and "Backup recovery share 2 of 5" in doc and "any 3 of the 5" in doc
    assert all(w in doc for w in page.mnemonic.split())
    assert "/mnt/&lt;usb&gt; &amp; backups" in doc and "<usb>" not in doc


def test_write_kit_files_are_private_and_never_overwritten(tmp_path: Path) -> None:
    root = os.urandom(32)
    out = tmp_path / "kit"
    files = write_kit(out, root, repository_id=REPO, location="/b", created="now", shares=3, threshold=2)
    assert sorted(f.name for f in files) == [f"share-{i}.{e}" for i in (1, 2, 3) for e in ("html", "txt")]
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    before = (out / "share-1.txt").read_bytes()
    with pytest.raises(UsageError, match="already exists"):
        write_kit(out, os.urandom(32), repository_id=REPO, location="/b", created="now", shares=3, threshold=2)
    assert (out / "share-1.txt").read_bytes() == before
    shares = [parse_share((out / f"share-{i}.txt").read_text(), str(i)) for i in (1, 3)]
    assert combine(shares) == root
    paper = write_kit(tmp_path / "paper", root, repository_id=REPO, location="/b", created="now", shares=1,
                      threshold=1)
    assert [f.name for f in paper] == ["paper-key.txt", "paper-key.html"]
    assert combine([parse_share(paper[0].read_text(), "p")]) == root


def test_a_repository_path_that_is_not_utf8_is_shown_escaped(tmp_path: Path) -> None:
    root = os.urandom(32)
    out = tmp_path / "kit"
    files = write_kit(out, root, repository_id=REPO, location="/mnt/b\udcfe", created="now", shares=3, threshold=2)
    text = (out / "share-1.txt").read_text(encoding="utf-8")
    assert "/mnt/b\\xfe" in text and "/mnt/b\\xfe" in (out / "share-1.html").read_text(encoding="utf-8")
    assert combine([parse_share(f.read_text(), f.name) for f in files if f.suffix == ".txt"][:2]) == root


def test_a_kit_that_cannot_be_written_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tuckbox.recovery_kit as kit_module

    real, calls = os.fsync, []

    def failing_fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 3:  # the second share's text page
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    monkeypatch.setattr(kit_module.os, "fsync", failing_fsync)
    out = tmp_path / "kit"
    with pytest.raises(UsageError, match="cannot write the recovery kit"):
        write_kit(out, os.urandom(32), repository_id=REPO, location="/b", created="now", shares=3, threshold=2)
    assert list(out.iterdir()) == []


def test_errors_are_tuckbox_errors_with_one_line() -> None:
    blocks = _kit(os.urandom(32))
    for bad in ("", "word " * 33, _with_word(blocks[0], 0, "zzzz")):
        with pytest.raises(TuckboxError) as e:
            parse_share(bad, "x.txt")
        assert "\n" not in e.value.message


def test_the_printable_html_page_is_read_like_the_text_page(tmp_path: Path) -> None:
    """Someone who kept share-N.html (it holds the same words) and not the .txt is not told that the file
    'does not hold a recovery share'."""
    from tuckbox.repository.keyring import read_share_files

    root = os.urandom(32)
    files = write_kit(tmp_path / "kit", root, repository_id=REPO, location="/b", created="now", shares=3, threshold=2)
    html = sorted(str(f) for f in files if str(f).endswith(".html"))
    assert len(html) == 3
    shares = read_share_files(html[:2])
    assert [s.number for s in shares] == [1, 2] and {s.repository for s in shares} == {REPO}
    assert combine(shares) == root


def test_a_block_typed_back_with_other_dashes_or_case_is_read() -> None:
    root = os.urandom(32)
    blocks = _kit(root)
    retyped = [b.replace("-----BEGIN", "----BEGIN").replace("SHARE-----", "share ---").replace("-----END", "--- end")
               for b in blocks[:3]]
    assert "----BEGIN" in retyped[0] and "--- end" in retyped[0]
    parsed = _parse_all(retyped)
    assert all(s.repository == REPO for s in parsed) and combine(parsed) == root


def test_many_unknown_words_are_counted_not_only_the_first_five() -> None:
    words = _words(_kit(os.urandom(32))[0])
    for i in range(8):
        words[i] = "qqq" + words[i]
    with pytest.raises(IntegrityError) as e:
        parse_share(" ".join(words), "s.txt")
    assert "word 1, 2, 3, 4, 5 and 3 more are not on" in e.value.message


def test_enough_shares_of_one_kit_open_even_with_a_page_of_another_kit_among_them() -> None:
    """Years later the pages come back from friends, some of an older kit of the same repository (the page
    itself says to make a new kit when a piece is lost, and old kits stay valid): the complete kit is used,
    whichever order the files come in, and the stray page of the other kit does not stop it."""
    root = os.urandom(32)
    old, new = _parse_all(_kit(root, 3, 5)), _parse_all(_kit(root, 2, 3))
    assert combine([new[0], old[0], old[1], old[2]]) == root
    assert combine([old[0], old[1], new[0], new[2]]) == root
    assert combine([old[3], new[1], old[4], old[0]]) == root


def test_two_incomplete_kits_say_what_each_one_lacks() -> None:
    root = os.urandom(32)
    old, new = _parse_all(_kit(root, 3, 5)), _parse_all(_kit(root, 3, 5))
    with pytest.raises(AccessDenied) as e:
        combine([old[0], new[1], old[2], new[3]])
    msg = e.value.message
    assert "2 different recovery kits" in msg
    assert "share-1.txt, share-3.txt: 1 more share needed" in msg and "share-2.txt, share-4.txt: 1 more" in msg
    assert "\n" not in msg
    _no_words_in(msg, [s.mnemonic for s in old + new])


def test_a_block_typed_without_its_dashes_or_without_its_end_line_is_read() -> None:
    root = os.urandom(32)
    blocks = _kit(root)
    no_dashes = blocks[0].replace("-----", "")
    no_end = "\n".join(blocks[1].splitlines()[:-1])
    lower = blocks[2].replace("-----", "").lower()
    parsed = [parse_share(t, f"s{i}.txt") for i, t in enumerate((no_dashes, no_end, lower))]
    assert all(s.repository == REPO for s in parsed) and combine(parsed) == root


def test_several_shares_typed_into_one_file_are_each_read(tmp_path: Path) -> None:
    from tuckbox.repository.keyring import read_share_files

    root = os.urandom(32)
    blocks = _kit(root)
    (tmp_path / "all.txt").write_text("my shares\n\n" + "\n".join(blocks[:3]))
    shares = read_share_files([str(tmp_path / "all.txt")])
    assert [s.number for s in shares] == [1, 2, 3] and combine(shares) == root
    bad = _with_word(blocks[1], 4, "qqqq")
    assert _words(bad)[4] == "qqqq" and _words(bad)[:4] + _words(bad)[5:] == _words(blocks[1])[:4] + _words(blocks[1])[5:]
    (tmp_path / "bad.txt").write_text("\n".join([blocks[0], bad]))
    with pytest.raises(IntegrityError, match=r"bad.txt \(its share block 2\): word 5 is not on"):
        read_share_files([str(tmp_path / "bad.txt")])


def _commands(text: str) -> list[list[str]]:
    """The shell commands of a text page, as a shell reads them (backslash-newline continues a line)."""
    import shlex

    joined = text.replace("\\\n", " ")
    return [shlex.split(line) for line in joined.splitlines() if line.strip().startswith("tuckbox ")]


def test_the_text_page_fits_one_printed_sheet_with_the_key_on_it() -> None:
    """Printed as it is (80 columns, 66 lines a sheet), the page does not run off the paper or onto a
    second sheet, even for the largest kit and a long location; the key comes first, right under its facts."""
    location = "sftp://backup@nas.example.org:2222/srv/backups/laptop-2025"
    for k, n in ((16, 16), (3, 5), (1, 1)):
        mnemonics = split_secret(os.urandom(32), k, n)
        text = render_text(KitPage(REPO, location, n, n, k, mnemonics[-1], "2025-01-02 03:04 UTC"))
        lines = text.splitlines()
        assert len(lines) <= 66, (k, n, len(lines))
        assert max(len(line) for line in lines) <= 78, max(lines, key=len)
        end = next(i for i, line in enumerate(lines) if line.startswith("-----END"))
        assert end < next(i for i, line in enumerate(lines) if line == "WHAT THIS IS")
        recover = ["paper-key.txt"] if n == 1 else [f"share-{i}.txt" for i in range(1, k + 1)]
        assert _commands(text) == [
            ["tuckbox", "-r", location, "restore", "latest", "--target", "restored-files", "--recover", *recover],
            ["tuckbox", "-r", location, "key", "add", "--recover", *recover],
        ]


def test_the_commands_on_a_page_work_for_a_location_with_spaces_and_quotes() -> None:
    """Typed into a real shell as printed (continued lines and all), the location arrives as it is: not split
    at its spaces, and a $ in it is not expanded (it was printed in double quotes)."""
    location = "/mnt/My Backups/Anne's disk $HOME"
    text = render_text(KitPage(REPO, location, 1, 5, 3, split_secret(os.urandom(32), 3, 5)[0], "now"))
    lines = text.splitlines()
    script = ["tuckbox() { printf '%s\\0' \"$@\"; printf '\\n'; }"]
    for i, line in enumerate(lines):
        if line.strip().startswith("tuckbox "):
            j = i
            while lines[j].endswith("\\"):
                j += 1
            script += lines[i : j + 1]
    got = subprocess.run(["bash", "-c", "\n".join(script)], capture_output=True, text=True, check=True).stdout
    argvs = [line.split("\0")[:-1] for line in got.splitlines()]
    assert [a[:3] for a in argvs] == [["-r", location, "restore"], ["-r", location, "key"]]
    assert argvs[0][-3:] == ["share-1.txt", "share-2.txt", "share-3.txt"]


def test_the_printable_page_shows_the_key_first_and_keeps_it_in_one_piece() -> None:
    doc = render_html(_page(count=16, threshold=16, number=16))
    assert doc.index('class="key"') < doc.index("What this is")
    assert "break-inside: avoid" in doc
    for cmd in re.findall(r"<pre>(.*?)</pre>", doc, re.DOTALL):  # continued lines, never broken mid-word
        assert all(line.rstrip().endswith("\\") for line in cmd.splitlines()[:-1])


def test_the_printable_page_fits_one_a4_or_letter_sheet() -> None:
    weasyprint = pytest.importorskip("weasyprint")  # (a renderer, where one is installed)
    location = "sftp://backup@nas.example.org:2222/srv/backups/laptop/with/a/long/path"
    for k, n in ((16, 16), (3, 5), (1, 1)):
        doc = render_html(KitPage(REPO, location, n, n, k, split_secret(os.urandom(32), k, n)[-1], "now"))
        for size in ("A4", "letter"):
            pages = weasyprint.HTML(string=doc.replace("size: A4", f"size: {size}")).render().pages
            assert len(pages) == 1, (k, n, size)


@pytest.mark.parametrize("typo", ["digit-for-letter", "letter-o-as-zero"])
def test_a_digit_typed_for_a_letter_names_the_word(typo: str) -> None:
    """'c0lumn' or 'ho1o' typed back from paper: the word is named by position, not taken for two words
    ('34 words, too many', which says nothing about where)."""
    block = _kit(os.urandom(32))[0]
    word = _words(block)[8]
    bad = word[:1] + "0" + word[2:] if typo == "letter-o-as-zero" else word[:2] + "1" + word[3:]
    lines = block.splitlines()
    row = next(i for i, line in enumerate(lines) if f" 9 {word}" in line)
    lines[row] = lines[row].replace(f" 9 {word}", f" 9 {bad}")
    with pytest.raises(IntegrityError) as e:
        parse_share("\n".join(lines), "share-1.txt")
    assert "word 9 is not on the recovery-kit word list" in e.value.message
    _no_words_in(e.value.message, [block])


def test_numbers_typed_with_dots_or_brackets_are_ignored() -> None:
    root = os.urandom(32)
    blocks = _kit(root)
    typed = [" ".join(f"{i + 1}. {w}," if i % 2 else f"({i + 1}){w}" for i, w in enumerate(_words(b)))
             for b in blocks[:2]]
    typed.append("-".join(_words(blocks[2])))  # (words joined by dashes)
    assert combine([parse_share(t, f"t{i}") for i, t in enumerate(typed)]) == root
