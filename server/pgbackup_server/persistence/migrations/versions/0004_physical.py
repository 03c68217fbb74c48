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

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0006"
branch_labels = None
depends_on = None


def _keeping_copies(alter: Callable[[], None]) -> None:
    """Run ``alter`` on backup_runs. SQLite rebuilds that table to change a column's
    type, and dropping the old one cascades (ON DELETE CASCADE) to the tables that
    refer to it (backup_copies, ...): their rows are put back afterwards."""
    bind = op.get_bind()
    saved: dict[str, list[dict[str, Any]]] = {}
    if bind.dialect.name == "sqlite":
        inspector = sa.inspect(bind)
        for name in inspector.get_table_names():
            if any(fk["referred_table"] == "backup_runs"
                   for fk in inspector.get_foreign_keys(name)):
                saved[name] = [dict(r) for r in bind.execute(
                    sa.text(f'SELECT * FROM "{name}"')).mappings()]
    alter()
    for name, rows in saved.items():
        bind.execute(sa.text(f'DELETE FROM "{name}"'))
        if rows:
            op.bulk_insert(sa.table(name, *(sa.column(k) for k in rows[0])), rows)


def upgrade() -> None:
    _keeping_copies(_upgrade)


def _upgrade() -> None:
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
    _keeping_copies(_downgrade)


def _downgrade() -> None:
    with op.batch_alter_table("backup_runs") as batch:
        for name in ("chain", "end_lsn", "start_lsn", "type_reason", "timeline", "parent_id"):
            batch.drop_column(name)
        batch.alter_column("kind", type_=sa.String(16), existing_type=sa.String(32),
                           existing_nullable=False)
