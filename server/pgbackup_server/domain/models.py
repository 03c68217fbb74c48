"""Domain objects: runs and their kinds and states, the values a backup is made
with, statistics and cleanup results. Plain frozen dataclasses and enums; no I/O.

Adding a field to a backup: add it to :class:`Run` (and to ``backup.v1.Backup``
in the proto, and a migration in ``persistence/migrations``). The store and the
API translate fields by name, so nothing else needs to change to carry it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .enums import (
    AlertKind as AlertKind,
)
from .enums import (
    BackupType as BackupType,
)
from .enums import (
    ChannelType as ChannelType,
)
from .enums import (
    CompressionMethod as CompressionMethod,
)
from .enums import (
    CopyState as CopyState,
)
from .enums import (
    DumpFormat as DumpFormat,
)
from .enums import (
    FileState as FileState,
)
from .enums import (
    NotifyEvent as NotifyEvent,
)
from .enums import (
    RunKind as RunKind,
)
from .enums import (
    RunStatus as RunStatus,
)
from .enums import (
    TargetKind as TargetKind,
)
from .enums import (
    Trigger as Trigger,
)
from .enums import (
    Verification as Verification,
)
from .enums import (
    VerifyMode as VerifyMode,
)


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


@dataclass(frozen=True, slots=True)
class Stored:
    """Bytes that reached their final place: where, how many, and their SHA-256."""

    location: str  # the destination-relative name, e.g. "db/backup_db_….sql.zst"
    size: int
    sha256: str
    # The checksum the store itself will report for these bytes (an S3 ETag), so a
    # quick verify compares without downloading; "" where the store offers none.
    etag: str = ""
    # A folder stored object by object (a physical backup's copy): each object, so
    # that its manifest records them and a quick verify can name a damaged one.
    parts: tuple[Stored, ...] = ()


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

    @property
    def present(self) -> bool:
        return self.state is CopyState.SUCCEEDED and self.file_state is FileState.PRESENT

    @property
    def backup_id(self) -> int:
        return self.run_id

    @property
    def deleted(self) -> bool:
        return self.file_state is FileState.DELETED


@dataclass(frozen=True, slots=True)
class DestinationUsage:
    """What the store knows a destination holds: its present copies, their bytes,
    and the newest one."""

    name: str
    copies: int = 0
    used_bytes: int = 0
    newest: Copy | None = None


@dataclass(frozen=True, slots=True)
class DestinationStatus:
    """A configured destination as ListDestinations shows it."""

    name: str
    url: str  # never with credentials
    required: bool
    reachable: bool
    error: str = ""
    copies: int = 0
    used_bytes: int = 0
    newest: Copy | None = None


# Marks a Run field that is not a column of backup_runs (persistence/schema.py).
NOT_A_COLUMN = {"column": False}


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
    plaintext_sha256: str = ""  # SHA-256 of the dump before encryption (when encrypted)
    # Fingerprints of the age recipients the backup is encrypted to; empty: not encrypted.
    encryption: tuple[str, ...] = ()
    # Its copies, one per destination; a table of their own (backup_copies).
    copies: tuple[Copy, ...] = field(default=(), metadata=NOT_A_COLUMN)

    def copy_at(self, destination: str) -> Copy | None:
        return next((c for c in self.copies if c.destination == destination), None)

    # Physical backups: the parent an incremental was taken against (0: none), why a
    # requested incremental became a full one, the WAL range it needs, and its chain
    # (the ids from the full backup to this one).
    parent_id: int = 0
    type_reason: str = ""
    start_lsn: str = ""
    end_lsn: str = ""
    timeline: int = 0
    chain: str = ""  # "12,15,18": ids from the full backup to this one
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
    targets: tuple[TargetSummary, ...] = ()
    destinations: tuple[DestinationUsage, ...] = ()


@dataclass(frozen=True, slots=True)
class TargetSummary:
    """A configured target and the database names its runs were recorded under."""

    name: str
    all_databases: bool = False
    databases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CleanupDecision:
    """What retention decided for one backup at one destination, and which rules say so
    (to keep it) or why it goes."""

    backup_id: int
    database: str
    destination: str
    location: str
    keep: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CleanupResult:
    deleted_files: int
    freed_bytes: int
    dry_run: bool
    files: tuple[str, ...] = field(default_factory=tuple)
    decisions: tuple[CleanupDecision, ...] = ()


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
    target: str = ""
    last_run: Run | None = None  # the newest run this schedule started

    type: BackupType = BackupType.UNSPECIFIED


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
