"""Domain objects: runs and their kinds and states, the values a backup is made
with, statistics and cleanup results. Plain frozen dataclasses and enums; no I/O.

Adding a field to a backup: add it to :class:`Run` (and to ``backup.v1.Backup``
in the proto, and a migration in ``persistence/migrations``). The store and the
API translate fields by name, so nothing else needs to change to carry it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class RunStatus(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    @property
    def finished(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.FAILED)


class RunKind(enum.StrEnum):
    """What a run backs up."""

    DATABASE = "DATABASE"  # one database, with pg_dump
    GLOBALS = "GLOBALS"  # a server's roles and tablespaces, with pg_dumpall --globals-only


class Trigger(enum.StrEnum):
    SCHEDULE = "SCHEDULE"
    MANUAL = "MANUAL"


class FileState(enum.StrEnum):
    """What became of a run's file after the run."""

    NONE = "NONE"  # the run produced no file (not finished, or failed)
    PRESENT = "PRESENT"
    DELETED = "DELETED"  # removed by retention
    MISSING = "MISSING"  # gone from disk without the service removing it


class Verification(enum.StrEnum):
    """Outcome of the last verification of a backup."""

    NONE = ""  # never verified
    OK = "OK"
    FAILED = "FAILED"


class DumpFormat(enum.StrEnum):
    PLAIN = "plain"  # SQL, .sql (.sql.zst, .sql.gz)
    CUSTOM = "custom"  # pg_restore archive, .dump
    DIRECTORY = "directory"  # pg_restore archive as a folder, .dir


class CompressionMethod(enum.StrEnum):
    NONE = "none"
    GZIP = "gzip"
    LZ4 = "lz4"
    ZSTD = "zstd"

    @property
    def levels(self) -> tuple[int, int]:
        """The levels this method takes (none: only 0)."""
        return {"none": (0, 0), "gzip": (1, 9), "lz4": (1, 12), "zstd": (1, 19)}[self.value]

    @property
    def default_level(self) -> int:
        return {"none": 0, "gzip": 6, "lz4": 1, "zstd": 1}[self.value]


@dataclass(frozen=True, slots=True, eq=False)
class Compression:
    """A compression method and level, written ``zstd:3`` (``none`` alone). Like the
    string enums, it equals its written form: ``Compression.parse("zstd:1") == "zstd:1"``."""

    method: CompressionMethod
    level: int = 0

    def __str__(self) -> str:
        return "none" if self.method is CompressionMethod.NONE else f"{self.method}:{self.level}"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Compression | str):
            return str(self) == str(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(str(self))

    @classmethod
    def parse(cls, text: str) -> Compression:
        """``"zstd"``, ``"zstd:3"``, ``"gzip:6"``, ``"none"``; ValueError otherwise."""
        method_text, sep, level_text = text.strip().partition(":")
        method = CompressionMethod(method_text)  # ValueError when unknown
        if method is CompressionMethod.NONE:
            if sep:
                raise ValueError("none takes no level")
            return cls(method, 0)
        level = int(level_text) if level_text else method.default_level
        low, high = method.levels
        if not low <= level <= high:
            raise ValueError(f"level out of range {low}-{high}")
        return cls(method, level)


NO_COMPRESSION = Compression(CompressionMethod.NONE, 0)


class ChannelType(enum.StrEnum):
    """A notification channel."""

    WEBHOOK = "webhook"
    SLACK = "slack"
    EMAIL = "email"


class NotifyEvent(enum.StrEnum):
    """What a notification channel can subscribe to."""

    FAILURE = "failure"
    SUCCESS = "success"
    STALE = "stale"
    VERIFICATION_FAILED = "verification_failed"
    CLEANUP = "cleanup"


class AlertKind(enum.StrEnum):
    STALE = "stale"
    MISSED_SCHEDULE = "missed_schedule"
    VERIFICATION_FAILED = "verification_failed"
    REPLICA_SILENT = "replica_silent"  # a cluster replica stopped heartbeating


class VerifyMode(enum.StrEnum):
    """``backup.verify``: what is checked after each scheduled backup."""

    NONE = "none"
    QUICK = "quick"
    DEEP = "deep"


class CopyState(enum.StrEnum):
    """Where one copy of a backup stands at one destination."""

    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True)
class Stored:
    """Bytes that reached their final place: where, how many, and their SHA-256."""

    location: str  # the destination-relative name, e.g. "db/backup_db_….sql.zst"
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a destination knows about one stored object without reading it."""

    location: str
    size: int
    modified: datetime | None = None
    # The store's own checksum when it offers one (an S3 ETag, a local file has none).
    etag: str = ""
    locked_until: datetime | None = None  # S3 Object Lock retention


@dataclass(frozen=True, slots=True)
class Copy:
    """One copy of a run's backup at one destination."""

    run_id: int
    destination: str
    state: CopyState
    location: str = ""
    size_bytes: int = 0
    sha256: str = ""
    error: str = ""
    stored_at: datetime | None = None
    file_state: FileState = FileState.NONE
    locked_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Run:
    """One backup run as recorded in the store. Timestamps are UTC-aware."""

    id: int
    database: str  # the name the API, metrics and file names use (see README)
    status: RunStatus
    trigger: Trigger
    backup_dir: str
    queued_at: datetime
    kind: RunKind = RunKind.DATABASE
    schedule: str = ""
    file_path: str = ""
    temp_path: str = ""
    size_bytes: int = 0
    sha256: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str = ""
    format: DumpFormat | None = None  # known once the run starts
    compression: Compression | None = None
    pg_dump_version: str = ""
    server_version: str = ""
    file_state: FileState = FileState.NONE
    bytes_written: int = 0
    estimated_total_bytes: int = 0
    verification: Verification = Verification.NONE
    verification_reason: str = ""
    verified_at: datetime | None = None
    target: str = ""  # the configured target that produced the run
    node: str = ""  # the cluster replica that executed it ("" without a cluster)

    @property
    def duration_seconds(self) -> float:
        if self.started_at is None or self.finished_at is None:
            return 0.0
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def file_deleted(self) -> bool:
        return self.file_state is FileState.DELETED

    @property
    def file_missing(self) -> bool:
        return self.file_state is FileState.MISSING


@dataclass(frozen=True, slots=True)
class Alert:
    """An alert firing now: what it is about, since when, and its payload details."""

    kind: AlertKind
    subject: str  # the database (or target/database), or the schedule for missed_schedule
    since: datetime
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.subject}"


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
class CreateResult:
    """What a create request returns: its (first) run, the files the cleanup after it
    deleted, and every run it started (allDatabases: one per database)."""

    run: Run
    deleted_files: int = 0
    runs: tuple[Run, ...] = ()


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
