"""Opening a repository with a passphrase: which of its key objects the passphrase opens, and a clear error
for each way none does."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from ..crypto.keyfile import keyfile_info, needs_passphrase, open_keyfile
from ..crypto.keys import KeySet
from ..errors import IntegrityError, NotARepository, ObjectNotFound, UsageError, WrongPassphrase
from ..types import Backend, ObjectType

PassphraseSource = Callable[[], bytes]


def _key_names(names: list[str]) -> str:
    return ", ".join(f"keys/{n[:8]}" for n in sorted(names))


def _damaged_keys(location: str, names: list[str]) -> IntegrityError:
    """Every passphrase key there is cannot be read (not a wrong passphrase: the key objects are damaged)."""
    return IntegrityError(f"the passphrase key{'s' if len(names) > 1 else ''} of repository {location} "
                          f"({_key_names(names)}) cannot be read: damaged; open it with --key-file or --recover")


def unlock(backend: Backend, passphrase: PassphraseSource | None, repository_id: str) -> tuple[KeySet, str]:
    """The key set a passphrase opens, among this repository's passphrase keys, and that key's name.

    Raises one clear error when none opens: no keys, damaged keys, keys of another repository id (a
    killed 'init'), no passphrase to be had, or a wrong one."""
    names = [i.name for i in backend.list(ObjectType.KEY)]
    if not names:
        raise NotARepository(f"{backend.location} has no keys; it is damaged or not a tuckbox repository")

    damaged: list[str] = []  # key objects that cannot be parsed
    others: set[str] = set()  # the repository ids passphrase keys of another repository name

    def read(name: str) -> tuple[str, bytes] | None:
        try:
            raw = backend.load(ObjectType.KEY, name)
            # only this repository's keys: an 'init' killed after its key but before its config, then
            # run again, leaves a key of a repository that never existed (same passphrase, other secret)
            if needs_passphrase(raw):
                if keyfile_info(raw).repository == repository_id:
                    return name, raw
                others.add(keyfile_info(raw).repository)
        except IntegrityError:
            damaged.append(name)
        except ObjectNotFound:
            pass
        return None

    if len(names) == 1:
        found = [read(names[0])]
    else:  # (a key for each host, each a round trip on remote storage: read at once)
        with ThreadPoolExecutor(min(8, len(names))) as pool:
            found = list(pool.map(read, names))
    keyfiles = [k for k in found if k is not None]
    if not keyfiles:
        if len(others) == 1:  # (a killed 'init' leaves such a key beside the real ones, never alone)
            raise IntegrityError(
                f"the config of repository {backend.location} names repository id {repository_id}, its "
                f"passphrase keys {next(iter(others))}: one of them is damaged"
            )
        if damaged:
            raise _damaged_keys(backend.location, damaged)
        raise NotARepository(f"{backend.location} has no readable passphrase key; use --key-file or --recover")
    if passphrase is None:
        raise UsageError("a passphrase is needed; set TUCKBOX_PASSWORD_FILE, TUCKBOX_PASSWORD_COMMAND or use a terminal")
    pw = passphrase()
    broken: list[str] = []
    for name, raw in keyfiles:
        try:
            return open_keyfile(raw, pw), name
        except WrongPassphrase:
            continue
        except IntegrityError:  # one damaged key must not keep the passphrase of another from opening
            broken.append(name)
    damaged += broken
    if len(broken) == len(keyfiles):
        raise _damaged_keys(backend.location, broken)
    if damaged:
        raise WrongPassphrase(
            f"wrong passphrase for repository {backend.location}, or the one of {_key_names(damaged)} that it "
            "opens is damaged (then open it with --key-file or --recover)"
        )
    raise WrongPassphrase(f"wrong passphrase for repository {backend.location} (or its key files were modified)")
