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
    BackupContents,
    BackupPage,
    CleanupDecision,
    CleanupResult,
    ContentEntry,
    CreateResult,
    DatabaseStats,
    Progress,
    RestoreRun,
    RunSummary,
    Schedule,
    Stats,
    TableRows,
    VerifyResult,
)
from pgbackup_client.sdk import BackupClient

__all__ = [
    "Backup", "BackupClient", "BackupClientError", "BackupContents", "BackupPage",
    "CleanupDecision", "CleanupResult", "ContentEntry", "CreateResult", "DatabaseStats",
    "DeadlineExceeded",
    "FailedPrecondition", "InternalError", "InvalidArgument", "NotFound", "PermissionDenied",
    "Progress", "ResourceExhausted", "RestoreRun", "RunSummary", "Schedule", "Stats",
    "TableRows", "Unauthenticated", "Unavailable", "VerifyResult", "from_rpc_error",
]
