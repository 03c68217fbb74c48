"""Plain, immutable views of the BackupService messages for SDK users."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2

from pgbackup_client._gen.backup.v1 import backup_pb2

__all__ = [
    "Backup",
    "BackupContents",
    "BackupPage",
    "CleanupResult",
    "ContentEntry",
    "CreateResult",
    "RestoreRun",
    "RunSummary",
    "Schedule",
    "Stats",
    "TableRows",
    "VerifyResult",
]


def _ts(msg: Any, field: str) -> datetime | None:
    # proto3 message fields carry presence: an unset Timestamp means "no value",
    # not the Unix epoch.
    if not msg.HasField(field):
        return None
    ts: timestamp_pb2.Timestamp = getattr(msg, field)
    return ts.ToDatetime(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    # Same spelling as the proto3 JSON mapping used by the REST gateway.
    return value.isoformat().replace("+00:00", "Z")


def _enum_name(enum: Any, value: int) -> str:
    # proto3 enums are open: a newer server may send a value this client does not know.
    try:
        return str(enum.Name(value))
    except ValueError:
        return str(value)


@dataclass(frozen=True, slots=True)
class Backup:
    """One backup run, whatever its outcome."""

    id: int
    database: str
    status: str
    trigger: str
    file_path: str
    size_bytes: int
    sha256: str
    started_at: datetime | None
    finished_at: datetime | None
    queued_at: datetime | None
    duration_seconds: float
    error: str
    schedule: str
    backup_dir: str
    format: str
    compression: str
    pg_dump_version: str
    server_version: str
    file_deleted: bool
    file_missing: bool
    # Last verification: "" (never), "OK" or "FAILED".
    verification: str = ""
    verification_reason: str = ""
    verified_at: datetime | None = None
    # Progress while running: bytes pg_dump produced, and the estimated total.
    bytes_written: int = 0
    estimated_total_bytes: int = 0

    @classmethod
    def from_proto(cls, msg: backup_pb2.Backup) -> Backup:
        """Build from a ``backup.v1.Backup`` message."""
        return cls(
            id=msg.id,
            database=msg.database,
            status=_enum_name(backup_pb2.BackupStatus, msg.status),
            trigger=_enum_name(backup_pb2.Trigger, msg.trigger),
            file_path=msg.file_path,
            size_bytes=msg.size_bytes,
            sha256=msg.sha256,
            started_at=_ts(msg, "started_at"),
            finished_at=_ts(msg, "finished_at"),
            queued_at=_ts(msg, "queued_at"),
            duration_seconds=msg.duration_seconds,
            error=msg.error,
            schedule=msg.schedule,
            backup_dir=msg.backup_dir,
            format=msg.format,
            compression=msg.compression,
            pg_dump_version=msg.pg_dump_version,
            server_version=msg.server_version,
            file_deleted=msg.file_deleted,
            file_missing=msg.file_missing,
            verification=msg.verification,
            verification_reason=msg.verification_reason,
            verified_at=_ts(msg, "verified_at"),
            bytes_written=msg.bytes_written,
            estimated_total_bytes=msg.estimated_total_bytes,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict; timestamps as ISO-8601 strings or None."""
        return {
            "id": self.id,
            "database": self.database,
            "status": self.status,
            "trigger": self.trigger,
            "file_path": self.file_path,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "queued_at": _iso(self.queued_at),
            "duration_seconds": self.duration_seconds,
            "error": self.error,
            "schedule": self.schedule,
            "backup_dir": self.backup_dir,
            "format": self.format,
            "compression": self.compression,
            "pg_dump_version": self.pg_dump_version,
            "server_version": self.server_version,
            "file_deleted": self.file_deleted,
            "file_missing": self.file_missing,
            "verification": self.verification,
            "verification_reason": self.verification_reason,
            "verified_at": _iso(self.verified_at),
            "bytes_written": self.bytes_written,
            "estimated_total_bytes": self.estimated_total_bytes,
        }


@dataclass(frozen=True, slots=True)
class Progress:
    """One WatchBackup event; ``backup`` is set on the last one, when the run ended."""

    id: int
    status: str
    bytes_written: int
    estimated_total_bytes: int
    elapsed_seconds: float
    bytes_per_second: float
    backup: Backup | None

    @classmethod
    def from_proto(cls, msg: backup_pb2.BackupProgress) -> Progress:
        """Build from a ``backup.v1.BackupProgress`` message."""
        return cls(
            id=msg.id,
            status=_enum_name(backup_pb2.BackupStatus, msg.status),
            bytes_written=msg.bytes_written,
            estimated_total_bytes=msg.estimated_total_bytes,
            elapsed_seconds=msg.elapsed_seconds,
            bytes_per_second=msg.bytes_per_second,
            backup=Backup.from_proto(msg.backup) if msg.HasField("backup") else None,
        )


