"""Create a new repository and its first key (asks for a passphrase twice).

The chunker and pack parameters are fixed for the life of the repository.
"""

from __future__ import annotations

import argparse
import getpass
import os
import socket

from ..chunker import ChunkerParams
from ..errors import UsageError
from ..repository.config import DEFAULT_PACK_SIZE, Config
from ..repository.repo import Repository
from ..snapshot.model import now_iso
from .common import ask_passphrase, emit_json, human, open_storage, opt, out, parse_size

HELP = "create a new repository"


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pack-size", metavar="SIZE", default=None, help=f"target pack size (default {human(DEFAULT_PACK_SIZE)})")
    p.add_argument("--chunk-min", metavar="SIZE", default=None, help="minimum chunk size (default 512KiB)")
    p.add_argument("--chunk-avg", metavar="SIZE", default=None, help="average chunk size (default 1MiB)")
    p.add_argument("--chunk-max", metavar="SIZE", default=None, help="maximum chunk size (default 8MiB)")


def output_optional(args: argparse.Namespace) -> bool:
    """With standard output closed, still run: what is printed only reports on what was done."""
    return True


def run(args: argparse.Namespace) -> int:
    for flag in ("key_file", "recover"):
        if opt(args, flag):
            name = "--" + flag.replace("_", "-")
            raise UsageError(f"init makes a new repository with a new passphrase; {name} opens an existing one")
    d = ChunkerParams()
    params = ChunkerParams(
        parse_size(args.chunk_min) if args.chunk_min else d.min_size,
        parse_size(args.chunk_avg) if args.chunk_avg else d.avg_size,
        parse_size(args.chunk_max) if args.chunk_max else d.max_size,
    )
    created = now_iso()
    try:
        config = Config.new(created, params, parse_size(args.pack_size) if args.pack_size else DEFAULT_PACK_SIZE)
    except ValueError as e:
        raise UsageError(str(e)) from None
    backend = open_storage(args)
    Repository.check_room(backend)  # a repository already there, or a file: said before a passphrase is asked
    passphrase = ask_passphrase(args, "New passphrase: ", confirm=True)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    repo = Repository.init(backend, passphrase, created=created, host=socket.gethostname(), user=user, config=config)
    if opt(args, "json"):
        emit_json({"id": repo.config.id, "location": backend.location, "created": created})
    else:
        out(args, f"created repository {repo.config.id[:8]} at {backend.location}")
        out(args, "Keep the passphrase safe: without it (or a recovery kit) the backups cannot be read.")
    repo.close()
    return 0
