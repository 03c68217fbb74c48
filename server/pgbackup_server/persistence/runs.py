"""The run store: every backup run, in SQL (SQLite by default).

Writes return the updated :class:`Run`, so callers never read back what they just
wrote. Statistics come from the derived tables (:mod:`.totals`).
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update

from ..domain.errors import InvalidArgument, NotFound
from ..domain.models import (
    FileState,
    Run,
    RunKind,
    RunPage,
    RunStatus,
    Stats,
    Trigger,
    Verification,
)
from . import totals
from .codec import from_row, to_row
from .copies import copies_of
from .engine import reading
from .schema import runs
from .totals import Scope

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50
# Optional fields stored as "" when unset.
_OPTIONAL_TEXT = frozenset({"format", "compression"})


def encode_page_token(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id<{last_id}".encode()).decode().rstrip("=")


def decode_page_token(token: str, rpc: str = "ListBackups") -> int:
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
            f"previous {rpc} response, or leave it empty for the first page") from None


def page_limit(page_size: int) -> int:
    """The page size a request asks for (0: the default); InvalidArgument outside 1..1000."""
    size = page_size or DEFAULT_PAGE_SIZE
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size: must be between 1 and {MAX_PAGE_SIZE} (0 or "
                              f"unset: {DEFAULT_PAGE_SIZE}), got {page_size}")
    return size


def _run(row: Any) -> Run:
    return from_row(Run, row._mapping)


def _runs(conn: Connection, rows: Sequence[Any]) -> list[Run]:
    """Runs with their copies: one more query for all of them, never one per run."""
    items = [_run(r) for r in rows]
    attached = copies_of(conn, [r.id for r in items])
    return [replace(r, copies=attached[r.id]) if r.id in attached else r for r in items]


def pending_row(*, database: str, trigger: Trigger, backup_dir: str, queued_at: datetime,
                schedule: str = "", target: str = "",
                kind: RunKind = RunKind.DATABASE) -> dict[str, Any]:
    """The row of a new PENDING run."""
    values = to_row({"database": database, "target": target or database, "kind": kind,
                     "status": RunStatus.PENDING, "trigger": trigger, "schedule": schedule,
                     "backup_dir": backup_dir, "queued_at": queued_at,
                     "file_state": FileState.NONE, "format": None, "compression": None},
                    _OPTIONAL_TEXT)
    return {**values, "present": False}


def insert_runs(conn: Connection, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert new runs (rows of :func:`pending_row`) and count them in the totals, in the
    caller's transaction; their ids, in order."""
    ids = [int(i) for (i,) in conn.execute(
        insert(runs).returning(runs.c.id, sort_by_parameter_order=True), list(rows))]
    totals.apply(conn, {}, totals.snapshot(conn, ids))
    return ids


