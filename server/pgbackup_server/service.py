"""The backup service: the domain operations behind every RPC and schedule.

It owns the run lifecycle (PENDING -> RUNNING -> SUCCEEDED | FAILED), the
concurrency limit and queue, crash recovery and statistics; retention is applied
by :mod:`.cleanup` and progress tracked by :mod:`.progress`. It knows nothing of
gRPC, protobuf or SQLAlchemy.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import NoReturn, Protocol

import structlog

from . import files, pgtools
from .cleanup import Cleaner
from .config import Config, TargetConfig
from .errors import (
    BackupError,
    BackupFailed,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from .events import EventHub
from .models import (
    CleanupResult,
    FileState,
    Progress,
    Run,
    RunPage,
    RunStatus,
    ScheduleInfo,
    Stats,
    Trigger,
)
from .progress import ProgressTracker
from .runner import DumpProcess, needed_capability, plan_dump

log = structlog.get_logger("pgbackup")

Clock = Callable[[], datetime]

SHUTDOWN_CANCELLED = "cancelled: the service shut down (server.shutdownGrace expired)"
NOT_STARTED = "cancelled: the service shut down before this run started"


def utc_now() -> datetime:
    return datetime.now(UTC)


class RunStore(Protocol):
    """What the service needs from the store (see store.SqlRunStore)."""

    def create_run(self, *, database: str, trigger: Trigger, backup_dir: str,
                   queued_at: datetime, schedule: str = "", target: str = "") -> Run: ...
    def mark_running(self, run_id: int, *, started_at: datetime, temp_path: str, format: str,
                     compression: str, pg_dump_version: str, server_version: str) -> None: ...
    def mark_succeeded(self, run_id: int, *, finished_at: datetime, file_path: str,
                       size_bytes: int, sha256: str, bytes_written: int = 0) -> None: ...
    def set_progress(self, run_id: int, *, bytes_written: int,
                     estimated_total_bytes: int) -> None: ...
    def set_verification(self, run_id: int, *, ok: bool, reason: str,
                         verified_at: datetime) -> None: ...
    def mark_failed(self, run_id: int, *, finished_at: datetime, error: str,
                    started_at: datetime | None = None) -> None: ...
    def set_file_state(self, run_ids: list[int], state: FileState) -> None: ...
    def get(self, run_id: int) -> Run: ...
    def list_runs(self, *, database: str = "", status: RunStatus | None = None,
                  page_size: int = 0, page_token: str = "", target: str = "") -> RunPage: ...
    def has_database(self, database: str) -> bool: ...
    def unfinished_runs(self) -> list[Run]: ...
    def present_runs(self, backup_dir: str | None = None) -> list[Run]: ...
    def latest_status_by_database(self,
                                  backup_dir: str) -> dict[tuple[str, str], RunStatus]: ...
    def last_scheduled_run(self, schedule: str) -> Run | None: ...
    def backup_dirs(self) -> list[str]: ...
    def stats(self, backup_directory: str, database: str = "", target: str = "") -> Stats: ...


@dataclass(frozen=True, slots=True)
class CreateResult:
    run: Run
    deleted_files: int = 0
    runs: tuple[Run, ...] = ()  # every run of the request (allDatabases: one per database)


@dataclass(frozen=True, slots=True)
class _Job:
    directory: Path
    retention_days: int
    cleanup_old: bool
    target: TargetConfig
    database: str  # the run's database: the target's name, <target>.<db>, <target>-globals
    dbname: str = ""  # the PostgreSQL database dumped (empty: the one in the target's URL)
    globals_only: bool = False
    dir_field: str = "backup.directory"  # what names the directory in errors
    requested: bool = False  # the caller gave the directory (create-custom)


class BackupService:
    """Domain operations. Thread-safe; one instance per process."""

    def __init__(self, config: Config, store: RunStore, *,
                 binaries: list[pgtools.PgBinary], runtime_dir: Path,
                 clock: Clock = utc_now) -> None:
        self.config = config
        self.store = store
        self.binaries = binaries
        self.runtime_dir = runtime_dir
        self.clock = clock
        self.schedules_provider: Callable[[], list[ScheduleInfo]] = list
        self.events = EventHub()
        self.targets = {t.name: t for t in config.targets}
        self._conninfo_by_target = {t.name: _conninfo(t.database.url) for t in config.targets}
        servers = {_server_key(c) for c in self._conninfo_by_target.values()}
        # backup.maxConcurrent is per database server: one worker pool per server, so a
        # busy server's queue never holds up another server's backups.
        self._pools = {key: ThreadPoolExecutor(max_workers=config.backup.max_concurrent,
                                               thread_name_prefix=f"backup-{key[0]}:{key[1]}")
                       for key in servers}
        self._lock = threading.Lock()
        self._admitted: dict[tuple[str, str], int] = {key: 0 for key in servers}
        self._active: dict[int, DumpProcess] = {}
        self._futures: dict[int, Future[CreateResult]] = {}
        self._tracker = ProgressTracker(store, clock)
        self._cleaner = Cleaner(config.backup, store, self.targets, self.events, clock)
        self._closing = False
        self._cancelling = False

    # -- lifecycle ----------------------------------------------------------

    def recover(self) -> None:
        """Settle what a previous process left: runs it did not finish are FAILED
        "interrupted" and their temporary files removed; orphan temporary files
        in every allowed directory are removed; vanished files are marked missing."""
        now = self.clock()
        for run in self.store.unfinished_runs():
            # Record first: a cleanup problem must never keep the run unrecorded.
            self.store.mark_failed(run.id, finished_at=now,
                                   error="interrupted: the service stopped during this run")
            log.warning("Backup run interrupted by a service stop", run_id=run.id,
                        database=run.database)
            if (run.temp_path and files.TEMP_NAME.match(Path(run.temp_path).name)
                    and files.remove_temp(Path(run.temp_path))):
                log.info("Removed temporary file left by a crash", run_id=run.id,
                         file_path=run.temp_path)
            self.events.on_run_finished(self.store.get(run.id))
        for stale in self.runtime_dir.glob("pgpass-*"):  # left by a SIGKILL: hold a password
            files.remove_quietly(stale)
        directories = {*self.config.backup.allowed_directories,
                       *(Path(d) for d in self.store.backup_dirs())}
        for directory in sorted(directories):
            for path in files.remove_orphan_temps(directory):
                log.info("Removed temporary file left by a crash", file_path=str(path))
        self.reconcile()

    def reconcile(self, backup_dir: str | None = None) -> int:
        """Mark backups whose file disappeared from disk as missing (see Cleaner.reconcile)."""
        return self._cleaner.reconcile(backup_dir)

    def shutdown(self, grace_seconds: float) -> None:
        """Stop admitting runs, give running ones ``grace_seconds``, then cancel them."""
        with self._lock:
            self._closing = True
            futures = list(self._futures.values())
        for f in futures:
            f.cancel()  # queued runs do not start during the grace; running ones go on
        # wait() counts a cancelled future as done (Future.exception() raises on one).
        wait_futures(futures, timeout=grace_seconds)
        with self._lock:
            # From here a run that had not reached pg_dump yet fails instead of starting it.
            self._cancelling = True
            active = list(self._active.values())
        for dump in active:
            dump.stop(SHUTDOWN_CANCELLED)
        for pool in self._pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
        now = self.clock()
        for run in self.store.unfinished_runs():
            self.store.mark_failed(run.id, finished_at=now, error=NOT_STARTED)
            self.events.on_run_finished(self.store.get(run.id))

    # -- backups ------------------------------------------------------------

    def target(self, name: str = "") -> TargetConfig:
        """The configured target called ``name`` (empty: the first one). A name that is
        no target's but the PostgreSQL database of exactly one single-database target
        means that target."""
        if not name:
            return self.config.targets[0]
        if name in self.targets:
            return self.targets[name]
        files.refuse_control_characters("database", name)
        by_dbname = [t for t in self.config.targets
                     if not t.all_databases and t.database.dbname == name]
        if len(by_dbname) == 1:
            return by_dbname[0]
        raise InvalidArgument(f"database: unknown target {name!r}; configured: "
                              f"{', '.join(self.targets)}")

    def conninfo_for(self, target: str, database: str = "") -> dict[str, str]:
        """libpq parameters for ``database`` on ``target``'s server (password included:
        pass it on only through runner.child_env)."""
        params = dict(self._conninfo_by_target[self.target(target).name])
        if database:
            params["dbname"] = database
        return params

    def create_backup(self, *, database: str = "", background: bool = False,
                      trigger: Trigger = Trigger.MANUAL, schedule: str = "") -> CreateResult:
        """Back up a configured target (default: the first) into the configured directory."""
        b = self.config.backup
        target = self.target(database)
        retention = target.retention_days or b.retention_days
        if trigger is Trigger.MANUAL:
            # Refused before any run exists: a request that cannot run is not a failed
            # backup. A scheduled fire is recorded as FAILED instead, never silent.
            files.prepare_backup_dir(b.directory, "backup.directory", requested=False)
        jobs = self._jobs_or_failed_run(target, b.directory, retention, b.cleanup_old,
                                        trigger, schedule)
        return self._submit(jobs, trigger=trigger, schedule=schedule, background=background)

    def _jobs_or_failed_run(self, target: TargetConfig, directory: Path, retention: int,
                            cleanup_old: bool, trigger: Trigger, schedule: str,
                            dir_field: str = "backup.directory") -> list[_Job]:
        """The jobs of a request; when even discovering them fails (allDatabases on an
        unreachable server), record a FAILED run so the failure is never silent."""
        try:
            return self._jobs_for(target, directory, retention, cleanup_old, dir_field)
        except BackupError as exc:
            now = self.clock()
            run = self.store.create_run(database=f"{target.name}-globals", trigger=trigger,
                                        backup_dir=str(directory), queued_at=now,
                                        schedule=schedule, target=target.name)
            self.store.mark_failed(run.id, finished_at=now, error=exc.message, started_at=now)
            log.error("Database backup failed", run_id=run.id, database=run.database,
                      error=exc.message)
            self.events.on_run_finished(self.store.get(run.id))
            exc.message = f"backup {run.id} failed: {exc.message}"
            exc.args = (exc.message,)
            raise

    def create_custom_backup(self, backup_dir: str, *, retention_days: int = 0,
                             cleanup_old: bool = False, background: bool = False,
                             database: str = "") -> CreateResult:
        """Back up into ``backup_dir`` (inside an allowed root) with its own retention."""
        if not 0 <= retention_days <= 36500:
            raise InvalidArgument(f"retention_days: must be between 1 and 36500 days (0 uses "
                                  f"backup.retentionDays), got {retention_days}")
        directory = files.confine(backup_dir, self.config.backup.allowed_directories)
        target = self.target(database)
        retention = retention_days or target.retention_days or self.config.backup.retention_days
        files.prepare_backup_dir(directory, "backup_dir", requested=True)
        jobs = self._jobs_or_failed_run(target, directory, retention, cleanup_old,
                                        Trigger.MANUAL, "", dir_field="backup_dir")
        return self._submit(jobs, trigger=Trigger.MANUAL, schedule="", background=background)

    def run_scheduled(self, schedule: str) -> None:
        """Entry point of a schedule fire; waits for the run(s) to finish."""
        entry = next((s for s in self.config.schedules if s.name == schedule), None)
        try:
            self.create_backup(database=entry.target if entry else "",
                               trigger=Trigger.SCHEDULE, schedule=schedule)
        except BackupError:
            pass  # recorded on the run(s), logged and notified

    def _jobs_for(self, target: TargetConfig, directory: Path, retention: int,
                  cleanup_old: bool, dir_field: str) -> list[_Job]:
        """One job per database: the runs are named after the configured target (its
        name is the identity the operator chose), ``<target>.<db>`` for each database
        an allDatabases target finds, ``<target>-globals`` for its globals."""
        job = partial(_Job, directory, retention, cleanup_old, target, dir_field=dir_field,
                      requested=dir_field == "backup_dir")
        if not target.all_databases:
            return [job(target.name)]
        # Discovered at each run, so new databases are picked up without a restart.
        names = pgtools.list_databases(self._conninfo_by_target[target.name])
        jobs = [job(f"{target.name}.{name}", dbname=name) for name in names]
        jobs.append(job(f"{target.name}-globals", globals_only=True))
        return jobs

    def _submit(self, jobs: list[_Job], *, trigger: Trigger, schedule: str,
                background: bool) -> CreateResult:
        b = self.config.backup
        key = _server_key(self._conninfo_by_target[jobs[0].target.name])
        with self._lock:
            if self._closing:
                raise Unavailable("the service is shutting down; retry on the next instance")
            limit = b.max_concurrent + b.max_queued
            # Schedules are never turned away: a skipped scheduled backup is silent loss.
            # A request larger than the queue (allDatabases) is admitted when idle.
            if (trigger is Trigger.MANUAL and self._admitted[key]
                    and self._admitted[key] + len(jobs) > limit):
                raise ResourceExhausted(
                    f"backup queue is full: {b.max_concurrent} running and {b.max_queued} "
                    f"queued for {key[0]}:{key[1]} (backup.maxConcurrent, "
                    "backup.maxQueued); retry later")
            self._admitted[key] += len(jobs)
        futures: list[Future[CreateResult]] = []
        runs: list[Run] = []
        try:
            for job in jobs:
                run = self.store.create_run(database=job.database, trigger=trigger,
                                            backup_dir=str(job.directory),
                                            queued_at=self.clock(), schedule=schedule,
                                            target=job.target.name)
                log.info("Database backup job queued", run_id=run.id, database=run.database,
                         trigger=trigger.value)
                try:
                    future = self._pools[key].submit(self._execute, run, job)
                except RuntimeError:  # the pool shut down after the _closing check
                    self.store.mark_failed(run.id, finished_at=self.clock(),
                                           error="cancelled: the service is shutting down")
                    raise Unavailable("the service is shutting down; retry on the next "
                                      "instance") from None
                with self._lock:
                    self._futures[run.id] = future
                future.add_done_callback(partial(self._forget, run.id, key))
                futures.append(future)
                runs.append(run)
        except BaseException:
            with self._lock:
                self._admitted[key] -= len(jobs) - len(futures)
            raise
        if background:
            return CreateResult(self.store.get(runs[0].id),
                                runs=tuple(self.store.get(r.id) for r in runs))
        if len(futures) == 1:
            return _result(futures[0])
        return self._gather(futures)

    def _gather(self, futures: list[Future[CreateResult]]) -> CreateResult:
        """Wait for every run of a multi-database request; fail if any failed."""
        results: list[CreateResult] = []
        failures: list[BackupError] = []
        for future in futures:
            try:
                results.append(_result(future))
            except BackupError as exc:
                failures.append(exc)
        if failures:
            first = failures[0]
            first.message = (f"{len(failures)} of {len(futures)} runs failed; first: "
                             f"{first.message}")
            first.args = (first.message,)
            raise first
        return CreateResult(results[-1].run, sum(r.deleted_files for r in results),
                            tuple(r.run for r in results))

    def _forget(self, run_id: int, key: tuple[str, str], _future: object = None) -> None:
        with self._lock:
            self._admitted[key] -= 1
            self._futures.pop(run_id, None)

    def _execute(self, run: Run, job: _Job) -> CreateResult:
        bound = log.bind(run_id=run.id, database=run.database)
        conninfo = self.conninfo_for(job.target.name, job.dbname)
        if self._closing:  # queued before shutdown: left PENDING, recorded as cancelled
            raise Unavailable(NOT_STARTED)
        return self._dump(run, job, conninfo, self.clock(), bound)

    def _dump(self, run: Run, job: _Job, conninfo: dict[str, str], started: datetime,
              bound: structlog.typing.FilteringBoundLogger) -> CreateResult:
        b = self.config.backup
        bound.info("Database backup job started", backup_dir=str(job.directory))
        try:
            files.prepare_backup_dir(job.directory, job.dir_field, requested=job.requested)
            server = pgtools.query_server(conninfo)
            method = b.compression.method if b.compression else None
            wanted = needed_capability(b.format, method) or (
                "zstd" if b.compress_backup and method is None else None)
            binary = pgtools.choose(self.binaries, server.major, server.version, wanted)
            plan = plan_dump(binary, format=b.format, compression_method=method,
                             compression_level=b.compression.level if b.compression else 0,
                             compress_backup=b.compress_backup,
                             supports=pgtools.supports_compression, jobs=b.jobs)
            if job.globals_only:
                plan = plan.for_globals()
            stamp = started.astimezone(self.config.scheduler.tz).strftime("%Y-%m-%d_%H-%M-%S")
            kind = "globals" if job.globals_only else "backup"
            # The run's database names the file; globals_<target> for the globals.
            name = job.target.name if job.globals_only else run.database
            stem = f"{kind}_{files.safe_db_name(name)}_{stamp}"
            temp = files.free_temp_path(job.directory, f"{stem}{plan.extension}", run.id)
            dump = DumpProcess(plan, conninfo, str(self.runtime_dir))
            with self._lock:
                if self._cancelling:
                    raise Unavailable(SHUTDOWN_CANCELLED)
                self._active[run.id] = dump
            self.store.mark_running(
                run.id, started_at=started, temp_path=str(temp),
                format=plan.format, compression=plan.compression,
                pg_dump_version=binary.version, server_version=server.version)
            self.events.on_run_started(self.store.get(run.id))
            bound.debug("pg_dump starting", pg_dump=binary.path, pg_dump_version=binary.version,
                        server_version=server.version, format=plan.format,
                        compression=plan.compression)
            outcome = dump.run(job.directory, stem, run.id, b.timeout_seconds,
                               on_progress=self._tracker.recorder(run.id,
                                                                  server.database_size),
                               temp=temp)
        except BackupError as exc:
            self._fail(run, started, exc, bound)
        except OSError as exc:  # the file system changed under the run: no bug, no traceback
            where = f" ({exc.filename})" if exc.filename else ""
            self._fail(run, started, BackupFailed(f"file system error{where}: "
                                                  f"{exc.strerror or exc}"), bound)
        except Exception as exc:  # a bug: still record the run
            bound.exception("Backup crashed")
            self._fail(run, started, BackupFailed(f"internal error: {exc}"), bound)
        finally:
            with self._lock:
                self._active.pop(run.id, None)
            self._tracker.forget(run.id)
        finished = self.clock()
        self.store.mark_succeeded(run.id, finished_at=finished, file_path=str(outcome.path),
                                  size_bytes=outcome.size_bytes, sha256=outcome.sha256,
                                  bytes_written=outcome.bytes_in)
        bound.info("Database backup completed successfully", file_path=str(outcome.path),
                   size_bytes=outcome.size_bytes,
                   duration_seconds=round((finished - started).total_seconds(), 3))
        self.events.on_run_finished(self.store.get(run.id))
        deleted = 0
        if job.cleanup_old:  # only after a success: a failure never triggers cleanup
            try:
                deleted = self._cleanup_dir(job.directory, job.retention_days,
                                            dry_run=False).deleted_files
            except Exception:  # cleanup must never turn a good backup into an error
                bound.exception("Cleanup after backup failed")
        return CreateResult(self.store.get(run.id), deleted)

    def progress(self, run_id: int) -> tuple[int, int]:
        """(bytes produced so far, estimated total) of a running run; (0, 0) otherwise."""
        return self._tracker.current(run_id)

    def _fail(self, run: Run, started: datetime, exc: BackupError,
              bound: structlog.typing.FilteringBoundLogger) -> NoReturn:
        """Record the failure on the run, log it, and raise it for the caller."""
        self.store.mark_failed(run.id, finished_at=self.clock(), error=exc.message,
                               started_at=started)
        bound.error("Database backup failed", error=exc.message)
        self.events.on_run_finished(self.store.get(run.id))
        exc.message = f"backup {run.id} failed: {exc.message}"
        exc.args = (exc.message,)
        raise exc

    # -- retention ----------------------------------------------------------

    def cleanup(self, *, dry_run: bool = False) -> CleanupResult:
        """Apply retention to the configured directory now."""
        return self._cleaner.cleanup(dry_run=dry_run)

    def _cleanup_dir(self, directory: Path, retention_days: int, *, dry_run: bool,
                     per_target: bool = False) -> CleanupResult:
        """Retention for one directory (see Cleaner.cleanup_dir)."""
        return self._cleaner.cleanup_dir(directory, retention_days, dry_run=dry_run,
                                         per_target=per_target)

    # -- queries ------------------------------------------------------------

    def _scope(self, database: str) -> tuple[str, str]:
        """(target, database) selected by a ``database`` filter: a configured target's
        name selects all its runs (also those recorded under an older naming); any
        other value the runs with that database; a name that is neither is NOT_FOUND,
        never an empty answer that looks like "no backups"."""
        if not database:
            return "", ""
        if database in self.targets:
            return database, ""
        files.refuse_control_characters("database", database)
        if self.store.has_database(database):
            return "", database
        raise NotFound(f'database: no backups or target named "{database}"; configured: '
                       f"{', '.join(self.targets)}")

    def stats(self, database: str = "") -> Stats:
        target, database = self._scope(database)
        return self.store.stats(str(self.config.backup.directory), database, target=target)

    def list_backups(self, *, database: str = "", status: RunStatus | None = None,
                     page_size: int = 0, page_token: str = "") -> RunPage:
        target, database = self._scope(database)
        return self.store.list_runs(database=database, status=status, page_size=page_size,
                                    page_token=page_token, target=target)

    def get_backup(self, run_id: int) -> Run:
        if run_id < 1:
            raise InvalidArgument(f"id: must be a positive backup id, got {run_id}")
        run = self.store.get(run_id)
        if run.file_state is FileState.PRESENT and not os.path.lexists(run.file_path):
            self.store.set_file_state([run.id], FileState.MISSING)
            run = self.store.get(run_id)
        return run

    def watch(self, run_id: int, *, interval: float = 0.5,
              cancelled: Callable[[], bool] = lambda: False) -> Iterator[Progress]:
        """Progress snapshots of a run until it ends; the last one carries the run."""
        yield from self._tracker.watch(self.get_backup(run_id), interval=interval,
                                       cancelled=cancelled)

    def list_schedules(self) -> list[ScheduleInfo]:
        return self.schedules_provider()


def _result(future: Future[CreateResult]) -> CreateResult:
    """The run's result; a run cancelled by the shutdown before it started is UNAVAILABLE."""
    try:
        return future.result()
    except CancelledError:
        raise Unavailable(NOT_STARTED) from None


def _server_key(conninfo: dict[str, str]) -> tuple[str, str]:
    return conninfo.get("host", "") or conninfo.get("hostaddr", ""), conninfo.get("port", "")


def _conninfo(url: str) -> dict[str, str]:
    from psycopg.conninfo import conninfo_to_dict

    return {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
