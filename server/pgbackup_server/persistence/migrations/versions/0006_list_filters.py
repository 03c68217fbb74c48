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


# Plain CREATE INDEX, not batch mode: on SQLite a batch rebuilds the table, and
# dropping the old one would cascade to the rows that reference it (backup_copies).
def upgrade() -> None:
    op.create_index("ix_runs_status_id", "backup_runs", ["status", "id"])
    op.create_index("ix_runs_trigger_id", "backup_runs", ["trigger", "id"])


def downgrade() -> None:
    op.drop_index("ix_runs_trigger_id", table_name="backup_runs")
    op.drop_index("ix_runs_status_id", table_name="backup_runs")
