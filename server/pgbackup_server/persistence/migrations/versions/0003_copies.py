"""Copies of a backup at its destinations; encryption of a backup.

- ``backup_copies``: one row per (run, destination) with its state, location, size,
  SHA-256, error, when it was stored, what became of it, and its Object Lock.
- Every run that has a file gets its copy at the ``local`` destination (the default
  one, ``backup.directory``), SUCCEEDED, carrying the run's file state: the file's
  name (relative to the run's directory), size and hash.
- ``backup_runs.plaintext_sha256`` and ``backup_runs.encryption`` (a JSON list of the
  age recipients' fingerprints).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pgbackup_server.persistence.schema import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("backup_runs") as batch:
        batch.add_column(sa.Column("plaintext_sha256", sa.String(64), nullable=False,
                                   server_default=""))
        batch.add_column(sa.Column("encryption", sa.Text, nullable=False,
                                   server_default="[]"))
    op.create_table(
        "backup_copies",
        sa.Column("run_id", sa.Integer, sa.ForeignKey("backup_runs.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("destination", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("location", sa.Text, nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("stored_at", UTCDateTime),
        sa.Column("file_state", sa.String(16), nullable=False),
        sa.Column("locked_until", UTCDateTime),
    )
    op.create_index("ix_copies_destination_state", "backup_copies",
                    ["destination", "state", "file_state"])
    op.create_index("ix_copies_destination_location", "backup_copies",
                    ["destination", "location"])
    runs = sa.table("backup_runs", sa.column("id", sa.Integer),
                    sa.column("file_path", sa.Text), sa.column("size_bytes", sa.BigInteger),
                    sa.column("sha256", sa.String), sa.column("finished_at", UTCDateTime),
                    sa.column("file_state", sa.String))
    copies = sa.table("backup_copies", sa.column("stored_at", UTCDateTime),
                      *(sa.column(c) for c in ("run_id", "destination", "state", "location",
                                               "size_bytes", "sha256", "error", "file_state")))
    conn = op.get_bind()
    rows = conn.execute(sa.select(runs.c.id, runs.c.file_path, runs.c.size_bytes,
                                  runs.c.sha256, runs.c.finished_at, runs.c.file_state)
                        .where(runs.c.file_path != "")).all()
    # Names are cut in Python: string functions differ between SQLite and PostgreSQL.
    values = [{"run_id": r.id, "destination": "local", "state": "SUCCEEDED",
               "location": r.file_path.rstrip("/").rsplit("/", 1)[-1],
               "size_bytes": r.size_bytes, "sha256": r.sha256, "error": "",
               "stored_at": r.finished_at, "file_state": r.file_state} for r in rows]
    for i in range(0, len(values), 500):
        conn.execute(sa.insert(copies), values[i:i + 500])


def downgrade() -> None:
    op.drop_index("ix_copies_destination_location", "backup_copies")
    op.drop_index("ix_copies_destination_state", "backup_copies")
    op.drop_table("backup_copies")
    with op.batch_alter_table("backup_runs") as batch:
        batch.drop_column("encryption")
        batch.drop_column("plaintext_sha256")
