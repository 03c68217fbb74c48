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
    Alert,
    Backup,
    BackupContents,
    BackupPage,
    CatalogImport,
    CleanupDecision,
    CleanupResult,
    ContentEntry,
    CreateResult,
    DatabaseStats,
    Progress,
    RestorePage,
    RestoreRun,
    RunSummary,
    Schedule,
    Stats,
    TableRows,
    VerifyResult,
)
from pgbackup_client.sdk import BackupClient

__all__ = [
    "Alert", "Backup", "BackupClient", "BackupClientError", "BackupContents", "BackupPage",
    "CatalogImport", "CleanupDecision", "CleanupResult", "ContentEntry", "CreateResult",
    "DatabaseStats",
    "DeadlineExceeded",
    "FailedPrecondition", "InternalError", "InvalidArgument", "NotFound", "PermissionDenied",
    "Progress", "ResourceExhausted", "RestorePage", "RestoreRun", "RunSummary", "Schedule", "Stats",
    "TableRows", "Unauthenticated", "Unavailable", "VerifyResult", "from_rpc_error",
]
