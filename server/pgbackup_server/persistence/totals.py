"""The derived tables behind fast statistics, and the statistics queries.

``run_totals`` counts runs and bytes per (target, database, status, file state,
verification); ``database_latest`` holds the newest success and failure per
(target, database). Every write of a run updates them in the same transaction, and they are
rebuilt at every start, so they cannot drift; nothing here scans the runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    null,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert

from ..domain.models import (
    DatabaseStats,
    FileState,
    RunStatus,
    RunSummary,
    Stats,
    TargetSummary,
    Verification,
)
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

    @property
    def shape(self) -> tuple[bool, bool]:
        """Which filters it has: statements built for a shape are reused with
        :attr:`params` (built once, their SQL and cache key are too)."""
        return bool(self.target), bool(self.database)

    @property
    def params(self) -> dict[str, str]:
        return {"scope_target": self.target, "scope_database": self.database}


def bound(shape: tuple[bool, bool], table: Any) -> Any:
    """The filter of scopes of ``shape`` on ``table``, its values left as parameters
    (``scope_target``, ``scope_database``: :attr:`Scope.params`)."""
    clauses = [table.c.target == bindparam("scope_target")] if shape[0] else []
    if shape[1]:
        clauses.append(table.c.database == bindparam("scope_database"))
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


@cache
def _stats_queries(shape: tuple[bool, bool]) -> tuple[Any, Any]:
    """:func:`stats`'s two statements for scopes of ``shape`` (built once)."""
    present = and_(runs.c.present == true(), bound(shape, runs))
    totals = select(
        run_totals.c.target, run_totals.c.database, run_totals.c.status,
        run_totals.c.file_state, run_totals.c.verification, run_totals.c.runs,
        run_totals.c.size_bytes,
        select(func.min(runs.c.started_at)).where(present).scalar_subquery(),
        select(func.max(runs.c.started_at)).where(present).scalar_subquery(),
    ).where(bound(shape, run_totals))
    ok, fail, each = runs.alias("ok"), runs.alias("fail"), runs.alias("each")
    newest = (null() if any(shape) else select(func.max(each.c.started_at)).where(
        each.c.database == database_latest.c.database, each.c.present == true())
        .scalar_subquery())
    latest = select(
        database_latest.c.database, ok.c.id, ok.c.finished_at, ok.c.file_path, fail.c.id,
        fail.c.finished_at, fail.c.error, newest,
    ).select_from(database_latest
                  .outerjoin(ok, ok.c.id == database_latest.c.last_success_id)
                  .outerjoin(fail, fail.c.id == database_latest.c.last_failure_id)
                  ).where(bound(shape, database_latest))
    return totals, latest


def stats(conn: Connection, backup_directory: str, scope: Scope) -> Stats:
    """Totals over the runs in ``scope``, in two statements on small derived tables
    (and index look-ups): a store across the network pays a round trip per statement,
    more than the queries cost. Over every run, also per database, and the database
    names each target's runs were recorded under (``targets``)."""
    everything = scope == Scope()
    query_totals, query_latest = _stats_queries(scope.shape)
    # 1. The totals' rows in scope, with the oldest and newest present backups.
    totals = conn.execute(query_totals, scope.params).all()
    # 2. The newest success and failure per (target, database) with their summaries,
    # and (over every run) each database's newest present backup.
    latest = conn.execute(query_latest, scope.params).all()
    by_status: dict[str, int] = {}
    verified: dict[str, int] = {}
    per_db: dict[str, tuple[int, int]] = {}
    by_target: dict[str, set[str]] = {}
    total = size = 0
    for target, db, status, file_state, verification, n, nbytes, _, _ in totals:
        by_status[status] = by_status.get(status, 0) + int(n)
        if verification:
            verified[verification] = verified.get(verification, 0) + int(n)
        by_target.setdefault(target, set()).add(db)
        if file_state == FileState.PRESENT.value:
            total += int(n)
            size += int(nbytes)
            count, used = per_db.get(db, (0, 0))
            per_db[db] = (count + int(n), used + int(nbytes))
    oldest, newest_any = (totals[0][7], totals[0][8]) if totals else (None, None)
    return Stats(
        total_backups=total, total_size_bytes=size, oldest_backup=aware(oldest),
        newest_backup=aware(newest_any), backup_directory=backup_directory,
        succeeded_runs=by_status.get(RunStatus.SUCCEEDED.value, 0),
        failed_runs=by_status.get(RunStatus.FAILED.value, 0),
        running_runs=by_status.get(RunStatus.RUNNING.value, 0)
        + by_status.get(RunStatus.PENDING.value, 0),
        last_success=_newest(latest, 1, with_path=True),
        last_failure=_newest(latest, 4, with_path=False),
        verified_backups=verified.get(Verification.OK.value, 0),
        verification_failures=verified.get(Verification.FAILED.value, 0),
        databases=_per_database(latest, per_db) if everything else (),
        targets=tuple(TargetSummary(t, databases=tuple(sorted(dbs)))
                      for t, dbs in sorted(by_target.items())))


def known(conn: Connection, scope: Scope) -> bool:
    """Whether any run is in ``scope`` (from the small derived table)."""
    return conn.execute(select(run_totals.c.runs).where(scope.on(run_totals))
                        .limit(1)).first() is not None


def _newest(rows: Sequence[Any], at: int, *, with_path: bool) -> RunSummary | None:
    """The summary of the newest run among ``rows`` (of :func:`stats`'s second query)
    whose id is in column ``at`` (then its time and its path or error)."""
    found = [r for r in rows if r[at] is not None]
    if not found:
        return None
    row = max(found, key=lambda r: r[at])
    return RunSummary(int(row[at]), aware(row[at + 1]),  # type: ignore[arg-type]
                      file_path=row[at + 2] if with_path else "",
                      error="" if with_path else row[at + 2])


def _per_database(latest: Sequence[Any],
                  totals: dict[str, tuple[int, int]]) -> tuple[DatabaseStats, ...]:
    """Per database name (over every target that recorded it)."""
    rows: dict[str, list[Any]] = {}
    for row in latest:
        rows.setdefault(row[0], []).append(row)
    out = []
    for db in sorted({*totals, *rows}):
        mine = rows.get(db, [])
        n, nbytes = totals.get(db, (0, 0))
        newest = max((r[7] for r in mine if r[7] is not None), default=None)
        out.append(DatabaseStats(database=db, total_backups=n, total_size_bytes=nbytes,
                                 newest_backup=aware(newest),
                                 last_success=_newest(mine, 1, with_path=True),
                                 last_failure=_newest(mine, 4, with_path=False)))
    return tuple(out)
