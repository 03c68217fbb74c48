"""Tables of the run store (SQLAlchemy Core).

``backup_runs`` holds every run. ``run_totals`` and ``database_latest`` are
derived: counts and sizes per (database, status, file state, verification)
and the newest success and failure per database, kept in step with every
write and rebuilt at start, so statistics never scan the runs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)

from .models import FileState


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC without zone (SQLite has none) and reads back aware datetimes."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


metadata = MetaData()
runs = Table(
    "backup_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("database", String(255), nullable=False),
    Column("target", String(255), nullable=False, default=""),
    Column("status", String(16), nullable=False),
    Column("trigger", String(16), nullable=False),
    Column("schedule", String(255), nullable=False, default=""),
    Column("backup_dir", Text, nullable=False),
    Column("file_path", Text, nullable=False, default=""),
    Column("temp_path", Text, nullable=False, default=""),
    Column("size_bytes", Integer, nullable=False, default=0),
    Column("sha256", String(64), nullable=False, default=""),
    Column("queued_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Column("error", Text, nullable=False, default=""),
    Column("format", String(16), nullable=False, default=""),
    Column("compression", String(16), nullable=False, default=""),
    Column("pg_dump_version", String(32), nullable=False, default=""),
    Column("server_version", String(32), nullable=False, default=""),
    Column("file_state", String(16), nullable=False, default=FileState.NONE.value),
    Column("present", Boolean, nullable=False, default=False),
    Column("bytes_written", Integer, nullable=False, default=0),
    Column("estimated_total_bytes", Integer, nullable=False, default=0),
    Column("verification", String(16), nullable=False, default=""),
    Column("verification_reason", Text, nullable=False, default=""),
    Column("verified_at", UTCDateTime),
    Index("ix_runs_status_finished", "status", "finished_at"),
    Index("ix_runs_database_id", "database", "id"),
    Index("ix_runs_database_status_id", "database", "status", "id"),
    Index("ix_runs_present_started", "present", "started_at"),
    Index("ix_runs_db_present_started", "database", "present", "started_at"),
    Index("ix_runs_db_status_finished", "database", "status", "finished_at"),
    Index("ix_runs_dir_present", "backup_dir", "present"),
    Index("ix_runs_schedule_queued", "schedule", "queued_at"),
    Index("ix_runs_verification", "verification"),
)
run_totals = Table(
    "run_totals",
    metadata,
    Column("database", String(255), primary_key=True),
    Column("status", String(16), primary_key=True),
    Column("file_state", String(16), primary_key=True),
    Column("verification", String(16), primary_key=True),
    Column("runs", Integer, nullable=False, default=0),
    Column("size_bytes", Integer, nullable=False, default=0),
)
database_latest = Table(
    "database_latest",
    metadata,
    Column("database", String(255), primary_key=True),
    Column("last_success_id", Integer),
    Column("last_failure_id", Integer),
)

