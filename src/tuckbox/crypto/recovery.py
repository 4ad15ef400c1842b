"""Recovery shares: the 32-byte root secret split into k-of-n SLIP-39 mnemonic shares.

A share is a SLIP-39 mnemonic (33 words from a 1024-word list for a 32-byte
secret) with a single group: group threshold 1, one group of ``threshold``
out of ``count`` members. A paper key is the 1-of-1 case. The SLIP-39
passphrase is always empty: a kit must work with nothing but its pages (the
pages themselves are the secret to protect; see docs/keys.md).

Each share travels in an armoured block that also names the repository, so a
share from another repository is refused before anything is combined::

    -----BEGIN TUCKBOX RECOVERY SHARE-----
    repository <64 hex digits>
    share 1 of 5, any 3 restore
     1 academic   2 acid      3 acne  ...
    -----END TUCKBOX RECOVERY SHARE-----

The repository line is informational (it is not authenticated); the real
check is that the combined secret authenticates the repository's config.
Nothing here prints or returns share words in an error message: problems
are named by share file and word position only.

This module has no CLI and no repository knowledge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import shamir_mnemonic
from shamir_mnemonic.constants import CUSTOMIZATION_STRING_EXTENDABLE, CUSTOMIZATION_STRING_ORIG
from shamir_mnemonic.share import Share
from shamir_mnemonic.utils import MnemonicError
from shamir_mnemonic.wordlist import WORD_INDEX_MAP

from ..errors import AccessDenied, IntegrityError, UsageError
from .keys import ROOT_LEN

BEGIN = "-----BEGIN TUCKBOX RECOVERY SHARE-----"
END = "-----END TUCKBOX RECOVERY SHARE-----"
MAX_SHARES = 16  # SLIP-39's limit
WORDS_PER_SHARE = 33  # for a 32-byte secret: 7 metadata/checksum words + 26 value words
_REPO_LINE = re.compile(r"^\s*repository(?:\s+id)?\s*[:=]?\s*([0-9a-fA-F]{64})\s*$", re.MULTILINE | re.IGNORECASE)
# a BEGIN or END line, typed back by hand: any number of dashes (none too), any case and spacing
_MARKER = re.compile(r"^[\s\-]*(BEGIN|END)\s+TUCKBOX\s+RECOVERY\s+SHARE[\s\-]*$", re.IGNORECASE)
_BLOCK_START = re.compile(r"^[\s\-]*BEGIN\s+TUCKBOX\s+RECOVERY\s+SHARE[\s\-]*$", re.IGNORECASE | re.MULTILINE)
_METADATA_PREFIXES = ("repository", "share ")
# the printable page (recovery_kit.render_html): the words are the plain cells of its words table
_HTML_WORDS = re.compile(r'<table class="words">(.*?)</table>', re.DOTALL)
_HTML_WORD = re.compile(r"<td>([A-Za-z]+)</td>")
_HTML_REPO = re.compile(r'<td>Repository</td><td class="v">([0-9a-fA-F]{64})</td>')

# RS1024 generator (SLIP-39): the checksum is an affine function of the word values,
# which lets a single wrong word be located without ever printing any word.
_GEN = (0xE0E040, 0x1C1C080, 0x3838100, 0x7070200, 0xE0E0009, 0x1C0C2412, 0x38086C24, 0x3090FC48, 0x21B1F890, 0x3F3F120)


@dataclass(frozen=True)
class ParsedShare:
    source: str  # where it came from (a file name), for messages
    repository: str | None  # repository id named by the share's block, if any
    share: Share

    @property
    def number(self) -> int:
        """The share's number as printed on its page (1-based)."""
        return self.share.index + 1

    @property
    def threshold(self) -> int:
        return self.share.member_threshold

    @property
    def mnemonic(self) -> str:
        return self.share.mnemonic()


# --------------------------------------------------------------------------- split


def split_secret(root: bytes, threshold: int, count: int) -> list[str]:
    """Split the root secret into ``count`` mnemonics, any ``threshold`` of which recover it."""
    if len(root) != ROOT_LEN:
        raise ValueError("the root secret must be 32 bytes")
    check_kit_shape(threshold, count)
    groups = shamir_mnemonic.generate_mnemonics(1, [(threshold, count)], root, b"", extendable=True)
    return groups[0]


