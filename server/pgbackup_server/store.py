"""The run store: every backup run, in SQLAlchemy (SQLite by default).

SQLite runs in WAL mode with a busy timeout so that the scheduler, the
backup workers and many concurrent API readers never see "database is
locked". Statistics are SQL aggregates over indexed columns, so they stay
fast and exact with hundreds of thousands of runs.
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    true,
    update,
)
from sqlalchemy.engine import make_url

from .errors import ConfigError, InvalidArgument, NotFound
from .models import (
    DatabaseStats,
    FileState,
    Run,
    RunPage,
    RunStatus,
    RunSummary,
    Stats,
    Trigger,
)
from .store_schema import UTCDateTime, database_latest, metadata, run_totals, runs

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50
_KEY = (runs.c.database, runs.c.status, runs.c.file_state, runs.c.verification)
_Totals = dict[tuple[str, str, str, str], tuple[int, int]]

__all__ = ["SqlRunStore", "UTCDateTime", "metadata", "runs"]


def _row_to_run(row: Any) -> Run:
    m = row._mapping
    return Run(
        id=m["id"], database=m["database"], target=m["target"],
        status=RunStatus(m["status"]),
        trigger=Trigger(m["trigger"]), backup_dir=m["backup_dir"], queued_at=m["queued_at"],
        schedule=m["schedule"], file_path=m["file_path"], temp_path=m["temp_path"],
        size_bytes=m["size_bytes"], sha256=m["sha256"], started_at=m["started_at"],
        finished_at=m["finished_at"], error=m["error"], format=m["format"],
        compression=m["compression"], pg_dump_version=m["pg_dump_version"],
        server_version=m["server_version"], file_state=FileState(m["file_state"]),
        bytes_written=m["bytes_written"], estimated_total_bytes=m["estimated_total_bytes"],
        verification=m["verification"], verification_reason=m["verification_reason"],
        verified_at=m["verified_at"],
    )


def encode_page_token(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id<{last_id}".encode()).decode().rstrip("=")


def decode_page_token(token: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        if not text.startswith("id<"):
            raise ValueError
        value = int(text[3:])
        if value < 1:
            raise ValueError
        return value
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise InvalidArgument(
            "page_token: not a token this service issued; pass next_page_token from the "
            "previous ListBackups response, or leave it empty for the first page") from None


class SqlRunStore:
    """Run records in a SQLAlchemy database. Thread-safe."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                db_path = Path(parsed.database)
                db_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = create_engine(url, pool_pre_ping=True, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        # SQLite allows one writer; serialising writes here avoids busy retries.
        self._write_lock = threading.Lock()
        metadata.create_all(self.engine)
        _check_schema(self.engine, url)
        self.rebuild_totals()

    def close(self) -> None:
        self.engine.dispose()

    # -- writes -------------------------------------------------------------

    # -- derived totals -----------------------------------------------------

    @staticmethod
    def _snapshot(conn: Connection, ids: list[int]) -> _Totals:
        rows = conn.execute(select(*_KEY, func.count(), func.coalesce(func.sum(
            runs.c.size_bytes), 0)).where(runs.c.id.in_(ids)).group_by(*_KEY)).all()
        return {(r[0], r[1], r[2], r[3]): (int(r[4]), int(r[5])) for r in rows}

    @staticmethod
    def _apply(conn: Connection, before: _Totals, after: _Totals) -> None:
        for key in before.keys() | after.keys():
            n0, s0 = before.get(key, (0, 0))
            n1, s1 = after.get(key, (0, 0))
            if n1 == n0 and s1 == s0:
                continue
            match = and_(run_totals.c.database == key[0], run_totals.c.status == key[1],
                         run_totals.c.file_state == key[2], run_totals.c.verification == key[3])
            done = conn.execute(update(run_totals).where(match).values(
                runs=run_totals.c.runs + (n1 - n0),
                size_bytes=run_totals.c.size_bytes + (s1 - s0)))
            if done.rowcount == 0:
                conn.execute(insert(run_totals).values(
                    database=key[0], status=key[1], file_state=key[2], verification=key[3],
                    runs=n1 - n0, size_bytes=s1 - s0))

    def _tracked(self, ids: list[int], **values: Any) -> None:
        """Update runs and keep the totals in step, in one transaction."""
        with self._write_lock, self.engine.begin() as conn:
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                before = self._snapshot(conn, chunk)
                conn.execute(update(runs).where(runs.c.id.in_(chunk)).values(**values))
                self._apply(conn, before, self._snapshot(conn, chunk))

    def rebuild_totals(self) -> None:
        """Recompute the derived tables from the runs (at start: self-healing)."""
        with self._write_lock, self.engine.begin() as conn:
            conn.execute(delete(run_totals))
            conn.execute(insert(run_totals).from_select(
                ["database", "status", "file_state", "verification", "runs", "size_bytes"],
                select(*_KEY, func.count(), func.coalesce(func.sum(runs.c.size_bytes), 0))
                .group_by(*_KEY)))
            conn.execute(delete(database_latest))
            latest: dict[str, dict[str, Any]] = {}
            for column, status in (("last_success_id", RunStatus.SUCCEEDED),
                                   ("last_failure_id", RunStatus.FAILED)):
                for db, run_id in conn.execute(
                        select(runs.c.database, func.max(runs.c.id))
                        .where(runs.c.status == status.value).group_by(runs.c.database)):
                    latest.setdefault(db, {"database": db, "last_success_id": None,
                                           "last_failure_id": None})[column] = run_id
            if latest:
                conn.execute(insert(database_latest), list(latest.values()))

    @staticmethod
    def _note_latest(conn: Connection, database: str, run_id: int, column: str) -> None:
        current = database_latest.c[column]
        done = conn.execute(update(database_latest)
                            .where(database_latest.c.database == database)
                            .values({column: case((func.coalesce(current, 0) > run_id,
                                                   current), else_=run_id)}))
        if done.rowcount == 0:
            conn.execute(insert(database_latest).values({"database": database,
                                                         column: run_id}))

    # -- writes -------------------------------------------------------------

    def _update(self, run_id: int, **values: Any) -> None:
        self._tracked([run_id], **values)

    def create_run(self, *, database: str, trigger: Trigger, backup_dir: str,
                   queued_at: datetime, schedule: str = "", target: str = "") -> Run:
        with self._write_lock, self.engine.begin() as conn:
            result = conn.execute(insert(runs).values(
                database=database, target=target or database,
                status=RunStatus.PENDING.value, trigger=trigger.value,
                schedule=schedule, backup_dir=backup_dir, queued_at=queued_at,
                file_state=FileState.NONE.value, present=False))
            run_id = int(result.inserted_primary_key[0])  # type: ignore[index]
            self._apply(conn, {}, self._snapshot(conn, [run_id]))
        return self.get(run_id)

    def mark_running(self, run_id: int, *, started_at: datetime, temp_path: str,
                     format: str, compression: str, pg_dump_version: str,
                     server_version: str) -> None:
        self._update(run_id, status=RunStatus.RUNNING.value, started_at=started_at,
                     temp_path=temp_path, format=format, compression=compression,
                     pg_dump_version=pg_dump_version, server_version=server_version)

    def set_progress(self, run_id: int, *, bytes_written: int,
                     estimated_total_bytes: int) -> None:
        self._update(run_id, bytes_written=bytes_written,
                     estimated_total_bytes=estimated_total_bytes)

    def set_verification(self, run_id: int, *, ok: bool, reason: str,
                         verified_at: datetime) -> None:
        self._update(run_id, verification="OK" if ok else "FAILED",
                     verification_reason=reason, verified_at=verified_at)

    def mark_succeeded(self, run_id: int, *, finished_at: datetime, file_path: str,
                       size_bytes: int, sha256: str, bytes_written: int = 0) -> None:
        self._finish(run_id, "last_success_id", status=RunStatus.SUCCEEDED.value,
                     finished_at=finished_at, file_path=file_path, temp_path="",
                     size_bytes=size_bytes, sha256=sha256, bytes_written=bytes_written,
                     file_state=FileState.PRESENT.value, present=True)

    def mark_failed(self, run_id: int, *, finished_at: datetime, error: str,
                    started_at: datetime | None = None) -> None:
        values: dict[str, Any] = dict(status=RunStatus.FAILED.value, finished_at=finished_at,
                                      error=error, temp_path="")
        if started_at is not None:
            values["started_at"] = started_at
        self._finish(run_id, "last_failure_id", **values)

    def _finish(self, run_id: int, latest_column: str, **values: Any) -> None:
        with self._write_lock, self.engine.begin() as conn:
            before = self._snapshot(conn, [run_id])
            conn.execute(update(runs).where(runs.c.id == run_id).values(**values))
            self._apply(conn, before, self._snapshot(conn, [run_id]))
            database = conn.execute(select(runs.c.database).where(runs.c.id == run_id)).scalar()
            if database is not None:
                self._note_latest(conn, database, run_id, latest_column)

    def set_file_state(self, run_ids: Iterable[int], state: FileState) -> None:
        ids = list(run_ids)
        if ids:
            self._tracked(ids, file_state=state.value, present=state is FileState.PRESENT)

    # -- reads --------------------------------------------------------------

    def get(self, run_id: int) -> Run:
        with self.engine.connect() as conn:
            row = conn.execute(select(runs).where(runs.c.id == run_id)).first()
        if row is None:
            raise NotFound(f"backup {run_id} not found")
        return _row_to_run(row)

    def list_runs(self, *, database: str = "", status: RunStatus | None = None,
                  page_size: int = 0, page_token: str = "", target: str = "") -> RunPage:
        """Runs, newest first; ``database`` and ``target`` filter on those columns."""
        if not 0 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size: must be between 1 and {MAX_PAGE_SIZE} (0 or "
                                  f"unset: {DEFAULT_PAGE_SIZE}), got {page_size}")
        size = page_size or DEFAULT_PAGE_SIZE
        query = select(runs).order_by(runs.c.id.desc()).limit(size + 1)
        if database:
            query = query.where(runs.c.database == database)
        if target:
            query = query.where(runs.c.target == target)
        if status is not None:
            query = query.where(runs.c.status == status.value)
        if page_token:
            query = query.where(runs.c.id < decode_page_token(page_token))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        items = tuple(_row_to_run(r) for r in rows[:size])
        token = encode_page_token(items[-1].id) if len(rows) > size else ""
        return RunPage(items, token)

    def unfinished_runs(self) -> list[Run]:
        """Runs left PENDING or RUNNING, i.e. by a process that died."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(runs).where(
                runs.c.status.in_([RunStatus.PENDING.value, RunStatus.RUNNING.value]))).all()
        return [_row_to_run(r) for r in rows]

    def present_runs(self, backup_dir: str | None = None) -> list[Run]:
        """Succeeded runs whose file should be on disk."""
        query = select(runs).where(runs.c.present.is_(True))
        if backup_dir is not None:
            query = query.where(runs.c.backup_dir == backup_dir)
        with self.engine.connect() as conn:
            return [_row_to_run(r) for r in conn.execute(query).all()]

    def latest_status_by_database(self, backup_dir: str) -> dict[tuple[str, str], RunStatus]:
        """Status of the newest finished run of each (target, database) in ``backup_dir``."""
        newest = (select(func.max(runs.c.id).label("id"))
                  .where(runs.c.backup_dir == backup_dir,
                         runs.c.status.in_([RunStatus.SUCCEEDED.value, RunStatus.FAILED.value]))
                  .group_by(runs.c.target, runs.c.database).subquery())
        query = select(runs.c.target, runs.c.database, runs.c.status).join(
            newest, runs.c.id == newest.c.id)
        with self.engine.connect() as conn:
            return {(t, db): RunStatus(st) for t, db, st in conn.execute(query).all()}

    def backup_dirs(self) -> list[str]:
        """Every directory the service has written backups to."""
        with self.engine.connect() as conn:
            return [d for (d,) in conn.execute(select(runs.c.backup_dir).distinct()).all()]

    def last_scheduled_run(self, schedule: str) -> Run | None:
        query = (select(runs).where(runs.c.schedule == schedule)
                 .order_by(runs.c.queued_at.desc()).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _row_to_run(row)

    def has_database(self, database: str) -> bool:
        """Whether any run was recorded with this database."""
        with self.engine.connect() as conn:
            return conn.execute(select(run_totals.c.database)
                                .where(run_totals.c.database == database).limit(1)).first() \
                is not None

    @staticmethod
    def _target_databases(conn: Connection, target: str) -> list[str]:
        """The database values of a target's runs. A value is the target's when its
        newest run is (one index seek per distinct value; no scan of the runs)."""
        out = []
        for (db,) in conn.execute(select(run_totals.c.database).distinct()).all():
            owner = conn.execute(select(runs.c.target).where(runs.c.database == db)
                                 .order_by(runs.c.id.desc()).limit(1)).scalar()
            if owner == target:
                out.append(db)
        return out

    def stats(self, backup_directory: str, database: str = "", target: str = "") -> Stats:
        """Totals from the derived tables; oldest/newest and the last outcomes are
        index seeks. Nothing here scans the runs. ``database`` restricts them to one
        database value, ``target`` to the database values of that target's runs."""
        with self.engine.connect() as conn:
            databases = ([database] if database else
                         self._target_databases(conn, target) if target else None)
            scope = true() if databases is None else run_totals.c.database.in_(databases)
            present_scope = and_(runs.c.present.is_(True),
                                 true() if databases is None
                                 else runs.c.database.in_(databases))
            rows = conn.execute(select(run_totals.c.status, run_totals.c.file_state,
                                       run_totals.c.verification, func.sum(run_totals.c.runs),
                                       func.sum(run_totals.c.size_bytes))
                                .where(scope).group_by(run_totals.c.status,
                                                       run_totals.c.file_state,
                                                       run_totals.c.verification)).all()
            oldest = conn.execute(select(func.min(runs.c.started_at))
                                  .where(present_scope)).scalar()
            newest = conn.execute(select(func.max(runs.c.started_at))
                                  .where(present_scope)).scalar()
            latest = self._latest(conn, databases)
            per_db = self._per_database(conn) if databases is None else ()
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
            total_backups=total, total_size_bytes=size, oldest_backup=_aware(oldest),
            newest_backup=_aware(newest), backup_directory=backup_directory,
            succeeded_runs=by_status.get(RunStatus.SUCCEEDED.value, 0),
            failed_runs=by_status.get(RunStatus.FAILED.value, 0),
            running_runs=by_status.get(RunStatus.RUNNING.value, 0)
            + by_status.get(RunStatus.PENDING.value, 0),
            last_success=latest[0], last_failure=latest[1],
            verified_backups=verified.get("OK", 0),
            verification_failures=verified.get("FAILED", 0),
            databases=per_db,
        )

    @staticmethod
    def _summaries(conn: Connection, ok_id: int | None,
                   fail_id: int | None) -> tuple[RunSummary | None, RunSummary | None]:
        out: list[RunSummary | None] = []
        for run_id in (ok_id, fail_id):
            row = None if run_id is None else conn.execute(
                select(runs.c.id, runs.c.finished_at, runs.c.file_path, runs.c.error)
                .where(runs.c.id == run_id)).first()
            out.append(None if row is None else RunSummary(
                row[0], row[1], file_path=row[2] if run_id == ok_id else "",
                error=row[3] if run_id == fail_id else ""))
        return out[0], out[1]

    def _latest(self, conn: Connection,
                databases: list[str] | None) -> tuple[RunSummary | None, RunSummary | None]:
        scope = true() if databases is None else database_latest.c.database.in_(databases)
        ok_id, fail_id = conn.execute(select(func.max(database_latest.c.last_success_id),
                                             func.max(database_latest.c.last_failure_id))
                                      .where(scope)).one()
        return self._summaries(conn, ok_id, fail_id)

    def _per_database(self, conn: Connection) -> tuple[DatabaseStats, ...]:
        totals: dict[str, tuple[int, int]] = {}
        for db, n, nbytes in conn.execute(
                select(run_totals.c.database, func.sum(run_totals.c.runs),
                       func.sum(run_totals.c.size_bytes))
                .where(run_totals.c.file_state == FileState.PRESENT.value)
                .group_by(run_totals.c.database)):
            totals[db] = (int(n), int(nbytes))
        latest = {db: (ok, fail) for db, ok, fail in conn.execute(select(database_latest))}
        out = []
        for db in sorted({*totals, *latest}):
            newest = conn.execute(select(func.max(runs.c.started_at)).where(
                runs.c.database == db, runs.c.present.is_(True))).scalar()
            ok, fail = self._summaries(conn, *latest.get(db, (None, None)))
            n, nbytes = totals.get(db, (0, 0))
            out.append(DatabaseStats(database=db, total_backups=n, total_size_bytes=nbytes,
                                     newest_backup=_aware(newest), last_success=ok,
                                     last_failure=fail))
        return tuple(out)

    def bulk_insert(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert prepared rows (benchmarks and tests that need many runs)."""
        with self._write_lock, self.engine.begin() as conn:
            conn.execute(insert(runs), list(rows))
        self.rebuild_totals()


def _check_schema(engine: Engine, url: str) -> None:
    """create_all adds missing tables, not missing columns: refuse a store written
    by an incompatible backupd with a clear message instead of failing mid-query."""
    from sqlalchemy import inspect

    for table in (runs, run_totals, database_latest):
        have = {c["name"] for c in inspect(engine).get_columns(table.name)}
        missing = sorted({c.name for c in table.columns} - have)
        if missing:
            raise ConfigError(f"store.url: the table {table.name} in {make_url(url)!r} lacks "
                              f"columns {', '.join(missing)}; it was created by an "
                              "incompatible backupd version. Point store.url at a new file "
                              "or migrate the store")


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    # FULL: a recorded run must survive a power cut, not only a crash.
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()

