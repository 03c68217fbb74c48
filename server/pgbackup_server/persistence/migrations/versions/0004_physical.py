"""Physical backups: a run's parent, chain and WAL range; kinds up to 32 characters.

- ``backup_runs.parent_id``, ``chain``: the backup an incremental was taken against
  and the ids from its full backup to it;
- ``type_reason``: why a requested incremental was taken as a full backup;
- ``start_lsn``, ``end_lsn``, ``timeline``: the WAL the backup needs;
- ``kind`` widens to 32 characters (``PHYSICAL_INCREMENTAL``).

Revision ID: 0004
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("backup_runs") as batch:
        batch.alter_column("kind", type_=sa.String(32), existing_type=sa.String(16),
                           existing_nullable=False)
        batch.add_column(sa.Column("parent_id", sa.BigInteger, nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("timeline", sa.BigInteger, nullable=False,
                                   server_default="0"))
        for name in ("type_reason", "start_lsn", "end_lsn", "chain"):
            batch.add_column(sa.Column(name, sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("backup_runs") as batch:
        for name in ("chain", "end_lsn", "start_lsn", "type_reason", "timeline", "parent_id"):
            batch.drop_column(name)
        batch.alter_column("kind", type_=sa.String(16), existing_type=sa.String(32),
                           existing_nullable=False)
