"""Run kinds, 64-bit sizes and counters, the alert state in the store.

- ``backup_runs.kind``: DATABASE or GLOBALS. Before, a globals run was known only
  by its name (``<target>-globals``); those runs become GLOBALS.
- Sizes and counters become 64-bit: a PostgreSQL store's ``integer`` stops at 2 GiB.
- ``run_totals`` and ``database_latest`` (derived) gain the target in their key.
- ``alerts_firing`` and ``alert_tracking`` replace ``<dataDirectory>/alerts.json``
  (imported at the first start that finds it; see persistence/alerts.py).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pgbackup_server.persistence.schema import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("backup_runs") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False,
                                   server_default="DATABASE"))
        for column in ("size_bytes", "bytes_written", "estimated_total_bytes"):
            batch.alter_column(column, type_=sa.BigInteger, existing_type=sa.Integer,
                               existing_nullable=False)
        batch.alter_column("compression", type_=sa.String(32), existing_type=sa.String(16),
                           existing_nullable=False)
        batch.create_index("ix_runs_target_id", ["target", "id"])
    op.execute("UPDATE backup_runs SET kind = 'GLOBALS' "
               "WHERE database = target || '-globals'")
    # Derived tables, rebuilt from the runs at every start: re-created with the target
    # in their key (statistics of one target) and 64-bit counters.
    op.drop_table("run_totals")
    op.drop_table("database_latest")
    op.create_table(
        "run_totals",
        sa.Column("target", sa.String(255), primary_key=True),
        sa.Column("database", sa.String(255), primary_key=True),
        sa.Column("status", sa.String(16), primary_key=True),
        sa.Column("file_state", sa.String(16), primary_key=True),
        sa.Column("verification", sa.String(16), primary_key=True),
        sa.Column("runs", sa.BigInteger, nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "database_latest",
        sa.Column("target", sa.String(255), primary_key=True),
        sa.Column("database", sa.String(255), primary_key=True),
        sa.Column("last_success_id", sa.Integer),
        sa.Column("last_failure_id", sa.Integer),
    )
    op.create_table(
        "alerts_firing",
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("since", UTCDateTime, nullable=False),
        sa.Column("details", sa.Text, nullable=False),
    )
    op.create_table(
        "alert_tracking",
        sa.Column("subject", sa.String(255), primary_key=True),
        sa.Column("since", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("alert_tracking")
    op.drop_table("alerts_firing")
    with op.batch_alter_table("backup_runs") as batch:
        batch.drop_index("ix_runs_target_id")
        batch.drop_column("kind")
