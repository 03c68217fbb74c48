"""The derived tables behind fast statistics, and the statistics queries.

``run_totals`` counts runs and bytes per (target, database, status, file state,
verification); ``database_latest`` holds the newest success and failure per
(target, database). Every write of a run updates them in the same transaction, and they are
rebuilt at every start, so they cannot drift; nothing here scans the runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, case, delete, func, insert, select, text, true, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from ..domain.models import DatabaseStats, FileState, RunStatus, RunSummary, Stats, Verification
from .codec import aware
from .schema import database_latest, run_totals, runs

_KEY = (runs.c.target, runs.c.database, runs.c.status, runs.c.file_state,
        runs.c.verification)
_COLUMNS = ("target", "database", "status", "file_state", "verification")
Totals = dict[tuple[str, ...], tuple[int, int]]


@dataclass(frozen=True, slots=True)
class Scope:
    """Which runs statistics cover: all, one target's, or one ``database`` value's."""

    target: str = ""
    database: str = ""

    def on(self, table: Any) -> Any:
        clauses = [table.c.target == self.target] if self.target else []
        if self.database:
            clauses.append(table.c.database == self.database)
        return and_(*clauses) if clauses else true()


def snapshot(conn: Connection, ids: list[int]) -> Totals:
    """What the runs ``ids`` contribute to the totals now."""
    rows = conn.execute(select(*_KEY, func.count(), func.coalesce(func.sum(
        runs.c.size_bytes), 0)).where(runs.c.id.in_(ids)).group_by(*_KEY)).all()
    return {tuple(r[:5]): (int(r[5]), int(r[6])) for r in rows}


def of_rows(rows: Iterable[dict[str, Any]]) -> Totals:
    """What new runs (full rows, as inserted) add to the totals."""
    out: dict[tuple[str, ...], tuple[int, int]] = {}
    for row in rows:
        key = tuple(row[c] for c in _COLUMNS)
        n, size = out.get(key, (0, 0))
        out[key] = (n + 1, size + int(row["size_bytes"]))
    return out


def apply(conn: Connection, before: Totals, after: Totals) -> None:
    """Move the totals from ``before`` to ``after``. Keys are visited in order and, on
    PostgreSQL, added with an upsert: replicas writing at once never deadlock or
    collide on a new key."""
    upsert = conn.dialect.name == "postgresql"
    for key in sorted(before.keys() | after.keys()):
        n0, s0 = before.get(key, (0, 0))
        n1, s1 = after.get(key, (0, 0))
        if n1 == n0 and s1 == s0:
            continue
        if upsert:
            conn.execute(pg_insert(run_totals).values(
                **dict(zip(_COLUMNS, key, strict=True)), runs=n1 - n0, size_bytes=s1 - s0)
                .on_conflict_do_update(index_elements=list(_COLUMNS), set_={
                    "runs": run_totals.c.runs + (n1 - n0),
                    "size_bytes": run_totals.c.size_bytes + (s1 - s0)}))
            continue
        match = and_(*(run_totals.c[c] == v for c, v in zip(_COLUMNS, key, strict=True)))
        done = conn.execute(update(run_totals).where(match).values(
            runs=run_totals.c.runs + (n1 - n0),
            size_bytes=run_totals.c.size_bytes + (s1 - s0)))
        if done.rowcount == 0:
            conn.execute(insert(run_totals).values(
                **dict(zip(_COLUMNS, key, strict=True)), runs=n1 - n0, size_bytes=s1 - s0))


def note_latest(conn: Connection, target: str, database: str, run_id: int,
                column: str) -> None:
    """Record ``run_id`` as the newest success/failure of ``database`` if it is newer."""
    current = database_latest.c[column]
    newest = case((func.coalesce(current, 0) > run_id, current), else_=run_id)
    if conn.dialect.name == "postgresql":
        conn.execute(pg_insert(database_latest).values(
            {"target": target, "database": database, column: run_id})
            .on_conflict_do_update(index_elements=["target", "database"],
                                   set_={column: newest}))
        return
    done = conn.execute(update(database_latest)
                        .where(database_latest.c.target == target,
                               database_latest.c.database == database)
                        .values({column: newest}))
    if done.rowcount == 0:
        conn.execute(insert(database_latest).values({"target": target, "database": database,
                                                     column: run_id}))


def rebuild(conn: Connection) -> None:
    """Recompute the derived tables from the runs (at start: self-healing). On
    PostgreSQL the tables are locked first: a replica writing meanwhile applies its
    change after the rebuild, on top of it."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("LOCK TABLE run_totals, database_latest IN EXCLUSIVE MODE"))
    conn.execute(delete(run_totals))
    conn.execute(insert(run_totals).from_select(
        [*_COLUMNS, "runs", "size_bytes"],
        select(*_KEY, func.count(), func.coalesce(func.sum(runs.c.size_bytes), 0))
        .group_by(*_KEY)))
    conn.execute(delete(database_latest))
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for column, status in (("last_success_id", RunStatus.SUCCEEDED),
                           ("last_failure_id", RunStatus.FAILED)):
        for target, db, run_id in conn.execute(
                select(runs.c.target, runs.c.database, func.max(runs.c.id))
                .where(runs.c.status == status.value)
                .group_by(runs.c.target, runs.c.database)):
            latest.setdefault((target, db), {
                "target": target, "database": db, "last_success_id": None,
                "last_failure_id": None})[column] = run_id
    if latest:
        conn.execute(insert(database_latest), list(latest.values()))


