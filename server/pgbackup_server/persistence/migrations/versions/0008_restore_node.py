"""``restore_runs.node``: the cluster replica that runs a restore.

Restores are not queued: one runs on the replica that got the request. When that
replica dies, the others must settle its restores (FAILED "interrupted") and leave
theirs alone, and a replica that stops cancels its own restores, not its peers'.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("restore_runs") as batch:
        batch.add_column(sa.Column("node", sa.String(255), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("restore_runs") as batch:
        batch.drop_column("node")
