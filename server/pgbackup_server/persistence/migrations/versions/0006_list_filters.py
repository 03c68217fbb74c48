"""Indexes behind the dashboard's filters: runs by status or by trigger, newest first.

Without them, listing the FAILED (or MANUAL) runs among 100,000 walks the runs
from the newest until a page is found.

Revision ID: 0006
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("backup_runs") as batch:
        batch.create_index("ix_runs_status_id", ["status", "id"])
        batch.create_index("ix_runs_trigger_id", ["trigger", "id"])


def downgrade() -> None:
    with op.batch_alter_table("backup_runs") as batch:
        batch.drop_index("ix_runs_trigger_id")
        batch.drop_index("ix_runs_status_id")
