"""Python SDK and ``backupctl`` CLI for the PostgreSQL backup service (backup.v1)."""

from pgbackup_client.errors import (
    BackupClientError,
    DeadlineExceeded,
    FailedPrecondition,
    InternalError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    from_rpc_error,
)
from pgbackup_client.models import (
    Backup,
    BackupPage,
    CleanupResult,
    CreateResult,
    RunSummary,
    Schedule,
    Stats,
)
from pgbackup_client.sdk import BackupClient

__all__ = [
    "Backup",
    "BackupClient",
    "BackupClientError",
    "BackupPage",
    "CleanupResult",
    "CreateResult",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InternalError",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "RunSummary",
    "Schedule",
    "Stats",
    "Unauthenticated",
    "Unavailable",
    "from_rpc_error",
]