def stats(conn: Connection, backup_directory: str, scope: Scope) -> Stats:
    """Totals over the runs in ``scope``."""
    rows = conn.execute(select(run_totals.c.status, run_totals.c.file_state,
                               run_totals.c.verification, func.sum(run_totals.c.runs),
                               func.sum(run_totals.c.size_bytes))
                        .where(scope.on(run_totals))
                        .group_by(run_totals.c.status, run_totals.c.file_state,
                                  run_totals.c.verification)).all()
    # "present = true", not "IS true": only the former can use the indexes. One round
    # trip per question: on a networked store each costs more than the query.
    present = and_(runs.c.present == true(), scope.on(runs))
    oldest, newest = conn.execute(select(
        select(func.min(runs.c.started_at)).where(present).scalar_subquery(),
        select(func.max(runs.c.started_at)).where(present).scalar_subquery())).one()
    ok_id, fail_id = conn.execute(select(func.max(database_latest.c.last_success_id),
                                         func.max(database_latest.c.last_failure_id))
                                  .where(scope.on(database_latest))).one()
    summaries = _summary_rows(conn, [ok_id, fail_id])
    last_ok, last_fail = _summaries(summaries, ok_id, fail_id)
    by_status: dict[str, int] = {}
    verified: dict[str, int] = {}
    total = size = 0
    for status, file_state, verification, n, nbytes in rows:
        by_status[status] = by_status.get(status, 0) + int(n)
        if verification:
            verified[verification] = verified.get(verification, 0) + int(n)
        if file_state == FileState.PRESENT.value:
            total += int(n)
            size += int(nbytes)
    return Stats(
        total_backups=total, total_size_bytes=size, oldest_backup=aware(oldest),
        newest_backup=aware(newest), backup_directory=backup_directory,
        succeeded_runs=by_status.get(RunStatus.SUCCEEDED.value, 0),
        failed_runs=by_status.get(RunStatus.FAILED.value, 0),
        running_runs=by_status.get(RunStatus.RUNNING.value, 0)
        + by_status.get(RunStatus.PENDING.value, 0),
        last_success=last_ok, last_failure=last_fail,
        verified_backups=verified.get(Verification.OK.value, 0),
        verification_failures=verified.get(Verification.FAILED.value, 0),
        databases=_per_database(conn) if scope == Scope() else ())


def known(conn: Connection, scope: Scope) -> bool:
    """Whether any run is in ``scope`` (from the small derived table)."""
    return conn.execute(select(run_totals.c.runs).where(scope.on(run_totals))
                        .limit(1)).first() is not None


def _summary_rows(conn: Connection, ids: list[int | None]) -> dict[int, Any]:
    """The rows behind run summaries, in one query."""
    wanted = sorted({i for i in ids if i is not None})
    if not wanted:
        return {}
    return {int(r[0]): r for r in conn.execute(
        select(runs.c.id, runs.c.finished_at, runs.c.file_path, runs.c.error)
        .where(runs.c.id.in_(wanted)))}


def _summaries(rows: dict[int, Any], ok_id: int | None,
               fail_id: int | None) -> tuple[RunSummary | None, RunSummary | None]:
    out: list[RunSummary | None] = []
    for run_id in (ok_id, fail_id):
        row = None if run_id is None else rows.get(run_id)
        out.append(None if row is None else RunSummary(
            row[0], row[1], file_path=row[2] if run_id == ok_id else "",
            error=row[3] if run_id == fail_id else ""))
    return out[0], out[1]


def _per_database(conn: Connection) -> tuple[DatabaseStats, ...]:
    totals: dict[str, tuple[int, int]] = {}
    for db, n, nbytes in conn.execute(
            select(run_totals.c.database, func.sum(run_totals.c.runs),
                   func.sum(run_totals.c.size_bytes))
            .where(run_totals.c.file_state == FileState.PRESENT.value)
            .group_by(run_totals.c.database)):
        totals[db] = (int(n), int(nbytes))
    latest: dict[str, tuple[int | None, int | None]] = {}
    for _target, db, ok, fail in conn.execute(select(database_latest)):
        old_ok, old_fail = latest.get(db, (None, None))
        latest[db] = (max(filter(None, (ok, old_ok)), default=None),
                      max(filter(None, (fail, old_fail)), default=None))
    names = sorted({*totals, *latest})
    newest: dict[str, Any] = {}
    if names:  # per database, through (database, present, started_at), in one query
        each = [select(func.max(runs.c.started_at)).where(
            runs.c.database == db, runs.c.present == true()).scalar_subquery()
            for db in names]
        newest = dict(zip(names, conn.execute(select(*each)).one(), strict=True))
    rows = _summary_rows(conn, [i for pair in latest.values() for i in pair])
    out = []
    for db in names:
        ok, fail = _summaries(rows, *latest.get(db, (None, None)))
        n, nbytes = totals.get(db, (0, 0))
        out.append(DatabaseStats(database=db, total_backups=n, total_size_bytes=nbytes,
                                 newest_backup=aware(newest.get(db)), last_success=ok,
                                 last_failure=fail))
    return tuple(out)
