"""One error hierarchy for the service; each error knows its gRPC status.

The status is a name (``"INVALID_ARGUMENT"``), not a ``grpc.StatusCode``, so
domain code stays free of gRPC; the interceptor translates it at the edge.
"""

from __future__ import annotations


class BackupError(Exception):
    """Base of every error the service raises on purpose."""

    status = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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


class PgDumpNotFound(BackupError):
    """No usable pg_dump binary; a startup error."""

    status = "FAILED_PRECONDITION"


class BackupFailed(BackupError):
    """A backup run failed; the run record holds the same message."""

    status = "INTERNAL"


class PgDumpFailed(BackupFailed):
    """pg_dump exited non-zero; carries its exit code and the tail of stderr."""

    def __init__(self, exit_code: int, stderr_tail: str) -> None:
        tail = stderr_tail.strip() or "(no output)"
        if exit_code < 0:
            import signal

            name = signal.Signals(-exit_code).name if -exit_code in signal.valid_signals() \
                else str(-exit_code)
            super().__init__(f"pg_dump was killed by signal {name}: {tail}")
        else:
            super().__init__(f"pg_dump exited with code {exit_code}: {tail}")
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail


class VersionMismatch(BackupFailed):
    """No pg_dump at least as new as the server."""

    status = "FAILED_PRECONDITION"