def check_kit_shape(threshold: int, count: int) -> None:
    """Refuse, with a usage error, a kit of ``count`` shares that ``threshold`` of them cannot make sense of."""
    if not 1 <= count <= MAX_SHARES:
        raise UsageError(f"a kit has between 1 and {MAX_SHARES} shares, not {count}")
    if not 1 <= threshold <= count:
        raise UsageError(f"the threshold must be between 1 and the number of shares ({count}), not {threshold}")
    if threshold == 1 and count > 1:
        raise UsageError("with a threshold of 1 every share is a full key; use --paper for a single printed key, "
                         "or a threshold of at least 2")


def share_block(repository_id: str, mnemonic: str, number: int, count: int, threshold: int,
                numbered: bool = True, per_line: int = 3) -> str:
    """The armoured block for one share (with numbered words for a printed page, plain for a QR code)."""
    words = mnemonic.split()
    lines = [BEGIN, f"repository {repository_id}", f"share {number} of {count}, any {threshold} restore"]
    if numbered:
        for start in range(0, len(words), per_line):
            row = words[start : start + per_line]
            lines.append("  ".join(f"{start + i + 1:>2} {w:<9}" for i, w in enumerate(row)).rstrip())
    else:
        lines.append(" ".join(words))
    lines.append(END)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- parse


def _polymod(values: Sequence[int], chk: int) -> int:
    for v in values:
        b = chk >> 20
        chk = (chk & 0xFFFFF) << 10 ^ v
        for i in range(10):
            chk ^= _GEN[i] if ((b >> i) & 1) else 0
    return chk


def _custom(extendable: bool) -> bytes:
    return CUSTOMIZATION_STRING_EXTENDABLE if extendable else CUSTOMIZATION_STRING_ORIG


def _extendable(indices: Sequence[int]) -> bool:
    return bool(((indices[0] << 10 | indices[1]) >> 4) & 1)


def single_word_suspects(indices: Sequence[int]) -> list[int]:
    """0-based positions where replacing one word would make the checksum valid.

    RS1024 has distance 4, so a share with exactly one wrong word has exactly
    one such position under its own checksum variant (tried first); the other
    variant is tried only when a typo in the first two words may have flipped
    the "extendable" flag that selects it. With two or three wrong words there
    is (almost always) none.
    """
    own = _extendable(indices)
    for extendable in (own, not own):
        found = _suspects_for(indices, extendable)
        if found:
            return found
    return []


def _suspects_for(indices: Sequence[int], extendable: bool) -> list[int]:
    prefix = list(_custom(extendable))
    syndrome = _polymod(prefix + list(indices), 1) ^ 1
    if syndrome == 0:
        return []
    found: list[int] = []
    total = len(prefix) + len(indices)
    for pos in range(len(indices)):
        # the checksum is affine in the words: the effect of flipping bit b of word `pos`
        # is the polymod of a unit vector, started at 0
        tail = total - (len(prefix) + pos) - 1
        basis = [_polymod([1 << b] + [0] * tail, 0) for b in range(10)]
        contrib = [0] * 1024
        for delta in range(1, 1024):
            low = (delta & -delta).bit_length() - 1
            contrib[delta] = contrib[delta & (delta - 1)] ^ basis[low]
            if contrib[delta] == syndrome:
                fixed = list(indices)
                fixed[pos] ^= delta
                if _extendable(fixed) == extendable:
                    found.append(pos)
                    break
    return found


def _blocks(text: str) -> list[str]:
    """The share blocks of ``text``: each from a BEGIN line to its END line (or the next BEGIN, or the end of
    the text: an END line left out when typing back is not needed); the whole text if it has no BEGIN line."""
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in text.splitlines():
        m = _MARKER.match(line)
        if m and m.group(1).upper() == "BEGIN":
            current = []
            blocks.append(current)
        elif m:
            current = None
        elif current is not None:
            current.append(line)
    return ["\n".join(b) for b in blocks] if blocks else [text]


_NUMBERING = re.compile(r"^\d+")  # a word's number typed against it ("7much")


def _word(token: str) -> str:
    """The word of one run of letters and digits ('' for a number alone). A digit inside a word (a 0 typed for
    an o, a 1 for an l) stays part of it, so the word is named as not on the list instead of splitting in two
    and miscounting every word after it."""
    return _NUMBERING.sub("", token).lower()


