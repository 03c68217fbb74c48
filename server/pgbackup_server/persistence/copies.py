"""The copy store: each run's copies at its destinations (``backup_copies``).

A run has at most one copy per destination; retrying a copy updates that row.
Runs read their copies in one query per page (:func:`copies_of`), never one per run.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, insert, select, update

from ..domain.errors import NotFound
from ..domain.models import Copy, CopyState, DestinationUsage, FileState, Run
from .codec import from_row, to_row
from .engine import reading
from .schema import copies, runs
from .totals import Scope, bound

_CHUNK = 500


def _copy(row: Any) -> Copy:
    return from_row(Copy, row._mapping)


def copies_of(conn: Connection, run_ids: Iterable[int]) -> dict[int, tuple[Copy, ...]]:
    """The copies of ``run_ids`` by run, ordered by destination name."""
    ids = list(run_ids)
    found: dict[int, list[Copy]] = {}
    for i in range(0, len(ids), _CHUNK):
        rows = conn.execute(select(copies).where(copies.c.run_id.in_(ids[i:i + _CHUNK]))
                            .order_by(copies.c.run_id, copies.c.destination)).all()
        for row in rows:
            found.setdefault(row.run_id, []).append(_copy(row))
    return {run_id: tuple(items) for run_id, items in found.items()}


class SqlCopyStore:
    """Copy records in a SQLAlchemy database. Thread-safe; writes return the copy."""

    def __init__(self, engine: Engine, write_lock: threading.Lock | None = None) -> None:
        self.engine = engine
        # Shared with the run store: SQLite allows one writer at a time.
        self._write_lock = write_lock or threading.Lock()

    # -- writes -------------------------------------------------------------

    def _set(self, run_id: int, destination: str, changes: dict[str, Any]) -> Copy:
        values = to_row(changes, frozenset())
        match = and_(copies.c.run_id == run_id, copies.c.destination == destination)
        with self._write_lock, self.engine.begin() as conn:
            if conn.execute(update(copies).where(match).values(**values)).rowcount == 0:
                defaults = {"state": CopyState.PENDING.value, "location": "", "size_bytes": 0,
                            "sha256": "", "error": "", "file_state": FileState.NONE.value}
                conn.execute(insert(copies).values(
                    **{**defaults, **values, "run_id": run_id, "destination": destination}))
        return self.get(run_id, destination)

    def add(self, run_id: int, destination: str) -> Copy:
        """A PENDING copy (again PENDING, with no error, when retried)."""
        return self._set(run_id, destination, {
            "state": CopyState.PENDING, "error": "", "location": "", "size_bytes": 0,
            "sha256": "", "stored_at": None, "file_state": FileState.NONE,
            "locked_until": None})

    def mark_succeeded(self, run_id: int, destination: str, *, location: str,
                       size_bytes: int, sha256: str, stored_at: datetime,
                       locked_until: datetime | None = None) -> Copy:
        return self._set(run_id, destination, {
            "state": CopyState.SUCCEEDED, "error": "", "location": location,
            "size_bytes": size_bytes, "sha256": sha256, "stored_at": stored_at,
            "file_state": FileState.PRESENT, "locked_until": locked_until})

    def mark_failed(self, run_id: int, destination: str, *, error: str) -> Copy:
        """FAILED with its reason; nothing of it is counted as stored."""
        return self._set(run_id, destination, {
            "state": CopyState.FAILED, "error": error, "location": "", "size_bytes": 0,
            "sha256": "", "stored_at": None, "file_state": FileState.NONE,
            "locked_until": None})

    def set_file_state(self, run_id: int, destination: str, state: FileState) -> None:
        """What became of a stored copy (DELETED by retention, MISSING)."""
        self.get(run_id, destination)
        self._set(run_id, destination, {"file_state": state})

    def record(self, copy: Copy) -> bool:
        """Insert a complete copy (a catalog import); False when that destination
        already holds a copy of the run or the location is already recorded."""
        with self._write_lock, self.engine.begin() as conn:
            exists = conn.execute(select(copies.c.run_id).where(
                (and_(copies.c.run_id == copy.run_id,
                      copies.c.destination == copy.destination))
                | and_(copies.c.destination == copy.destination,
                       copies.c.location == copy.location, copies.c.location != ""))
                .limit(1)).first()
            if exists is not None:
                return False
            conn.execute(insert(copies).values(**to_row(
                {f: getattr(copy, f) for f in Copy.__slots__}, frozenset())))
        return True

    # -- reads --------------------------------------------------------------

    def get(self, run_id: int, destination: str) -> Copy:
        with self.engine.connect() as conn:
            row = conn.execute(select(copies).where(
                copies.c.run_id == run_id, copies.c.destination == destination)).first()
        if row is None:
            raise NotFound(f"backup {run_id} has no copy at destination {destination!r}")
        return _copy(row)

    def of_run(self, run_id: int) -> tuple[Copy, ...]:
        with self.engine.connect() as conn:
            return copies_of(conn, [run_id]).get(run_id, ())

    def at(self, destination: str, state: CopyState | None = None) -> list[Copy]:
        """Copies at ``destination``, oldest run first."""
        query = select(copies).where(copies.c.destination == destination)
        if state is not None:
            query = query.where(copies.c.state == state.value)
        with self.engine.connect() as conn:
            return [_copy(r) for r in conn.execute(query.order_by(copies.c.run_id)).all()]

    def find(self, destination: str, location: str) -> Copy | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(copies).where(
                copies.c.destination == destination, copies.c.location == location)
                .limit(1)).first()
        return None if row is None else _copy(row)

    def present(self, destination: str) -> list[tuple[Run, Copy]]:
        """The stored copies at ``destination`` with their runs (what retention
        decides over), oldest run first. Only copies the service made are here."""
        query = (select(copies, runs).join(runs, runs.c.id == copies.c.run_id)
                 .where(copies.c.destination == destination,
                        copies.c.state == CopyState.SUCCEEDED.value,
                        copies.c.file_state == FileState.PRESENT.value)
                 .order_by(copies.c.run_id))
        out: list[tuple[Run, Copy]] = []
        with self.engine.connect() as conn:
            for row in conn.execute(query).all():
                m = row._mapping
                copy = from_row(Copy, {c.name: m[c] for c in copies.c})
                run = from_row(Run, {c.name: m[c] for c in runs.c})
                out.append((run, copy))
            attached = copies_of(conn, [r.id for r, _ in out])
        return [(_with_copies(run, attached.get(run.id, ())), copy) for run, copy in out]

    def usage(self, *, target: str = "", database: str = "") -> dict[str, DestinationUsage]:
        """Per destination: the present copies, their bytes, and the newest one
        (of one target's or one database's runs, when given)."""
        scope = Scope(target, database)
        with reading(self.engine) as conn:  # one statement: the sums and the newest copies
            return {row.destination: DestinationUsage(row.destination, int(row.n),
                                                      int(row.size), _copy(row))
                    for row in conn.execute(_usage_query(scope.shape), scope.params)}


@cache
def _usage_query(shape: tuple[bool, bool]) -> Any:
    """Per destination, its present copies' count and bytes with its newest copy, for
    scopes of ``shape`` (built once)."""
    stored = and_(copies.c.state == CopyState.SUCCEEDED.value,
                  copies.c.file_state == FileState.PRESENT.value)
    sums = select(copies.c.destination, func.count().label("n"),
                  func.coalesce(func.sum(copies.c.size_bytes), 0).label("size"),
                  func.max(copies.c.run_id).label("newest")).where(stored)
    if any(shape):
        sums = sums.join(runs, runs.c.id == copies.c.run_id).where(bound(shape, runs))
    per = sums.group_by(copies.c.destination).subquery()
    return select(copies, per.c.n, per.c.size).join(per, and_(
        copies.c.destination == per.c.destination, copies.c.run_id == per.c.newest))


def _with_copies(run: Run, items: tuple[Copy, ...]) -> Run:
    from dataclasses import replace

    return replace(run, copies=items)
