"""Domain objects: runs, their states, statistics and cleanup results."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class RunStatus(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    @property
    def finished(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.FAILED)


class Trigger(enum.StrEnum):
    SCHEDULE = "SCHEDULE"
    MANUAL = "MANUAL"


class FileState(enum.StrEnum):
    """What became of a run's file after the run."""

    NONE = "NONE"  # the run produced no file (not finished, or failed)
    PRESENT = "PRESENT"
    DELETED = "DELETED"  # removed by retention
    MISSING = "MISSING"  # gone from disk without the service removing it


@dataclass(frozen=True, slots=True)
class Run:
    """One backup run as recorded in the store. Timestamps are UTC-aware."""

    id: int
    database: str
    status: RunStatus
    trigger: Trigger
    backup_dir: str
    queued_at: datetime
    schedule: str = ""
    file_path: str = ""
    temp_path: str = ""
    size_bytes: int = 0
    sha256: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str = ""
    format: str = ""
    compression: str = ""
    pg_dump_version: str = ""
    server_version: str = ""
    file_state: FileState = FileState.NONE
    bytes_written: int = 0
    estimated_total_bytes: int = 0
    verification: str = ""  # "", "OK" or "FAILED"
    verification_reason: str = ""
    verified_at: datetime | None = None
    target: str = ""  # the configured target that produced the run

    @property
    def duration_seconds(self) -> float:
        if self.started_at is None or self.finished_at is None:
            return 0.0
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True, slots=True)
class RunSummary:
    id: int
    time: datetime
    file_path: str = ""
    error: str = ""


@dataclass(frozen=True, slots=True)
class DatabaseStats:
    database: str
    total_backups: int
    total_size_bytes: int
    newest_backup: datetime | None
    last_success: RunSummary | None
    last_failure: RunSummary | None


@dataclass(frozen=True, slots=True)
class Stats:
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
    verified_backups: int = 0
    verification_failures: int = 0
    databases: tuple[DatabaseStats, ...] = ()


@dataclass(frozen=True, slots=True)
class CleanupResult:
    deleted_files: int
    freed_bytes: int
    dry_run: bool
    files: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    name: str
    cron: str
    timezone: str
    enabled: bool
    job: str
    next_run_time: datetime | None


@dataclass(frozen=True, slots=True)
class RunPage:
    runs: tuple[Run, ...]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot of a run for WatchBackup; ``run`` is set on the last one."""

    id: int
    status: RunStatus
    bytes_written: int
    estimated_total_bytes: int
    elapsed_seconds: float
    bytes_per_second: float
    run: Run | None = None
