"""Make a recovery kit: the repository's master secret split into printable shares.

Any THRESHOLD of the SHARES pages restore the backups without the passphrase
(tuckbox ... --recover FILE...); fewer reveal nothing. Each share is written to
DIR as share-N.txt (plain text, what --recover reads) and share-N.html (a
printable page with a QR code and instructions for a non-technical keeper).
--paper writes a single printed key instead (paper-key.txt/.html).

The files hold the secret unprotected: print them, hand the pages to different
people or places, then delete the files. A kit never expires and cannot be
revoked; it works for every backup, past and future, of this repository.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from ..crypto.recovery import check_kit_shape
from ..errors import UsageError
from .common import emit_json, nonempty, open_repository, opt, out

HELP = "make a printable recovery kit (k-of-n shares of the master secret)"


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shares", type=int, default=None, metavar="N", help="number of shares (default 5, at most 16)")
    p.add_argument("--threshold", type=int, default=None, metavar="K",
                   help="shares needed to restore (default 3)")
    p.add_argument("--paper", action="store_true", help="a single printed key (1 of 1) instead of shares")
    p.add_argument("--output", required=True, metavar="DIR", type=nonempty, help="directory to write the pages into (new or empty)")


def output_optional(args: argparse.Namespace) -> bool:
    """With standard output closed, still run: what is printed only reports on what was done."""
    return True


def run(args: argparse.Namespace) -> int:
    if args.paper and (args.shares is not None or args.threshold is not None):
        raise UsageError("--paper makes a single key; leave out --shares and --threshold")
    shares, threshold = (1, 1) if args.paper else (
        5 if args.shares is None else args.shares, 3 if args.threshold is None else args.threshold
    )
    check_kit_shape(threshold, shares)  # before the passphrase is asked for
    from ..recovery_kit import write_kit  # segno is imported only when a kit is made

    repo = open_repository(args, load_index=False)
    try:
        repo.keys.require_full("make a recovery kit")
        assert repo.keys.root is not None
        files = write_kit(
            Path(args.output).expanduser(), repo.keys.root, repository_id=repo.config.id,
            location=repo.backend.location, created=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            shares=shares, threshold=threshold,
        )
    finally:
        repo.close()
    if opt(args, "json"):
        emit_json({"repository": repo.config.id, "shares": shares, "threshold": threshold,
                   "files": [str(f) for f in files]})
        return 0
    kind = "a paper key" if args.paper else f"{shares} shares, any {threshold} of which restore the backups"
    out(args, f"recovery kit for repository {repo.config.id[:8]}: {kind}")
    for f in files:
        out(args, f"  {f}")
    out(args, "These files hold the key to every backup, unprotected: print each page, give the pages to "
              "different people or places, then delete the files.")
    return 0
