"""The tuckbox exception tree.

Every error a user can see is a ``TuckboxError`` with a one-line message that
names the thing and says what to do, and an exit code::

    TuckboxError (exit 1)
    ├── UsageError (exit 2)                  bad arguments, unknown snapshot, target exists
    │   ├── SnapshotNotFound
    │   └── TargetExists
    ├── RepositoryError
    │   ├── RepositoryNotFound               nothing at the repository location
    │   ├── NotARepository                   something there, but no tuckbox config
    │   ├── RepositoryExists                 init on an existing repository
    │   ├── UnsupportedFormat                unknown version or feature flag
    │   └── RepositoryLocked                 an exclusive lock is held by someone else
    ├── AccessDenied
    │   ├── WrongPassphrase
    │   └── WriteOnlyKey                     operation needs a full key
    ├── IntegrityError                       an object failed authentication or hashing
    ├── BackendError                         storage failures
    │   ├── ObjectNotFound
    │   ├── ObjectExists
    │   ├── TransientError                   retried by the retry wrapper
    │   └── PermanentError                   auth, quota, full disk: fail at once
    └── Interrupted (exit 130)
        └── Cancelled                        an upload given up because the run is stopping

No message ever contains a passphrase, key, credential or capability.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_INTERRUPTED = 130


class TuckboxError(Exception):
    """Base of every error tuckbox reports to a user."""

    exit_code = EXIT_FATAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(TuckboxError):
    exit_code = EXIT_USAGE


class SnapshotNotFound(UsageError):
    pass


class TargetExists(UsageError):
    pass


class RepositoryError(TuckboxError):
    pass


class RepositoryNotFound(RepositoryError):
    pass


class NotARepository(RepositoryError):
    pass


class RepositoryExists(RepositoryError):
    pass


class UnsupportedFormat(RepositoryError):
    pass


class RepositoryLocked(RepositoryError):
    pass


class LockLost(RepositoryError):
    """This run's lock lapsed long enough to be judged stale: it must not record anything more."""


class AccessDenied(TuckboxError):
    pass


class WrongPassphrase(AccessDenied):
    pass


class WriteOnlyKey(AccessDenied):
    pass


class IntegrityError(TuckboxError):
    """Stored bytes failed authentication, hashing or decoding."""


class BackendError(TuckboxError):
    pass


class ObjectNotFound(BackendError):
    pass


class ObjectExists(BackendError):
    pass


class TransientError(BackendError):
    """A failure that may go away if retried (timeouts, resets, 5xx, throttling)."""


class PermanentError(BackendError):
    """A failure retrying cannot fix (credentials, quota, full disk, permissions)."""


class NoSpace(PermanentError):
    """The storage is full (a local disk, an SFTP server's file system or quota)."""


class Interrupted(TuckboxError):
    exit_code = EXIT_INTERRUPTED


class Cancelled(Interrupted):
    """A storage operation given up because the run is stopping (see ``backends.wrappers.cancel_scope``).

    Never retried; the object it was writing is absent (saves are atomic).
    """