def _words_of(block: str) -> tuple[list[str], str | None]:
    repo = _REPO_LINE.search(block)
    words: list[str] = []
    for line in block.splitlines():
        stripped = line.strip()
        if (not stripped or stripped.lower().startswith(_METADATA_PREFIXES) or stripped.startswith("-")
                or _MARKER.match(stripped)):
            continue
        words.extend(w for w in (_word(tok) for tok in re.findall(r"[A-Za-z0-9]+", stripped)) if w)
    return words, (repo.group(1).lower() if repo else None)


def _from_html(text: str) -> str:
    """The share block of a printable page (share-N.html, kept instead of its .txt), or ``text`` itself."""
    table = _HTML_WORDS.search(text)
    if table is None:
        return text
    repo = _HTML_REPO.search(text)
    lines = [BEGIN] + ([f"repository {repo.group(1)}"] if repo else [])
    return "\n".join(lines + [" ".join(_HTML_WORD.findall(table.group(1))), END])


def parse_shares(text: str, source: str) -> list[ParsedShare]:
    """Every share in a file: a share page (text or printable HTML), a scanned QR code's text, a file holding
    just the words, or several share blocks typed into one file (each is then named "its share block N")."""
    text = _from_html(text)
    blocks = _blocks(text)
    if len(blocks) == 1:
        return [parse_share(text, source)]
    return [_parse_block(b, f"{source} (its share block {i + 1})", None) for i, b in enumerate(blocks)]


def parse_share(text: str, source: str) -> ParsedShare:
    """Parse one share: a share page (text or printable HTML), a scanned QR code's text, or just the words.

    Errors name the file and the word's number as printed on the page; no word is ever quoted.
    """
    text = _from_html(text)
    blocks = _blocks(text)
    if len(blocks) > 1:
        raise UsageError(f"{source} holds {len(blocks)} recovery shares; give each its own file")
    page_repo = _REPO_LINE.search(text)  # (the page's "Repository:" line, if its block has none)
    return _parse_block(blocks[0], source, page_repo.group(1).lower() if page_repo else None,
                        marked=bool(_BLOCK_START.search(text)))


