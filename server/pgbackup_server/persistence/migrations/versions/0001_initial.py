"""The store of backupd 0.1.0, as its ``metadata.create_all`` made it.

A store created by that release has these tables but no ``alembic_version``: it is
stamped with this revision, then upgraded (see persistence/engine.py).

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pgbackup_server.persistence.schema import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backup_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("database", sa.String(255), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("schedule", sa.String(255), nullable=False),
        sa.Column("backup_dir", sa.Text, nullable=False),
        sa.Column("file_path", sa.Text, nullable=False),
        sa.Column("temp_path", sa.Text, nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("queued_at", UTCDateTime, nullable=False),
        sa.Column("started_at", UTCDateTime),
        sa.Column("finished_at", UTCDateTime),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("compression", sa.String(16), nullable=False),
        sa.Column("pg_dump_version", sa.String(32), nullable=False),
        sa.Column("server_version", sa.String(32), nullable=False),
        sa.Column("file_state", sa.String(16), nullable=False),
        sa.Column("present", sa.Boolean, nullable=False),
        sa.Column("bytes_written", sa.Integer, nullable=False),
        sa.Column("estimated_total_bytes", sa.Integer, nullable=False),
        sa.Column("verification", sa.String(16), nullable=False),
        sa.Column("verification_reason", sa.Text, nullable=False),
        sa.Column("verified_at", UTCDateTime),
    )
    for name, columns in (
            ("ix_runs_status_finished", ["status", "finished_at"]),
            ("ix_runs_database_id", ["database", "id"]),
            ("ix_runs_database_status_id", ["database", "status", "id"]),
            ("ix_runs_present_started", ["present", "started_at"]),
            ("ix_runs_db_present_started", ["database", "present", "started_at"]),
            ("ix_runs_db_status_finished", ["database", "status", "finished_at"]),
            ("ix_runs_dir_present", ["backup_dir", "present"]),
            ("ix_runs_schedule_queued", ["schedule", "queued_at"]),
            ("ix_runs_verification", ["verification"])):
        op.create_index(name, "backup_runs", columns)
    op.create_table(
        "run_totals",
        sa.Column("database", sa.String(255), primary_key=True),
        sa.Column("status", sa.String(16), primary_key=True),
        sa.Column("file_state", sa.String(16), primary_key=True),
        sa.Column("verification", sa.String(16), primary_key=True),
        sa.Column("runs", sa.Integer, nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False),
    )
    op.create_table(
        "database_latest",
        sa.Column("database", sa.String(255), primary_key=True),
        sa.Column("last_success_id", sa.Integer),
        sa.Column("last_failure_id", sa.Integer),
    )
    op.create_table(
        "restore_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("backup_id", sa.Integer, nullable=False),
        sa.Column("target_database", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("requested_by", sa.String(255), nullable=False),
        sa.Column("schemas", sa.Text, nullable=False),
        sa.Column("tables", sa.Text, nullable=False),
        sa.Column("jobs", sa.Integer, nullable=False),
        sa.Column("overwrite", sa.Boolean, nullable=False),
    )
    op.create_index("ix_restore_runs_backup", "restore_runs", ["backup_id", "id"])
    op.create_index("ix_restore_runs_status", "restore_runs", ["status"])
    op.create_table(
        "restore_scratch_databases",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    for table in ("restore_scratch_databases", "restore_runs", "database_latest",
                  "run_totals", "backup_runs"):
        op.drop_table(table)