@dataclass(frozen=True, slots=True)
class CreateResult:
    """Outcome of a create call: the run and the files its cleanup deleted."""

    backup: Backup
    deleted_files: int
    # Every run the request started (allDatabases: one per database, plus globals).
    backups: tuple[Backup, ...] = ()

    @classmethod
    def from_proto(cls, msg: backup_pb2.CreateBackupResponse) -> CreateResult:
        """Build from a ``backup.v1.CreateBackupResponse`` message."""
        return cls(backup=Backup.from_proto(msg.backup), deleted_files=msg.deleted_files,
                   backups=tuple(Backup.from_proto(b) for b in msg.backups))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return {"backup": self.backup.to_dict(), "deleted_files": self.deleted_files,
                "backups": [b.to_dict() for b in self.backups]}


@dataclass(frozen=True, slots=True)
class RunSummary:
    """The last successful or failed run, as reported by GetStats."""

    id: int
    time: datetime | None
    file_path: str
    error: str

    @classmethod
    def from_proto(cls, msg: backup_pb2.RunSummary) -> RunSummary:
        """Build from a ``backup.v1.RunSummary`` message."""
        return cls(id=msg.id, time=_ts(msg, "time"), file_path=msg.file_path, error=msg.error)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return {
            "id": self.id,
            "time": _iso(self.time),
            "file_path": self.file_path,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class DatabaseStats:
    """Totals and last outcomes of one database."""

    database: str
    total_backups: int
    total_size_bytes: int
    newest_backup: datetime | None
    last_success: RunSummary | None
    last_failure: RunSummary | None

    @classmethod
    def from_proto(cls, msg: backup_pb2.DatabaseStats) -> DatabaseStats:
        """Build from a ``backup.v1.DatabaseStats`` message."""
        return cls(
            database=msg.database, total_backups=msg.total_backups,
            total_size_bytes=msg.total_size_bytes, newest_backup=_ts(msg, "newest_backup"),
            last_success=(RunSummary.from_proto(msg.last_success)
                          if msg.HasField("last_success") else None),
            last_failure=(RunSummary.from_proto(msg.last_failure)
                          if msg.HasField("last_failure") else None))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return {
            "database": self.database, "total_backups": self.total_backups,
            "total_size_bytes": self.total_size_bytes, "newest_backup": _iso(self.newest_backup),
            "last_success": self.last_success.to_dict() if self.last_success else None,
            "last_failure": self.last_failure.to_dict() if self.last_failure else None,
        }


@dataclass(frozen=True, slots=True)
class Stats:
    """Totals over the recorded backups."""

    total_backups: int
    total_size_bytes: int
    oldest_backup: datetime | None
    newest_backup: datetime | None
    backup_directory: str
    succeeded_runs: int
    failed_runs: int
    running_runs: int
    last_success: RunSummary | None
    last_failure: RunSummary | None
    # Backups whose last verification passed / failed.
    verified_backups: int = 0
    verification_failures: int = 0
    databases: tuple[DatabaseStats, ...] = ()

    @classmethod
    def from_proto(cls, msg: backup_pb2.GetStatsResponse) -> Stats:
        """Build from a ``backup.v1.GetStatsResponse`` message."""
        return cls(
            total_backups=msg.total_backups,
            total_size_bytes=msg.total_size_bytes,
            oldest_backup=_ts(msg, "oldest_backup"),
            newest_backup=_ts(msg, "newest_backup"),
            backup_directory=msg.backup_directory,
            succeeded_runs=msg.succeeded_runs,
            failed_runs=msg.failed_runs,
            running_runs=msg.running_runs,
            last_success=(
                RunSummary.from_proto(msg.last_success) if msg.HasField("last_success") else None
            ),
            last_failure=(
                RunSummary.from_proto(msg.last_failure) if msg.HasField("last_failure") else None
            ),
            verified_backups=msg.verified_backups,
            verification_failures=msg.verification_failures,
            databases=tuple(DatabaseStats.from_proto(d) for d in msg.databases),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return {
            "total_backups": self.total_backups,
            "total_size_bytes": self.total_size_bytes,
            "oldest_backup": _iso(self.oldest_backup),
            "newest_backup": _iso(self.newest_backup),
            "backup_directory": self.backup_directory,
            "succeeded_runs": self.succeeded_runs,
            "failed_runs": self.failed_runs,
            "running_runs": self.running_runs,
            "last_success": self.last_success.to_dict() if self.last_success else None,
            "last_failure": self.last_failure.to_dict() if self.last_failure else None,
            "verified_backups": self.verified_backups,
            "verification_failures": self.verification_failures,
            "databases": [d.to_dict() for d in self.databases],
        }


@dataclass(frozen=True, slots=True)
class CleanupResult:
    """Outcome of applying the retention policy."""

    deleted_files: int
    freed_bytes: int
    dry_run: bool
    files: tuple[str, ...]

    @classmethod
    def from_proto(cls, msg: backup_pb2.CleanupResponse) -> CleanupResult:
        """Build from a ``backup.v1.CleanupResponse`` message."""
        return cls(
            deleted_files=msg.deleted_files,
            freed_bytes=msg.freed_bytes,
            dry_run=msg.dry_run,
            files=tuple(msg.files),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return {
            "deleted_files": self.deleted_files,
            "freed_bytes": self.freed_bytes,
            "dry_run": self.dry_run,
            "files": list(self.files),
        }


@dataclass(frozen=True, slots=True)
class Schedule:
    """A configured schedule; ``next_run_time`` is None when it will not fire."""

    name: str
    cron: str
    timezone: str
    enabled: bool
    job: str
    next_run_time: datetime | None

    @classmethod
    def from_proto(cls, msg: backup_pb2.Schedule) -> Schedule:
        """Build from a ``backup.v1.Schedule`` message."""
        return cls(
            name=msg.name,
            cron=msg.cron,
            timezone=msg.timezone,
            enabled=msg.enabled,
            job=msg.job,
            next_run_time=_ts(msg, "next_run_time"),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return {
            "name": self.name,
            "cron": self.cron,
            "timezone": self.timezone,
            "enabled": self.enabled,
            "job": self.job,
            "next_run_time": _iso(self.next_run_time),
        }


@dataclass(frozen=True, slots=True)
class BackupPage:
    """One page of ListBackups; ``next_page_token`` is empty on the last page."""

    backups: tuple[Backup, ...]
    next_page_token: str

    @classmethod
    def from_proto(cls, msg: backup_pb2.ListBackupsResponse) -> BackupPage:
        """Build from a ``backup.v1.ListBackupsResponse`` message."""
        return cls(
            backups=tuple(Backup.from_proto(b) for b in msg.backups),
            next_page_token=msg.next_page_token,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return {
            "backups": [b.to_dict() for b in self.backups],
            "next_page_token": self.next_page_token,
        }


@dataclass(frozen=True, slots=True)
class TableRows:
    """A table restored by a deep verification, and its row count."""

    schema: str
    table: str
    rows: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return {"schema": self.schema, "table": self.table, "rows": self.rows}


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of VerifyBackup: ``verification`` is ``"OK"`` or ``"FAILED"``."""

    verification: str
    reason: str
    deep: bool
    verified_at: datetime | None
    tables: tuple[TableRows, ...]
    duration_seconds: float

    @property
    def ok(self) -> bool:
        return self.verification == "OK"

    @classmethod
    def from_proto(cls, msg: backup_pb2.VerifyBackupResponse) -> VerifyResult:
        """Build from a ``backup.v1.VerifyBackupResponse`` message."""
        return cls(
            verification=msg.verification,
            reason=msg.reason,
            deep=msg.deep,
            verified_at=_ts(msg, "verified_at"),
            tables=tuple(TableRows(t.schema, t.table, t.rows) for t in msg.tables),
            duration_seconds=msg.duration_seconds,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return {
            "verification": self.verification,
            "reason": self.reason,
            "deep": self.deep,
            "verified_at": _iso(self.verified_at),
            "tables": [t.to_dict() for t in self.tables],
            "duration_seconds": self.duration_seconds,
        }


@dataclass(frozen=True, slots=True)
class RestoreRun:
    """One restore, whatever its outcome; ``status`` as for backups."""

    id: int
    backup_id: int
    target_database: str
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float
    error: str
    requested_by: str
    schemas: tuple[str, ...]
    tables: tuple[str, ...]

    @classmethod
    def from_proto(cls, msg: backup_pb2.RestoreRun) -> RestoreRun:
        """Build from a ``backup.v1.RestoreRun`` message."""
        return cls(
            id=msg.id,
            backup_id=msg.backup_id,
            target_database=msg.target_database,
            status=_enum_name(backup_pb2.BackupStatus, msg.status),
            started_at=_ts(msg, "started_at"),
            finished_at=_ts(msg, "finished_at"),
            duration_seconds=msg.duration_seconds,
            error=msg.error,
            requested_by=msg.requested_by,
            schemas=tuple(msg.schemas),
            tables=tuple(msg.tables),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return {
            "id": self.id,
            "backup_id": self.backup_id,
            "target_database": self.target_database,
            "status": self.status,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "duration_seconds": self.duration_seconds,
            "error": self.error,
            "requested_by": self.requested_by,
            "schemas": list(self.schemas),
            "tables": list(self.tables),
        }


@dataclass(frozen=True, slots=True)
class ContentEntry:
    """An object in a backup; ``size_bytes`` is a table's data as stored."""

    schema: str
    name: str
    kind: str
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return {
            "schema": self.schema,
            "name": self.name,
            "kind": self.kind,
            "size_bytes": self.size_bytes,
        }


@dataclass(frozen=True, slots=True)
class BackupContents:
    """What a backup holds, from its table of contents."""

    entries: tuple[ContentEntry, ...]
    schemas: tuple[str, ...]

    @classmethod
    def from_proto(cls, msg: backup_pb2.ListBackupContentsResponse) -> BackupContents:
        """Build from a ``backup.v1.ListBackupContentsResponse`` message."""
        return cls(
            entries=tuple(
                ContentEntry(e.schema, e.name, e.kind, e.size_bytes) for e in msg.entries
            ),
            schemas=tuple(msg.schemas),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return {"entries": [e.to_dict() for e in self.entries], "schemas": list(self.schemas)}