class SqlRunStore:
    """Run records in a SQLAlchemy database. Thread-safe."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # SQLite allows one writer; serialising writes here avoids busy retries.
        self._write_lock = threading.Lock()
        self.rebuild_totals()

    @property
    def write_lock(self) -> threading.Lock:
        """The lock every writer of this database shares (the copy store too)."""
        return self._write_lock

    def close(self) -> None:
        self.engine.dispose()

    def rebuild_totals(self) -> None:
        with self._write_lock, self.engine.begin() as conn:
            totals.rebuild(conn)

    # -- writes -------------------------------------------------------------

    def _write(self, ids: list[int], changes: dict[str, Any], latest: str = "") -> None:
        """Update runs and keep the totals in step, in one transaction."""
        values = to_row(changes, _OPTIONAL_TEXT)
        if "file_state" in values:
            values["present"] = values["file_state"] == FileState.PRESENT.value
        with self._write_lock, self.engine.begin() as conn:
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                before = totals.snapshot(conn, chunk)
                conn.execute(update(runs).where(runs.c.id.in_(chunk)).values(**values))
                totals.apply(conn, before, totals.snapshot(conn, chunk))
                if latest:
                    for run_id, target, db in conn.execute(
                            select(runs.c.id, runs.c.target, runs.c.database)
                            .where(runs.c.id.in_(chunk))):
                        totals.note_latest(conn, target, db, run_id, latest)

    def _update(self, run_id: int, latest: str = "", **changes: Any) -> Run:
        self._write([run_id], changes, latest)
        return self.get(run_id)

    def create_run(self, *, database: str, trigger: Trigger, backup_dir: str,
                   queued_at: datetime, schedule: str = "", target: str = "",
                   kind: RunKind = RunKind.DATABASE) -> Run:
        row = pending_row(database=database, trigger=trigger, backup_dir=backup_dir,
                          queued_at=queued_at, schedule=schedule, target=target, kind=kind)
        with self._write_lock, self.engine.begin() as conn:
            (run_id,) = insert_runs(conn, [row])
        return self.get(run_id)

    def mark_running(self, run_id: int, **changes: Any) -> Run:
        """RUNNING, with what the run is made with (started_at, temp_path, format,
        compression, pg_dump_version, server_version)."""
        return self._update(run_id, status=RunStatus.RUNNING, **changes)

    def set_progress(self, run_id: int, *, bytes_written: int,
                     estimated_total_bytes: int) -> None:
        self._write([run_id], {"bytes_written": bytes_written,
                               "estimated_total_bytes": estimated_total_bytes})

    def set_verification(self, run_id: int, *, ok: bool, reason: str,
                         verified_at: datetime) -> Run:
        return self._update(run_id, verification=Verification.OK if ok else Verification.FAILED,
                            verification_reason=reason, verified_at=verified_at)

    def mark_succeeded(self, run_id: int, *, finished_at: datetime, file_path: str,
                       size_bytes: int, sha256: str, bytes_written: int = 0,
                       **changes: Any) -> Run:
        """SUCCEEDED with its file; ``changes``: what only the finished run knows (a
        physical backup's WAL range; plaintext_sha256 and encryption of an encrypted one)."""
        return self._update(run_id, "last_success_id", status=RunStatus.SUCCEEDED,
                            finished_at=finished_at, file_path=file_path, temp_path="",
                            size_bytes=size_bytes, sha256=sha256, bytes_written=bytes_written,
                            file_state=FileState.PRESENT, error="", **changes)

    def mark_failed(self, run_id: int, *, finished_at: datetime, error: str,
                    started_at: datetime | None = None, **stored: Any) -> Run:
        """FAILED with the reason; ``stored``: what the run did store (a run whose
        required copy failed keeps its other copies: file_path, size_bytes, sha256,
        file_state...)."""
        changes: dict[str, Any] = dict(status=RunStatus.FAILED, finished_at=finished_at,
                                       error=error, temp_path="", **stored)
        if started_at is not None:
            changes["started_at"] = started_at
        return self._update(run_id, "last_failure_id", **changes)

    def relocate(self, run_id: int, *, file_path: str, backup_dir: str) -> Run:
        """The run's file is now another of its copies (the one listed went)."""
        return self._update(run_id, file_path=file_path, backup_dir=backup_dir)

    def set_file_state(self, run_ids: Iterable[int], state: FileState) -> None:
        ids = list(run_ids)
        if ids:
            self._write(ids, {"file_state": state})

    def bulk_insert(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert prepared rows (benchmarks and tests that need many runs)."""
        with self._write_lock, self.engine.begin() as conn:
            conn.execute(insert(runs), [{"kind": RunKind.DATABASE.value, **r} for r in rows])
        self.rebuild_totals()

    # -- reads --------------------------------------------------------------

    def get(self, run_id: int) -> Run:
        with self.engine.connect() as conn:
            row = conn.execute(select(runs).where(runs.c.id == run_id)).first()
            if row is None:
                raise NotFound(f"backup {run_id} not found")
            return _runs(conn, [row])[0]

    def list_runs(self, *, database: str = "", target: str = "",
                  status: RunStatus | None = None, page_size: int = 0,
                  page_token: str = "", trigger: Trigger | None = None) -> RunPage:
        """Newest first; ``page_size`` 0 means the default."""
        size = page_limit(page_size)
        query = (select(runs).where(Scope(target, database).on(runs))
                 .order_by(runs.c.id.desc()).limit(size + 1))
        if status is not None:
            query = query.where(runs.c.status == status.value)
        if trigger is not None:
            query = query.where(runs.c.trigger == trigger.value)
        if page_token:
            query = query.where(runs.c.id < decode_page_token(page_token))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
            items = tuple(_runs(conn, rows[:size]))
        token = encode_page_token(items[-1].id) if len(rows) > size else ""
        return RunPage(items, token)

    def has_runs(self, *, target: str = "", database: str = "") -> bool:
        with self.engine.connect() as conn:
            return totals.known(conn, Scope(target, database))

    def unfinished_runs(self) -> list[Run]:
        """Runs left PENDING or RUNNING, i.e. by a process that died."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(runs).where(
                runs.c.status.in_([RunStatus.PENDING.value, RunStatus.RUNNING.value]))).all()
            return _runs(conn, rows)

    def present_runs(self, backup_dir: str | None = None) -> list[Run]:
        """Succeeded runs whose file should be on disk."""
        query = select(runs).where(runs.c.present.is_(True))
        if backup_dir is not None:
            query = query.where(runs.c.backup_dir == backup_dir)
        with self.engine.connect() as conn:
            return _runs(conn, conn.execute(query).all())

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
            return None if row is None else _runs(conn, [row])[0]

    def stats(self, backup_directory: str, *, target: str = "", database: str = "") -> Stats:
        """Totals from the derived tables; nothing here scans the runs."""
        with reading(self.engine) as conn:
            return totals.stats(conn, backup_directory, Scope(target, database))