def _parse_block(block: str, source: str, page_repo: str | None, marked: bool = True) -> ParsedShare:
    words, repo = _words_of(block)
    repo = repo or page_repo
    if not marked and len(words) != WORDS_PER_SHARE:
        raise UsageError(f"{source} does not hold a recovery share (no '{BEGIN}' block, and not just the "
                         f"{WORDS_PER_SHARE} words of one)")
    if len(words) != WORDS_PER_SHARE:
        what = "missing" if len(words) < WORDS_PER_SHARE else "too many"
        raise IntegrityError(
            f"share file {source} has {len(words)} words, a share has {WORDS_PER_SHARE} ({what}); "
            "compare it with the printed page"
        )
    unknown = [i + 1 for i, w in enumerate(words) if w not in WORD_INDEX_MAP]
    if unknown:
        listed = ", ".join(str(i) for i in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise IntegrityError(
            f"share file {source}: word {listed} {'is' if len(unknown) == 1 else 'are'} not on the recovery-kit "
            "word list (a typing mistake?); compare with the printed page"
        )
    indices = [WORD_INDEX_MAP[w] for w in words]
    if _polymod(list(_custom(_extendable(indices))) + indices, 1) != 1:
        suspects = single_word_suspects(indices)
        if len(suspects) == 1:
            where = f"word {suspects[0] + 1} is wrong"
        else:
            where = "more than one word is wrong"
        raise IntegrityError(
            f"share file {source} fails its checksum: {where}; compare it with the printed page word by word"
        )
    try:
        share = Share.from_mnemonic(" ".join(words))
    except MnemonicError:
        raise IntegrityError(f"share file {source} is not a valid recovery share (its words check out but "
                             "its contents do not); compare it with the printed page") from None
    if share.group_count != 1 or share.group_threshold != 1:
        raise UsageError(f"share file {source} is a multi-group SLIP-39 share, not a tuckbox recovery share")
    return ParsedShare(source, repo, share)


# --------------------------------------------------------------------------- combine


# a repository line typed back from the page with at most this many wrong hex digits is a typing mistake, not
# another repository (two random ids agree in about 4 of their 64 digits): the words are what count
_REPO_TYPOS = 8


def check_repository(shares: Sequence[ParsedShare], repository_id: str, location: str) -> list[ParsedShare]:
    """Refuse shares whose block names another repository (before anything is combined); return the shares,
    a repository line that differs from ``repository_id`` in a few digits only taken as a typing mistake."""
    out: list[ParsedShare] = []
    for s in shares:
        if s.repository is not None and s.repository != repository_id:
            wrong = sum(a != b for a, b in zip(s.repository, repository_id))
            if wrong > _REPO_TYPOS:
                raise AccessDenied(
                    f"share file {s.source} is for repository {s.repository[:8]}, but {location} is repository "
                    f"{repository_id[:8]}; use the recovery kit made for this repository"
                )
            s = ParsedShare(s.source, repository_id, s.share)  # (the combined secret is checked all the same)
        out.append(s)
    return out


def combine(shares: Sequence[ParsedShare]) -> bytes:
    """The root secret from at least ``threshold`` shares of one kit (the first complete kit given)."""
    return combine_kits(shares)[0]


def combine_kits(shares: Sequence[ParsedShare]) -> list[bytes]:
    """The secret of every kit of which at least ``threshold`` distinct shares are given, in the order given.

    Shares of several kits may be mixed (pages of an old and a new kit of one repository come back from their
    keepers together): each kit is combined on its own, and a kit with too few shares is left out unless no
    kit is complete, which is refused saying what each kit lacks. Nothing is combined (and so nothing can
    leak) from fewer than ``threshold`` distinct shares of one kit.
    """
    if not shares:
        raise UsageError("no recovery share given")
    named = {s.repository for s in shares if s.repository}
    if len(named) > 1:
        a, b = sorted(named)[:2]
        raise AccessDenied(f"the share files belong to different repositories ({a[:8]} and {b[:8]}); "
                           "use shares of one kit only")
    kits: dict[tuple[object, ...], dict[int, ParsedShare]] = {}
    for s in shares:
        by_number = kits.setdefault((*s.share.common_parameters(), s.threshold), {})
        seen = by_number.get(s.number)
        if seen is not None and seen.share.value != s.share.value:
            raise IntegrityError(f"share files {seen.source} and {s.source} both claim to be share {s.number} "
                                 "but differ; one of them was changed")
        by_number.setdefault(s.number, s)
    complete = [list(k.values()) for k in kits.values() if len(k) >= next(iter(k.values())).threshold]
    if not complete:
        raise AccessDenied(_too_few(list(kits.values())))
    return [_combine_kit(kit) for kit in complete]


def _too_few(kits: list[dict[int, ParsedShare]]) -> str:
    def lacks(kit: dict[int, ParsedShare]) -> str:
        need = next(iter(kit.values())).threshold
        missing = need - len(kit)
        return f"{missing} more share{'s' if missing > 1 else ''} needed"

    if len(kits) == 1:
        (kit,) = kits
        need = next(iter(kit.values())).threshold
        return (f"{lacks(kit)}: this kit needs any {need}, {len(kit)} different "
                f"share{'s' if len(kit) != 1 else ''} given")
    each = "; ".join(
        f"{', '.join(s.source for s in kit.values())}: {lacks(kit)} (any {next(iter(kit.values())).threshold})"
        for kit in kits
    )
    return (f"the share files come from {len(kits)} different recovery kits and none of them has enough shares "
            f"({each}); shares of different kits cannot be combined")


def _combine_kit(kit: list[ParsedShare]) -> bytes:
    need = kit[0].threshold
    chosen = sorted(kit, key=lambda s: s.number)
    base = chosen[:need]
    ems = _recover(base)
    for extra in chosen[need:]:  # every further share must agree with the first ones
        try:
            agrees = _recover(base[1:] + [extra]) == ems
        except IntegrityError:
            agrees = False
        if not agrees:
            raise IntegrityError(f"share file {extra.source} does not agree with the other shares; it was changed")
    secret = ems.decrypt(b"")
    if len(secret) != ROOT_LEN:
        raise IntegrityError("the shares hold a secret of the wrong length; they are not a tuckbox recovery kit")
    return secret


def _recover(shares: Sequence[ParsedShare]) -> shamir_mnemonic.EncryptedMasterSecret:
    try:
        return shamir_mnemonic.recover_ems(shamir_mnemonic.decode_mnemonics(s.mnemonic for s in shares))
    except MnemonicError:
        raise IntegrityError("the shares do not fit together: one of them was changed or comes from another kit "
                             "(each one passed its checksum)") from None

