"""What verification and restore produce and record, and their internal failures."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..domain.models import RunStatus


@dataclass(frozen=True, slots=True)
class TableRows:
    schema: str
    table: str
    rows: int


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of one verification; also recorded on the backup."""

    run_id: int
    ok: bool
    reason: str
    deep: bool
    verified_at: datetime
    tables: tuple[TableRows, ...] = ()
    duration_seconds: float = 0.0

    @property
    def verification(self) -> str:
        return "OK" if self.ok else "FAILED"


@dataclass(frozen=True, slots=True)
class RestoreRun:
    """One restore as recorded in the restore store. Timestamps are UTC-aware."""

    id: int
    backup_id: int
    target_database: str
    status: RunStatus
    started_at: datetime
    finished_at: datetime | None = None
    error: str = ""
    requested_by: str = ""
    schemas: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    jobs: int = 0
    overwrite: bool = False

    @property
    def duration_seconds(self) -> float:
        if self.finished_at is None:
            return 0.0
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True, slots=True)
class RestorePage:
    """One page of restores, newest first; ``next_page_token`` empty on the last."""

    restores: tuple[RestoreRun, ...]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class ContentEntry:
    schema: str
    name: str
    kind: str  # "TABLE", "SEQUENCE", "VIEW", "FUNCTION", ...
    size_bytes: int = 0  # the table's data in the backup (compressed in archives)


@dataclass(frozen=True, slots=True)
class BackupContents:
    entries: tuple[ContentEntry, ...]
    schemas: tuple[str, ...]


# -- internal failures, turned into results or BackupErrors by the service ---


class _Failure(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Corrupt(_Failure):
    """The backup is not what was recorded, or not readable: a verification failure."""


class ToolFailed(_Failure):
    """psql/pg_restore (or a SQL step around them) failed."""


def unreadable(path: Path | str, exc: OSError) -> Corrupt:
    return Corrupt(f"cannot read {path}: {exc.strerror or exc}")
