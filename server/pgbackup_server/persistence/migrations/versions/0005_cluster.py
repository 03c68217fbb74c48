"""The cluster: replicas sharing a PostgreSQL store.

- ``backup_runs.node``: the replica that executed the run.
- ``cluster_nodes``: each replica and its heartbeat.
- ``schedule_fires``: one row per (schedule, fire time), claimed by one replica.
- ``run_queue``: runs waiting or executing, with the lease of the replica holding them.
- ``cluster_servers``: one row per database server, locked while a replica claims runs
  for it, so the per-server limit holds across the cluster.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pgbackup_server.persistence.schema import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("backup_runs") as batch:
        batch.add_column(sa.Column("node", sa.String(255), nullable=False, server_default=""))
    op.create_table(
        "cluster_nodes",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("heartbeat_at", UTCDateTime, nullable=False),
        sa.Column("address", sa.String(255), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("running", sa.Integer, nullable=False),
    )
    op.create_table(
        "schedule_fires",
        sa.Column("schedule", sa.String(255), primary_key=True),
        sa.Column("fire_time", UTCDateTime, primary_key=True),
        sa.Column("node", sa.String(255), nullable=False),
        sa.Column("claimed_at", UTCDateTime, nullable=False),
        sa.Column("run_ids", sa.Text, nullable=False),
    )
    op.create_table(
        "run_queue",
        sa.Column("run_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("server", sa.String(512), nullable=False),
        sa.Column("job", sa.Text, nullable=False),
        sa.Column("enqueued_at", UTCDateTime, nullable=False),
        sa.Column("node", sa.String(255)),
        sa.Column("heartbeat_at", UTCDateTime),
        sa.Column("attempt", sa.Integer, nullable=False),
    )
    op.create_index("ix_run_queue_server_node", "run_queue", ["server", "node", "run_id"])
    op.create_index("ix_run_queue_node", "run_queue", ["node"])
    op.create_table(
        "cluster_servers",
        sa.Column("server", sa.String(512), primary_key=True),
    )


def downgrade() -> None:
    op.drop_table("cluster_servers")
    op.drop_index("ix_run_queue_node", "run_queue")
    op.drop_index("ix_run_queue_server_node", "run_queue")
    op.drop_table("run_queue")
    op.drop_table("schedule_fires")
    op.drop_table("cluster_nodes")
    with op.batch_alter_table("backup_runs") as batch:
        batch.drop_column("node")
