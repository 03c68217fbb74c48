"""Tables of the store (SQLAlchemy Core). The migrations in ``migrations/versions``
create them; a test checks that they agree with this module.

``backup_runs`` has a column per field of :class:`~..domain.models.Run`, derived
from the dataclass, so a new field needs only its migration here. ``run_totals``
and ``database_latest`` are derived: counts and sizes per (database, status, file
state, verification) and the newest success and failure per database (both per target too), kept in
step with every write and rebuilt at start, so statistics never scan the runs.
"""

from __future__ import annotations

import enum
import types
import typing
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
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

from ..domain.models import Compression, Run


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

# Column types of the fields whose Python type alone does not say enough.
_STRING_LENGTHS = {"database": 255, "target": 255, "schedule": 255, "sha256": 64, "node": 255,
                   "pg_dump_version": 32, "server_version": 32, "plaintext_sha256": 64}


def _unwrap(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def run_column(name: str, hint: Any) -> Column[Any]:
    """The column of one :class:`Run` field (what a migration adding it must create)."""
    kind = _unwrap(hint)
    if name == "id":
        return Column("id", Integer, primary_key=True, autoincrement=True)
    if kind is datetime:
        nullable = kind is not hint
        return Column(name, UTCDateTime, nullable=nullable)
    if kind is int:
        return Column(name, BigInteger, nullable=False, default=0)
    if kind is bool:
        return Column(name, Boolean, nullable=False, default=False)
    if isinstance(kind, type) and issubclass(kind, enum.Enum | Compression):
        # kind holds PHYSICAL_INCREMENTAL (20 characters).
        wide = kind is Compression or name == "kind"
        return Column(name, String(32 if wide else 16), nullable=False,
                      default="")
    if typing.get_origin(kind) is tuple:  # a tuple of strings, stored as a JSON list
        return Column(name, Text, nullable=False, default="[]")
    if name in _STRING_LENGTHS:
        return Column(name, String(_STRING_LENGTHS[name]), nullable=False, default="")
    return Column(name, Text, nullable=False, default="")


RUN_HINTS = typing.get_type_hints(Run)
# Fields kept elsewhere (Run.copies: backup_copies) are marked NOT_A_COLUMN.
RUN_COLUMNS = tuple(f.name for f in fields(Run) if f.metadata.get("column", True))
runs = Table(
    "backup_runs",
    metadata,
    *(run_column(name, RUN_HINTS[name]) for name in RUN_COLUMNS),
    # Denormalised from file_state, for the indexes behind statistics and retention.
    Column("present", Boolean, nullable=False, default=False),
    Index("ix_runs_status_finished", "status", "finished_at"),
    Index("ix_runs_database_id", "database", "id"),
    Index("ix_runs_database_status_id", "database", "status", "id"),
    Index("ix_runs_present_started", "present", "started_at"),
    Index("ix_runs_db_present_started", "database", "present", "started_at"),
    Index("ix_runs_target_present_started", "target", "present", "started_at"),
    Index("ix_runs_db_status_finished", "database", "status", "finished_at"),
    Index("ix_runs_dir_present", "backup_dir", "present"),
    Index("ix_runs_schedule_queued", "schedule", "queued_at"),
    Index("ix_runs_verification", "verification"),
    Index("ix_runs_target_id", "target", "id"),
    Index("ix_runs_status_id", "status", "id"),
    Index("ix_runs_trigger_id", "trigger", "id"),
)
run_totals = Table(
    "run_totals",
    metadata,
    Column("target", String(255), primary_key=True),
    Column("database", String(255), primary_key=True),
    Column("status", String(16), primary_key=True),
    Column("file_state", String(16), primary_key=True),
    Column("verification", String(16), primary_key=True),
    Column("runs", BigInteger, nullable=False, default=0),
    Column("size_bytes", BigInteger, nullable=False, default=0),
)
database_latest = Table(
    "database_latest",
    metadata,
    Column("target", String(255), primary_key=True),
    Column("database", String(255), primary_key=True),
    Column("last_success_id", Integer),
    Column("last_failure_id", Integer),
)
restore_runs = Table(
    "restore_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("backup_id", Integer, nullable=False),
    Column("target_database", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("error", Text, nullable=False, default=""),
    Column("requested_by", String(255), nullable=False, default=""),
    Column("schemas", Text, nullable=False, default="[]"),  # JSON list
    Column("tables", Text, nullable=False, default="[]"),  # JSON list
    Column("jobs", Integer, nullable=False, default=0),
    Column("overwrite", Boolean, nullable=False, default=False),
    Column("node", String(255), nullable=False, default=""),  # the replica running it
    Index("ix_restore_runs_backup", "backup_id", "id"),
    Index("ix_restore_runs_status", "status"),
)
scratch_databases = Table(
    "restore_scratch_databases",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("purpose", String(32), nullable=False),
    Column("target", String(255), nullable=False, default=""),  # whose server it is on
    Column("created_at", UTCDateTime, nullable=False),
)
# Alerts firing now, and since when each subject is watched (the stale alert's
# grace on a fresh install). Survive restarts, so nothing is repeated or forgotten.
alerts_firing = Table(
    "alerts_firing",
    metadata,
    Column("key", String(512), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("since", UTCDateTime, nullable=False),
    Column("details", Text, nullable=False, default="{}"),  # JSON
)
alert_tracking = Table(
    "alert_tracking",
    metadata,
    Column("subject", String(255), primary_key=True),
    Column("since", UTCDateTime, nullable=False),
)
# One row per copy of a run at a destination (Run.copies); at most one per destination.
copies = Table(
    "backup_copies",
    metadata,
    # No foreign key on purpose: SQLite migrations rebuild backup_runs (batch mode, a
    # DROP TABLE), which would cascade into the copies. Runs are never deleted.
    Column("run_id", Integer, primary_key=True),
    Column("destination", String(64), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("location", Text, nullable=False, default=""),
    Column("size_bytes", BigInteger, nullable=False, default=0),
    Column("sha256", String(64), nullable=False, default=""),
    Column("error", Text, nullable=False, default=""),
    Column("stored_at", UTCDateTime),
    Column("file_state", String(16), nullable=False, default="NONE"),
    Column("locked_until", UTCDateTime),
    Index("ix_copies_destination_state", "destination", "state", "file_state"),
    Index("ix_copies_destination_location", "destination", "location"),
)

# The cluster (``cluster/``): replicas sharing a PostgreSQL store. A fire is claimed
# once by its unique key; queued runs are taken with FOR UPDATE SKIP LOCKED and held
# by the replica executing them, whose heartbeat keeps the lease.
cluster_nodes = Table(
    "cluster_nodes",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Column("address", String(255), nullable=False, default=""),
    Column("version", String(32), nullable=False, default=""),
    Column("running", Integer, nullable=False, default=0),
)
schedule_fires = Table(
    "schedule_fires",
    metadata,
    Column("schedule", String(255), primary_key=True),
    Column("fire_time", UTCDateTime, primary_key=True),
    Column("node", String(255), nullable=False),
    Column("claimed_at", UTCDateTime, nullable=False),
    Column("run_ids", Text, nullable=False, default=""),  # comma-separated, or why none
)
run_queue = Table(
    "run_queue",
    metadata,
    Column("run_id", Integer, primary_key=True, autoincrement=False),
    Column("server", String(512), nullable=False),  # host:port of the database server
    Column("job", Text, nullable=False),  # JSON: what the run backs up, and where
    Column("enqueued_at", UTCDateTime, nullable=False),
    Column("node", String(255)),  # the replica holding the lease; NULL: waiting
    Column("heartbeat_at", UTCDateTime),  # the lease's last renewal (store time)
    Column("attempt", Integer, nullable=False, default=1),
    Index("ix_run_queue_server_node", "server", "node", "run_id"),
    Index("ix_run_queue_node", "node"),
)
cluster_servers = Table(  # one row per database server: claims for it take turns
    "cluster_servers",
    metadata,
    Column("server", String(512), primary_key=True),
)
