"""SDK exceptions, one per gRPC status the BackupService returns."""

from __future__ import annotations

import grpc

__all__ = [
    "BackupClientError",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InternalError",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "from_rpc_error",
]


class BackupClientError(Exception):
    """Base of every SDK error.

    ``code`` is the gRPC status name (e.g. ``"NOT_FOUND"``), ``details`` the
    server's message.
    """

    code: str = "UNKNOWN"

    def __init__(self, details: str = "", *, code: str | None = None) -> None:
        super().__init__(details)
        if code is not None:
            self.code = code
        self.details = details

    def __str__(self) -> str:
        return f"{self.code}: {self.details}" if self.details else self.code


class InvalidArgument(BackupClientError):
    """The request was malformed, e.g. a directory outside the allowed ones."""

    code = "INVALID_ARGUMENT"


class NotFound(BackupClientError):
    """No such backup."""

    code = "NOT_FOUND"


class PermissionDenied(BackupClientError):
    """The caller is authenticated but not allowed to do this."""

    code = "PERMISSION_DENIED"


class Unauthenticated(BackupClientError):
    """Missing or wrong bearer token."""

    code = "UNAUTHENTICATED"


class ResourceExhausted(BackupClientError):
    """Too many runs queued, or a size limit was hit."""

    code = "RESOURCE_EXHAUSTED"


class FailedPrecondition(BackupClientError):
    """The server is not in a state to do this now."""

    code = "FAILED_PRECONDITION"


class Unavailable(BackupClientError):
    """The server could not be reached or is shutting down."""

    code = "UNAVAILABLE"


class DeadlineExceeded(BackupClientError):
    """The call did not finish within its timeout."""

    code = "DEADLINE_EXCEEDED"


class InternalError(BackupClientError):
    """The server failed (INTERNAL, UNKNOWN or DATA_LOSS)."""

    code = "INTERNAL"


_BY_CODE: dict[grpc.StatusCode, type[BackupClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    # OUT_OF_RANGE is the "invalid argument that may become valid" variant.
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.INTERNAL: InternalError,
    # An unhandled exception in a servicer surfaces as UNKNOWN.
    grpc.StatusCode.UNKNOWN: InternalError,
    grpc.StatusCode.DATA_LOSS: InternalError,
}


def from_rpc_error(error: grpc.RpcError) -> BackupClientError:
    """Map a failed call's ``grpc.RpcError`` to the matching SDK exception.

    The returned exception keeps the actual status name in ``code`` even when
    several statuses share a class; statuses without a class map to the base.
    """
    # Only errors raised by calls implement grpc.Call; be lenient with others.
    code_fn = getattr(error, "code", None)
    details_fn = getattr(error, "details", None)
    status = code_fn() if callable(code_fn) else None
    details = details_fn() if callable(details_fn) else None
    if not isinstance(status, grpc.StatusCode):
        return BackupClientError(details or str(error), code="UNKNOWN")
    cls = _BY_CODE.get(status, BackupClientError)
    return cls(details or "", code=status.name)
