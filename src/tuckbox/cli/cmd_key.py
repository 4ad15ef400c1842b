"""Manage the repository's keys: list them, add a passphrase or a write-only key, change or remove one.

  tuckbox key list                       id, type, host, user, created, comment (* = the key in use)
  tuckbox key add [--comment TEXT]       another passphrase for the same repository
  tuckbox key add --write-only --output FILE [--passphrase] [--comment TEXT]
                                         a key file for an unattended host: it can back up and list its own
                                         work, but cannot decrypt any file, tree or snapshot
  tuckbox key passwd                     change the passphrase of the key in use
  tuckbox key remove ID                  never the key in use, never the last full key

New passphrases are read from --new-password-file, $TUCKBOX_NEW_PASSWORD_FILE, or asked twice on the
terminal (never from the options that give the current passphrase). A write-only key file is written
with mode 0600 and, unless --passphrase is given, no passphrase: protect it like a password. Removing a
write-only key's entry does not revoke the file (see docs/keys.md).
"""

from __future__ import annotations

import argparse
import getpass
import os
import socket
from pathlib import Path

from ..errors import UsageError
from ..repository.keyring import (
    KeyEntry,
    Origin,
    add_passphrase_key,
    add_write_only_key,
    change_passphrase,
    list_keys,
    remove_key,
)
from ..snapshot.model import now_iso
from . import common
from .common import (
    add_global_options, ask_passphrase, display, emit_json, json_path_fields, local_time, nonempty, open_repository, opt, out,
    print_table, host_name,
)

HELP = "list, add, change or remove keys (passphrases and write-only keys)"


def register(p: argparse.ArgumentParser) -> None:
    shared = argparse.ArgumentParser(add_help=False)
    add_global_options(shared, suppress=True)
    sub = p.add_subparsers(dest="key_action", metavar="ACTION", required=True)
    fmt = argparse.RawDescriptionHelpFormatter

    sub.add_parser("list", parents=[shared], help="list the repository's keys", formatter_class=fmt,
                   description="List the keys: id, type (full / write-only), host, user, created, comment.")

    add = sub.add_parser("add", parents=[shared], help="add a passphrase, or make a write-only key file",
                         formatter_class=fmt, description=__doc__)
    add.add_argument("--comment", default="", help="a note to recognise the key by, e.g. 'laptop'")
    add.add_argument("--write-only", action="store_true",
                     help="make a write-only key file (for an unattended host) instead of a passphrase")
    add.add_argument("--output", metavar="FILE", type=nonempty, help="where to write the write-only key file (must not exist)")
    add.add_argument("--passphrase", action="store_true",
                     help="protect the write-only key file with a passphrase (asked like a new passphrase)")
    add.add_argument("--host", default="", type=host_name, help="host name to record for a write-only key (default: this one)")
    add.add_argument("--new-password-file", metavar="FILE", type=nonempty, help="read the new passphrase from FILE")

    pw = sub.add_parser("passwd", parents=[shared], help="change the passphrase of the key in use",
                        formatter_class=fmt, description="Store a key with the new passphrase, then remove the old one.")
    pw.add_argument("--new-password-file", metavar="FILE", type=nonempty, help="read the new passphrase from FILE")

    rm = sub.add_parser("remove", parents=[shared], help="remove a key", formatter_class=fmt,
                        description="Remove a key. The key in use and the last full key are never removed.")
    rm.add_argument("id", metavar="ID", help="key id (at least 4 hex digits, from 'tuckbox key list')")


def output_optional(args: argparse.Namespace) -> bool:
    """With standard output closed, still change keys ('key list' needs it: its output is its purpose)."""
    return args.key_action != "list"


def _origin(host: str = "") -> Origin:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return Origin(now_iso(), host or socket.gethostname(), user)


def new_passphrase(args: argparse.Namespace) -> bytes:
    """The new passphrase: from --new-password-file / $TUCKBOX_NEW_PASSWORD_FILE, or asked twice without echo."""
    source = opt(args, "new_password_file") or os.environ.get("TUCKBOX_NEW_PASSWORD_FILE")
    if source:
        return ask_passphrase(argparse.Namespace(password_file=source), "New passphrase: ")
    if not common._tty_available():
        raise UsageError("a new passphrase is needed: use --new-password-file FILE, set TUCKBOX_NEW_PASSWORD_FILE, "
                         "or run in a terminal")
    first = getpass.getpass("New passphrase: ").encode()
    if not first:
        raise UsageError("an empty passphrase is not allowed")
    if getpass.getpass("Repeat new passphrase: ").encode() != first:
        raise UsageError("the passphrases did not match; nothing was changed")
    return first


