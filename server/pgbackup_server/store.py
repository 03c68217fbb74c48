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
    Boolean,
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    create_engine,
    event,
    func,
    insert,
    select,
    true,
    update,
)
from sqlalchemy.engine import make_url

from .errors import InvalidArgument, NotFound
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

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC without zone (SQLite has none) and reads back aware datetimes."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


metadata = MetaData()
runs = Table(
    "backup_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("database", String(255), nullable=False),
    Column("target", String(255), nullable=False, default=""),
    Column("status", String(16), nullable=False),
    Column("trigger", String(16), nullable=False),
    Column("schedule", String(255), nullable=False, default=""),
    Column("backup_dir", Text, nullable=False),
    Column("file_path", Text, nullable=False, default=""),
    Column("temp_path", Text, nullable=False, default=""),
    Column("size_bytes", Integer, nullable=False, default=0),
    Column("sha256", String(64), nullable=False, default=""),
    Column("queued_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Column("error", Text, nullable=False, default=""),
    Column("format", String(16), nullable=False, default=""),
    Column("compression", String(16), nullable=False, default=""),
    Column("pg_dump_version", String(32), nullable=False, default=""),
    Column("server_version", String(32), nullable=False, default=""),
    Column("file_state", String(16), nullable=False, default=FileState.NONE.value),
    Column("present", Boolean, nullable=False, default=False),
    Column("bytes_written", Integer, nullable=False, default=0),
    Column("estimated_total_bytes", Integer, nullable=False, default=0),
    Column("verification", String(16), nullable=False, default=""),
    Column("verification_reason", Text, nullable=False, default=""),
    Column("verified_at", UTCDateTime),
    Index("ix_runs_status_finished", "status", "finished_at"),
    Index("ix_runs_database_id", "database", "id"),
    Index("ix_runs_database_status_id", "database", "status", "id"),
    Index("ix_runs_present_started", "present", "started_at"),
    Index("ix_runs_dir_present", "backup_dir", "present"),
    Index("ix_runs_schedule_queued", "schedule", "queued_at"),
    Index("ix_runs_verification", "verification"),
)


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

    def close(self) -> None:
        self.engine.dispose()

    # -- writes -------------------------------------------------------------

    def _update(self, run_id: int, **values: Any) -> None:
        with self._write_lock, self.engine.begin() as conn:
            conn.execute(update(runs).where(runs.c.id == run_id).values(**values))

    def create_run(self, *, database: str, trigger: Trigger, backup_dir: str,
                   queued_at: datetime, schedule: str = "", target: str = "") -> Run:
        with self._write_lock, self.engine.begin() as conn:
            result = conn.execute(insert(runs).values(
                database=database, target=target or database,
                status=RunStatus.PENDING.value, trigger=trigger.value,
                schedule=schedule, backup_dir=backup_dir, queued_at=queued_at,
                file_state=FileState.NONE.value, present=False))
            run_id = int(result.inserted_primary_key[0])  # type: ignore[index]
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
        self._update(run_id, status=RunStatus.SUCCEEDED.value, finished_at=finished_at,
                     file_path=file_path, temp_path="", size_bytes=size_bytes, sha256=sha256,
                     bytes_written=bytes_written,
                     file_state=FileState.PRESENT.value, present=True)

    def mark_failed(self, run_id: int, *, finished_at: datetime, error: str,
                    started_at: datetime | None = None) -> None:
        values: dict[str, Any] = dict(status=RunStatus.FAILED.value, finished_at=finished_at,
                                      error=error, temp_path="")
        if started_at is not None:
            values["started_at"] = started_at
        self._update(run_id, **values)

    def set_file_state(self, run_ids: Iterable[int], state: FileState) -> None:
        ids = list(run_ids)
        if not ids:
            return
        present = state is FileState.PRESENT
        with self._write_lock, self.engine.begin() as conn:
            for chunk in range(0, len(ids), 500):
                conn.execute(update(runs).where(runs.c.id.in_(ids[chunk:chunk + 500]))
                             .values(file_state=state.value, present=present))

    # -- reads --------------------------------------------------------------

    def get(self, run_id: int) -> Run:
        with self.engine.connect() as conn:
            row = conn.execute(select(runs).where(runs.c.id == run_id)).first()
        if row is None:
            raise NotFound(f"backup {run_id} not found")
        return _row_to_run(row)

    def list_runs(self, *, database: str = "", status: RunStatus | None = None,
                  page_size: int = 0, page_token: str = "") -> RunPage:
        size = page_size or DEFAULT_PAGE_SIZE
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size: must be between 1 and {MAX_PAGE_SIZE}, got "
                                  f"{page_size}")
        query = select(runs).order_by(runs.c.id.desc()).limit(size + 1)
        if database:
            query = query.where(runs.c.database == database)
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

    def latest_status_by_database(self, backup_dir: str) -> dict[str, RunStatus]:
        """Status of the newest finished run of each database in ``backup_dir``."""
        newest = (select(runs.c.database, func.max(runs.c.id).label("id"))
                  .where(runs.c.backup_dir == backup_dir,
                         runs.c.status.in_([RunStatus.SUCCEEDED.value, RunStatus.FAILED.value]))
                  .group_by(runs.c.database).subquery())
        query = select(runs.c.database, runs.c.status).join(newest, runs.c.id == newest.c.id)
        with self.engine.connect() as conn:
            return {db: RunStatus(st) for db, st in conn.execute(query).all()}

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

    def stats(self, backup_directory: str, database: str = "") -> Stats:
        scope = (runs.c.database == database) if database else true()
        with self.engine.connect() as conn:
            present = conn.execute(
                select(func.count(), func.coalesce(func.sum(runs.c.size_bytes), 0),
                       func.min(runs.c.started_at), func.max(runs.c.started_at))
                .where(runs.c.present.is_(True), scope)).one()
            counts: dict[str, int] = dict(conn.execute(
                select(runs.c.status, func.count()).where(scope)
                .group_by(runs.c.status)).all())
            verified: dict[str, int] = dict(conn.execute(
                select(runs.c.verification, func.count())
                .where(runs.c.verification != "", scope)
                .group_by(runs.c.verification)).all())
            last_ok = conn.execute(
                select(runs.c.id, runs.c.finished_at, runs.c.file_path)
                .where(runs.c.status == RunStatus.SUCCEEDED.value, scope)
                .order_by(runs.c.status, runs.c.finished_at.desc()).limit(1)).first()
            last_fail = conn.execute(
                select(runs.c.id, runs.c.finished_at, runs.c.error)
                .where(runs.c.status == RunStatus.FAILED.value, scope)
                .order_by(runs.c.status, runs.c.finished_at.desc()).limit(1)).first()
            per_db = self._per_database(conn) if not database else ()
        # min/max come back raw from aggregate functions: convert like the column type.
        oldest, newest = (_aware(v) for v in (present[2], present[3]))
        return Stats(
            total_backups=int(present[0]), total_size_bytes=int(present[1]),
            oldest_backup=oldest, newest_backup=newest, backup_directory=backup_directory,
            succeeded_runs=int(counts.get(RunStatus.SUCCEEDED.value, 0)),
            failed_runs=int(counts.get(RunStatus.FAILED.value, 0)),
            running_runs=int(counts.get(RunStatus.RUNNING.value, 0))
            + int(counts.get(RunStatus.PENDING.value, 0)),
            last_success=RunSummary(last_ok[0], last_ok[1], file_path=last_ok[2])
            if last_ok else None,
            last_failure=RunSummary(last_fail[0], last_fail[1], error=last_fail[2])
            if last_fail else None,
            verified_backups=int(verified.get("OK", 0)),
            verification_failures=int(verified.get("FAILED", 0)),
            databases=per_db,
        )

    @staticmethod
    def _per_database(conn: Any) -> tuple[DatabaseStats, ...]:
        """Totals and last outcomes per database, in three grouped queries."""
        totals = {db: (n, size, newest) for db, n, size, newest in conn.execute(
            select(runs.c.database, func.count(), func.coalesce(func.sum(runs.c.size_bytes), 0),
                   func.max(runs.c.started_at))
            .where(runs.c.present.is_(True)).group_by(runs.c.database)).all()}
        last: dict[tuple[str, str], RunSummary] = {}
        for status in (RunStatus.SUCCEEDED, RunStatus.FAILED):
            newest_id = (select(func.max(runs.c.id).label("id"))
                         .where(runs.c.status == status.value)
                         .group_by(runs.c.database).subquery())
            for row in conn.execute(select(runs.c.database, runs.c.id, runs.c.finished_at,
                                           runs.c.file_path, runs.c.error)
                                    .join(newest_id, runs.c.id == newest_id.c.id)).all():
                last[(row[0], status.value)] = RunSummary(
                    row[1], row[2], file_path=row[3] if status is RunStatus.SUCCEEDED else "",
                    error=row[4] if status is RunStatus.FAILED else "")
        names = sorted({*totals, *(db for db, _ in last)})
        return tuple(DatabaseStats(
            database=db, total_backups=int(totals.get(db, (0, 0, None))[0]),
            total_size_bytes=int(totals.get(db, (0, 0, None))[1]),
            newest_backup=_aware(totals.get(db, (0, 0, None))[2]),
            last_success=last.get((db, RunStatus.SUCCEEDED.value)),
            last_failure=last.get((db, RunStatus.FAILED.value))) for db in names)

    def bulk_insert(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert prepared rows (benchmarks and tests that need many runs)."""
        with self._write_lock, self.engine.begin() as conn:
            conn.execute(insert(runs), list(rows))


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

