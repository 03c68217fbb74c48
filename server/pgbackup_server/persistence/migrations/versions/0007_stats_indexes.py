"""The index behind one target's statistics: its oldest and newest present backup.

GetStats for a target (``?database=<target>``) asks for the oldest and newest
``started_at`` of the target's present runs; without it the answer walks every
present run until one of the target's is found.

Revision ID: 0007
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None


# Plain CREATE INDEX, not batch mode (see 0006).
def upgrade() -> None:
    op.create_index("ix_runs_target_present_started", "backup_runs",
                    ["target", "present", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_runs_target_present_started", table_name="backup_runs")
