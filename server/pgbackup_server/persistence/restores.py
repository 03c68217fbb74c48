"""The restore store: restore runs, and the databases restores create.

A scratch database (deep verification, staging for an overwrite, a new target
being filled) is registered before it is created and forgotten once dropped or
handed over, so that a start after a crash can drop whatever was left.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update

from ..domain.errors import NotFound
from ..domain.models import RunStatus
from ..restore.models import RestorePage, RestoreRun
from .runs import decode_page_token, encode_page_token, page_limit
from .schema import restore_runs, scratch_databases


def _row_to_restore(row: Any) -> RestoreRun:
    m = row._mapping
    return RestoreRun(
        id=m["id"], backup_id=m["backup_id"], target_database=m["target_database"],
        status=RunStatus(m["status"]), started_at=m["started_at"],
        finished_at=m["finished_at"], error=m["error"], requested_by=m["requested_by"],
        schemas=tuple(json.loads(m["schemas"])), tables=tuple(json.loads(m["tables"])),
        jobs=m["jobs"], overwrite=bool(m["overwrite"]))


class SqlRestoreStore:
    """Restore runs in the run store's database. Thread-safe. ``node``: the cluster
    replica this process is (recorded on its restores; empty without a cluster)."""

    def __init__(self, engine: Engine, node: str = "") -> None:
        self.engine = engine
        self.node = node
        self._write_lock = threading.Lock()

    def _update(self, restore_id: int, **values: Any) -> None:
        with self._write_lock, self.engine.begin() as conn:
            conn.execute(update(restore_runs).where(restore_runs.c.id == restore_id)
                         .values(**values))

    # -- restore runs -------------------------------------------------------

    def create(self, *, backup_id: int, target_database: str, requested_by: str,
               schemas: tuple[str, ...], tables: tuple[str, ...], jobs: int, overwrite: bool,
               started_at: datetime) -> RestoreRun:
        with self._write_lock, self.engine.begin() as conn:
            result = conn.execute(insert(restore_runs).values(
                backup_id=backup_id, target_database=target_database,
                status=RunStatus.RUNNING.value, started_at=started_at,
                requested_by=requested_by, schemas=json.dumps(list(schemas)),
                tables=json.dumps(list(tables)), jobs=jobs, overwrite=overwrite,
                node=self.node))
            restore_id = int(result.inserted_primary_key[0])  # type: ignore[index]
        return self.get(restore_id)

    def mark_succeeded(self, restore_id: int, *, finished_at: datetime) -> RestoreRun:
        self._update(restore_id, status=RunStatus.SUCCEEDED.value, finished_at=finished_at)
        return self.get(restore_id)

    def mark_failed(self, restore_id: int, *, finished_at: datetime, error: str) -> RestoreRun:
        self._update(restore_id, status=RunStatus.FAILED.value, finished_at=finished_at,
                     error=error)
        return self.get(restore_id)

    def get(self, restore_id: int) -> RestoreRun:
        with self.engine.connect() as conn:
            row = conn.execute(select(restore_runs)
                               .where(restore_runs.c.id == restore_id)).first()
        if row is None:
            raise NotFound(f"restore {restore_id} not found")
        return _row_to_restore(row)

    def unfinished(self, *, everyone: bool = True) -> list[RestoreRun]:
        """Restores left RUNNING, i.e. by a process that died; ``everyone`` false: only
        this replica's (the others' are theirs to settle)."""
        query = select(restore_runs).where(restore_runs.c.status.in_(
            [RunStatus.PENDING.value, RunStatus.RUNNING.value]))
        if not everyone:
            query = query.where(restore_runs.c.node == self.node)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_row_to_restore(r) for r in rows]

    def list_restores(self, *, backup_id: int | None = None,
                      limit: int = 100) -> list[RestoreRun]:
        """Newest first, optionally of one backup."""
        query = select(restore_runs).order_by(restore_runs.c.id.desc()).limit(limit)
        if backup_id is not None:
            query = query.where(restore_runs.c.backup_id == backup_id)
        with self.engine.connect() as conn:
            return [_row_to_restore(r) for r in conn.execute(query).all()]

    def restore_page(self, *, backup_id: int = 0, page_size: int = 0,
                     page_token: str = "") -> RestorePage:
        """Newest first, optionally of one backup, ``page_size`` at a time."""
        size = page_limit(page_size)
        query = select(restore_runs).order_by(restore_runs.c.id.desc()).limit(size + 1)
        if backup_id:
            query = query.where(restore_runs.c.backup_id == backup_id)
        if page_token:
            query = query.where(restore_runs.c.id < decode_page_token(page_token,
                                                                       "ListRestores"))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        items = tuple(_row_to_restore(r) for r in rows[:size])
        return RestorePage(items, encode_page_token(items[-1].id) if len(rows) > size else "")

    # -- scratch databases --------------------------------------------------

    def add_scratch(self, name: str, *, purpose: str, target: str,
                    created_at: datetime) -> None:
        with self._write_lock, self.engine.begin() as conn:
            conn.execute(delete(scratch_databases).where(scratch_databases.c.name == name))
            conn.execute(insert(scratch_databases).values(name=name, purpose=purpose,
                                                          target=target, created_at=created_at))

    def remove_scratch(self, name: str) -> None:
        with self._write_lock, self.engine.begin() as conn:
            conn.execute(delete(scratch_databases).where(scratch_databases.c.name == name))

    def scratch_databases(self) -> list[tuple[str, str]]:
        """(database, target) of every database a restore created and has not
        dropped or handed over."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(scratch_databases.c.name, scratch_databases.c.target)
                                .order_by(scratch_databases.c.name)).all()
        return [(str(name), str(target)) for name, target in rows]
