"""One error hierarchy for the service; each error knows its gRPC status.

The status is a name (``"INVALID_ARGUMENT"``), not a ``grpc.StatusCode``, so
domain code stays free of gRPC; one interceptor translates it at the edge.
"""

from __future__ import annotations

import signal


class BackupError(Exception):
    """Base of every error the service raises on purpose."""

    status = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def prefixed(self, prefix: str) -> BackupError:
        """The same error with ``prefix`` before its message (e.g. ``backup 12 failed: ``)."""
        self.message = f"{prefix}{self.message}"
        self.args = (self.message,)
        return self


class ConfigError(BackupError):
    """The configuration is invalid; raised at startup."""

    status = "INVALID_ARGUMENT"


class InvalidArgument(BackupError):
    status = "INVALID_ARGUMENT"


class NotFound(BackupError):
    status = "NOT_FOUND"


class PermissionDenied(BackupError):
    status = "PERMISSION_DENIED"


class FailedPrecondition(BackupError):
    status = "FAILED_PRECONDITION"


class ResourceExhausted(BackupError):
    status = "RESOURCE_EXHAUSTED"


class Unavailable(BackupError):
    status = "UNAVAILABLE"


class Unimplemented(BackupError):
    """This server does not offer the operation."""

    status = "UNIMPLEMENTED"


class PgDumpNotFound(BackupError):
    """No usable pg_dump binary; a startup error."""

    status = "FAILED_PRECONDITION"


class BackupFailed(BackupError):
    """A backup run failed; the run record holds the same message."""

    status = "INTERNAL"


class PgDumpFailed(BackupFailed):
    """pg_dump exited non-zero; carries its exit code and the tail of stderr."""

    def __init__(self, exit_code: int, stderr_tail: str, program: str = "pg_dump") -> None:
        tail = stderr_tail.strip() or "(no output)"
        if exit_code < 0:
            name = (signal.Signals(-exit_code).name if -exit_code in signal.valid_signals()
                    else str(-exit_code))
            super().__init__(f"{program} was killed by signal {name}: {tail}")
        else:
            super().__init__(f"{program} exited with code {exit_code}: {tail}")
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail


class VersionMismatch(BackupFailed):
    """No pg_dump at least as new as the server."""

    status = "FAILED_PRECONDITION"


class RestoreFailed(BackupError):
    """A restore (or the verification restore) failed; the restore run holds the reason."""

    status = "INTERNAL"


class EncryptionError(BackupFailed):
    """Encrypting a backup failed (age missing, a bad recipient, the child died)."""

    status = "INTERNAL"


class DecryptionError(BackupError):
    """Decrypting a backup failed for a reason other than the two below."""

    status = "INTERNAL"


class WrongIdentity(DecryptionError):
    """The identity given is not one of the backup's recipients: the caller must pass
    another key."""

    status = "FAILED_PRECONDITION"


class CorruptCiphertext(DecryptionError):
    """The encrypted bytes are truncated or altered: age's authentication failed."""

    status = "DATA_LOSS"


class StorageError(BackupError):
    """A destination could not store, read or list; the message names the destination
    and never holds a credential."""

    status = "UNAVAILABLE"


class StorageNotFound(StorageError):
    """The object (or the bucket) does not exist at the destination."""

    status = "NOT_FOUND"


class StorageExists(StorageError):
    """The name is taken at the destination: a backup is never overwritten."""

    status = "ALREADY_EXISTS"