def _when(iso: str) -> str:
    return local_time(iso)


def _type(e: KeyEntry) -> str:
    if e.kind == "unknown":
        return "sealed"
    return e.kind


def _list(args: argparse.Namespace) -> int:
    repo = open_repository(args, load_index=False)
    try:
        entries = list_keys(repo)
    finally:
        repo.close()
    if opt(args, "json"):
        emit_json([e.as_dict() for e in entries])
        return 0
    rows = [("ID", "Type", "Host", "User", "Created", "Comment")]
    for e in entries:
        comment = e.comment
        if e.kind == "unknown":
            comment = "(a write-only key's record: only a full key can read it)"
        elif e.stored == "outside" and not e.protected:
            comment = (comment + " " if comment else "") + "(key file kept outside, no passphrase)"
        elif e.stored == "outside":
            comment = (comment + " " if comment else "") + "(key file kept outside)"
        rows.append((e.short_id + (" *" if e.in_use else ""), _type(e), e.host, e.user, _when(e.created), comment))
    print_table(rows)
    note = " (* = the key in use)" if any(e.in_use for e in entries) else ""
    print(f"{len(entries)} key(s){note}")
    if repo.key_name and not any(e.in_use for e in entries):
        # a write-only key kept outside: its own record is sealed like the others, so it cannot be marked
        print(f"the key in use ({repo.key_name[:8]}) is write-only and kept outside the repository; "
              "its record is one of the sealed ones")
    return 0


def _add(args: argparse.Namespace) -> int:
    if args.write_only and not args.output:
        raise UsageError("--write-only needs --output FILE: the key file is written there, not into the repository")
    if not args.write_only and (args.output or args.passphrase or args.host):
        raise UsageError("--output, --passphrase and --host are for write-only keys; add --write-only")
    output = Path(os.path.expanduser(args.output)) if args.output else None
    if output is not None and (output.exists() or output.is_symlink()):
        raise UsageError(f"{display(str(output))} already exists; choose a new file name for the key")
    repo = open_repository(args, load_index=False, writes=True)
    try:
        repo.keys.require_full("add keys")
        if output is not None:
            secret = new_passphrase(args) if args.passphrase else None
            entry = add_write_only_key(repo, output, secret, _origin(args.host), args.comment)
        else:
            entry = add_passphrase_key(repo, new_passphrase(args), _origin(), args.comment)
    finally:
        repo.close()
    if opt(args, "json"):
        doc = entry.as_dict()
        if output is not None:
            doc.update(json_path_fields("output", str(output)))
        emit_json(doc)
    elif output is not None:
        out(args, f"wrote write-only key {entry.short_id} to {display(str(output))} (mode 0600"
                  f"{', protected by a passphrase' if entry.protected else ', no passphrase: guard the file'})")
        out(args, f"use it with: tuckbox -r {repo.backend.location} --key-file {display(str(output))} backup PATH...")
    else:
        out(args, f"added key {entry.short_id}; the repository now opens with either passphrase")
    return 0


def _passwd(args: argparse.Namespace) -> int:
    repo = open_repository(args, load_index=False, writes=True)
    try:
        repo.keys.require_full("change a passphrase")
        if not repo.key_name:
            raise UsageError("no passphrase key is in use (the repository was opened with --recover); "
                             "set a passphrase with 'tuckbox key add --recover ...'")
        entry, old = change_passphrase(repo, new_passphrase(args), _origin())
    finally:
        repo.close()
    if opt(args, "json"):
        emit_json({**entry.as_dict(), "replaced": old})
    else:
        out(args, f"passphrase changed: key {old[:8]} was replaced by key {entry.short_id}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    repo = open_repository(args, load_index=False, writes=True)
    try:
        entry = remove_key(repo, args.id)
    finally:
        repo.close()
    if opt(args, "json"):
        emit_json({"removed": entry.id, "kind": entry.kind, "stored": entry.stored})
        return 0
    out(args, f"removed key {entry.short_id}")
    if entry.stored == "outside":
        out(args, "note: the write-only key file itself still works until it is deleted on its host; "
                  "keys cannot be revoked (see docs/keys.md)")
    return 0


def run(args: argparse.Namespace) -> int:
    action = {"list": _list, "add": _add, "passwd": _passwd, "remove": _remove}[args.key_action]
    return action(args)
