"""The restore service: verification, restore and contents of recorded backups.

It checks requests, decides how each restore goes (a new database, an empty
one, a staging database swapped in, or objects replaced in place), records
every restore as a run of its own, tracks the databases it creates so a crash
leaves none behind, and settles what a previous process left.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import structlog

from ..domain.errors import (
    BackupError,
    FailedPrecondition,
    InvalidArgument,
    RestoreFailed,
    Unavailable,
)
from ..domain.models import FileState, Run
from ..domain.ports import Clock, Destination, Listener, RestoreStore, RunStore
from ..domain.targets import Targets
from ..postgres.binaries import PgBinary
from ..postgres.conninfo import ConnInfo
from ..settings import Settings
from .admission import Admission, succeeded_backup
from .contents import backup_contents
from .databases import create_database, drop_database, rename_database
from .models import (
    BackupContents,
    Corrupt,
    RestorePage,
    RestoreRun,
    TableRows,
    ToolFailed,
    VerifyResult,
)
from .plan import Plan, plan_restore
from .source import Source
from .tools import ToolRunner
from .validation import (
    check_database_name,
    check_jobs,
    check_selection,
    refuse_globals,
    refuse_risky,
)
from .verify import check_before_load, checksum_failed, deep_check, digest_alongside, quick_verify

log = structlog.get_logger("pgbackup")


class RestoreService:
    """Verification, restore and contents of recorded backups. Thread-safe."""

    def __init__(self, config: Settings, store: RunStore, restores: RestoreStore,
                 events: Listener, *, targets: Targets, binaries: list[PgBinary],
                 runtime_dir: Path, clock: Clock,
                 destinations: Mapping[str, Destination] | None = None,
                 address: Callable[[], str] = lambda: "") -> None:
        self.config = config
        self.store = store
        self.restores = restores
        self.events = events
        self.targets = targets
        self.binaries = binaries
        self.runtime_dir = runtime_dir
        self.clock = clock
        self.admission = Admission(config.backup.max_concurrent)
        self._lock = threading.Lock()  # the tools' children
        self.tools = ToolRunner(binaries, runtime_dir, self._lock)
        self.source = Source(config, destinations or {}, runtime_dir)
        from ..physical.restore import PhysicalRestorer  # physical/ builds on restore/

        self.physical = PhysicalRestorer(config, store, binaries=binaries, address=address,
                                         destinations=destinations, restores=restores,
                                         admission=self.admission, clock=clock)

    def _server(self, run: Run) -> ConnInfo:
        """Connection parameters of the server a run's database is on; ``dbname`` is
        the configured one (it exists), used for CREATE/DROP DATABASE."""
        try:
            return self.targets.conninfo(run.target or run.database)
        except (KeyError, BackupError):
            raise FailedPrecondition(f"backup {run.id} was made for target "
                                     f"{run.target or run.database!r}, which is no longer "
                                     "configured; its server is unknown") from None

    # -- lifecycle ----------------------------------------------------------

    def recover(self) -> None:
        """Settle what a previous process left: restores it did not finish are FAILED
        "interrupted", and the databases it created for them are dropped."""
        now = self.clock()
        for r in self.restores.unfinished():
            self.restores.mark_failed(r.id, finished_at=now,
                                      error="interrupted: the service stopped during this "
                                            "restore")
            log.warning("Restore interrupted by a service stop", restore_id=r.id,
                        backup_id=r.backup_id, target_database=r.target_database)
        for name, target in self.restores.scratch_databases():
            try:
                drop_database(self.targets.conninfo(target), name)
                self.restores.remove_scratch(name)
            except (BackupError, ToolFailed, KeyError) as exc:
                log.error("Cannot drop a database left by an interrupted restore",
                          database=name, error=_message(exc))

    def shutdown(self, grace_seconds: float) -> None:
        """Refuse new work, give running restores ``grace_seconds``, then cancel them."""
        self.admission.close()
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            with self._lock:
                running = bool(self.tools.procs)
            if not running and self.admission.idle():
                break
            time.sleep(0.05)
        self.tools.cancel()
        self.admission.shutdown()
        now = self.clock()
        for r in self.restores.unfinished(everyone=False):  # a peer's go on there
            self.restores.mark_failed(r.id, finished_at=now,
                                      error="cancelled: the service shut down")

    # -- verification -------------------------------------------------------

    def verify(self, run_id: int, *, deep: bool = False, identity: str = "") -> VerifyResult:
        """Check a backup and record the outcome on it: a corrupt, truncated or missing
        file is a FAILED result, not an error. Encrypted: ``identity`` for deep only."""
        run = succeeded_backup(self.store, run_id, "verified")
        if run.kind.physical:  # refused before anything runs
            self.physical.check_identity(run, identity, quick=not deep)
        elif deep:
            self.source.identities(run, identity)
        self.admission.admit()
        started, t0 = self.clock(), time.monotonic()
        tables: tuple[TableRows, ...] = ()
        try:
            if run.kind.physical:
                tables = self.physical.verify(run, deep=deep, identity=identity)
            else:
                quick_verify(run, self.source, self.tools)
                if deep:
                    with self.source.staged(run, identity) as local:
                        tables = self._deep(local)
            ok, reason = True, ""
        except Corrupt as exc:
            ok, reason = False, exc.reason
        except ToolFailed as exc:  # not the backup's fault (e.g. CREATE DATABASE failed)
            raise RestoreFailed(f"verification of backup {run.id} could not run: "
                                f"{exc.reason}") from None
        finished = self.clock()
        self.store.set_verification(run.id, ok=ok, reason=reason, verified_at=finished)
        gone = not (self.physical.files.stored(run) if run.kind.physical else
                    self.source.local_file(run) or self.source.remote_copies(run))
        if not ok and gone:
            self.store.set_file_state([run.id], FileState.MISSING)
        result = VerifyResult(run.id, ok, reason, deep, finished, tables,
                              round(time.monotonic() - t0, 3))
        bound = log.bind(run_id=run.id, deep=deep,
                         duration_seconds=round((finished - started).total_seconds(), 3))
        if ok:
            bound.info("Backup verified", tables=len(tables))
        else:
            bound.error("Backup verification failed", reason=reason)
        self.events.on_verification(self.store.get(run.id), ok, reason)
        return result

    def verify_in_background(self, run_id: int, *, deep: bool = False
                             ) -> Future[VerifyResult] | None:
        """Queue a verification (after a scheduled backup); None when shutting down."""
        future = self.admission.submit(self.verify, run_id, deep=deep)
        if future is None:
            return None

        def report(f: Future[VerifyResult]) -> None:
            exc = f.exception() if not f.cancelled() else None
            if exc is not None:
                log.error("Verification after backup could not run", run_id=run_id,
                          error=_message(exc))

        future.add_done_callback(report)
        return future

    def _deep(self, run: Run) -> tuple[TableRows, ...]:
        """Restore into a scratch database, count every table's rows, drop it."""
        refuse_globals(run, "deep-verified")
        server = self._server(run)
        scratch = f"pgbackup_verify_{run.id}_{secrets.token_hex(4)}"
        self.restores.add_scratch(scratch, purpose="verify", target=run.target,
                                  created_at=self.clock())
        try:
            return deep_check(self.tools, server, run, scratch)
        finally:
            self._drop_scratch(server, scratch)

    # -- restore ------------------------------------------------------------

    def restore(self, run_id: int, *, target_database: str = "", overwrite: bool = False,
                schemas: Iterable[str] = (), tables: Iterable[str] = (), jobs: int = 0,
                requested_by: str = "", background: bool = False,
                force: bool = False, identity: str = "", target_directory: str = "",
                target_time: datetime | None = None, target_lsn: str = "",
                tablespace_mapping: Iterable[str] = ()) -> RestoreRun:
        """Restore a backup, whole or ``schemas``/``tables`` only, into
        ``target_database`` (default: a new database named after the backup).
        Overwriting ``postgres`` or the backup's own source database needs ``force``.
        A physical backup is rebuilt into ``target_directory`` instead, rolled forward
        to ``target_time`` or ``target_lsn`` when given, its tablespaces where
        ``tablespace_mapping`` ("OLDDIR=NEWDIR") says."""
        if target_directory or target_time is not None or target_lsn or \
                tablespace_mapping or (run_id > 0 and self.store.get(run_id).kind.physical):
            return self._restore_physical(run_id, target_directory, target_time, target_lsn,
                                          requested_by, background, identity,
                                          tuple(tablespace_mapping))
        if target_database:
            check_database_name(target_database)
        schema_list = check_selection(schemas, "schemas")
        table_list = check_selection(tables, "tables")
        check_jobs(jobs)
        run = succeeded_backup(self.store, run_id, "restored")
        refuse_globals(run, "restored")
        if run.format == "plain" and jobs > 1:
            raise InvalidArgument(f"jobs: backup {run.id} is plain SQL, which psql restores "
                                  "in one session; parallel jobs need a custom or "
                                  "directory format backup")
        if overwrite and not force:
            refuse_risky(self.targets, run, target_database, bool(schema_list or table_list))
        self.source.identities(run, identity)  # refused before anything runs
        self.admission.admit()
        self._require_file(run)
        stack = ExitStack()
        try:
            run, stream = self.source.prepare(run, identity, stack,
                                              whole=not (schema_list or table_list))
            plan = plan_restore(run, self._server(run), target_database=target_database,
                                overwrite=overwrite, schemas=schema_list, tables=table_list,
                                jobs=jobs)
            busy = plan.busy_key
            self.admission.claim(busy, f'database "{plan.target}"')
        except BaseException:
            stack.close()
            raise
        try:
            record = self.restores.create(
                backup_id=run.id, target_database=plan.target,
                requested_by=requested_by[:255], schemas=schema_list, tables=table_list,
                jobs=jobs, overwrite=overwrite, started_at=self.clock())
            self.admission.bind(busy, record.id)
            log.info("Restore started", restore_id=record.id, backup_id=run.id,
                     target_database=plan.target, mode=plan.mode, requested_by=requested_by,
                     schemas=list(schema_list), tables=list(table_list))
            if background:
                if self.admission.submit(self._execute, record, run, plan, stream,
                                         stack) is None:
                    self.restores.mark_failed(record.id, finished_at=self.clock(),
                                              error="cancelled: the service shut down")
                    raise Unavailable("the service is shutting down; retry on the next "
                                      "instance")
                return record
        except BaseException:
            self.admission.release(busy)
            stack.close()
            raise
        return self._execute(record, run, plan, stream, stack)

    def _restore_physical(self, run_id: int, target_directory: str,
                          target_time: datetime | None, target_lsn: str, requested_by: str,
                          background: bool, identity: str = "",
                          tablespace_mapping: tuple[str, ...] = ()) -> RestoreRun:
        """A physical backup's chain rebuilt into a directory (physical/restore.py)."""
        return self.physical.restore_request(run_id, target_directory, target_time,
                                             target_lsn, requested_by, background, identity,
                                             tablespace_mapping)

    def _execute(self, record: RestoreRun, run: Run, plan: Plan,
                 stream: Callable[[], Iterable[bytes]] | None = None,
                 stack: ExitStack | None = None) -> RestoreRun:
        """``stream``: a whole plain backup read from a copy; ``stack``: a staged file."""
        bound = log.bind(restore_id=record.id, backup_id=run.id, target_database=plan.target)
        server = plan.server
        created: str | None = None
        try:
            try:
                check_before_load(run, plan, streamed=stream is not None)
            except Corrupt as exc:
                raise checksum_failed(self.store, self.events, self.clock, run, exc) from None
            load_into = plan.target
            if plan.mode == "swap":
                load_into = f"pgbackup_restore_{record.id}_{secrets.token_hex(4)}"
            if plan.mode in ("new", "swap"):
                self.restores.add_scratch(load_into, purpose="restore", target=run.target,
                                          created_at=self.clock())
                created = load_into
                create_database(server, load_into)
            # Into an existing database a partial restore is one transaction, so a failure
            # leaves it as it was; pg_restore cannot combine that with parallel jobs.
            atomic = plan.mode in ("into", "replace") and plan.selection is not None
            with digest_alongside(run, plan, self.store, self.events, self.clock,
                                  streamed=stream is not None):
                self.tools.load(server, run, load_into, jobs=0 if atomic else plan.jobs,
                                selection=plan.selection, clean=plan.mode == "replace",
                                single_transaction=atomic, toc=plan.toc,
                                raw=stream() if stream is not None else None)
            if plan.mode == "swap":
                drop_database(server, plan.target)
                # From here the staging database is the only copy: never drop it, not
                # even at the next start.
                self.restores.remove_scratch(load_into)
                created = None
                rename_database(server, load_into, plan.target)
            if created is not None:
                self.restores.remove_scratch(created)
                created = None
        except (ToolFailed, Corrupt, BackupError) as exc:
            reason = exc.message if isinstance(exc, BackupError) else exc.reason
            self._fail(record, run, reason, server, created, bound)
        except Exception as exc:  # a bug or an unexpected OS error: still record the restore
            bound.exception("Restore crashed")
            self._fail(record, run, f"internal error: {exc}", server, created, bound)
        finally:
            self.admission.release(plan.busy_key)
            if stack is not None:
                stack.close()
        self.restores.mark_succeeded(record.id, finished_at=self.clock())
        done = self.restores.get(record.id)
        bound.info("Restore completed successfully", duration_seconds=done.duration_seconds)
        return done

    def _fail(self, record: RestoreRun, run: Run, reason: str, server: ConnInfo,
              created: str | None, bound: Any) -> NoReturn:
        if created is not None:
            self._drop_scratch(server, created)
        self.restores.mark_failed(record.id, finished_at=self.clock(), error=reason)
        bound.error("Restore failed", error=reason)
        raise RestoreFailed(f"restore {record.id} of backup {run.id} failed: {reason}")

    def get_restore(self, restore_id: int) -> RestoreRun:
        if restore_id < 1:
            raise InvalidArgument(f"id: must be a positive restore id, got {restore_id}")
        return self.restores.get(restore_id)

    def list_restores(self, *, backup_id: int = 0, page_size: int = 0,
                      page_token: str = "") -> RestorePage:
        """Restores newest first, optionally of one backup (which must exist)."""
        if backup_id < 0 or (backup_id and not self.store.get(backup_id)):  # else NOT_FOUND
            raise InvalidArgument(f"backup_id: must be a backup id (0: all), got {backup_id}")
        return self.restores.restore_page(backup_id=backup_id, page_size=page_size,
                                          page_token=page_token)

    # -- contents -----------------------------------------------------------

    def contents(self, run_id: int, *, identity: str = "") -> BackupContents:
        """Schemas, tables and other objects in a backup, with each table's data size."""
        run = succeeded_backup(self.store, run_id, "listed")
        self.physical.refuse_contents(run)
        self.source.identities(run, identity)
        self._require_file(run)
        try:
            with self.source.staged(run, identity) as local:
                return backup_contents(local)
        except Corrupt as exc:
            raise FailedPrecondition(f"backup {run.id} cannot be read: {exc.reason}") from None

    # -- helpers ------------------------------------------------------------

    def _require_file(self, run: Run) -> None:
        """A backup with neither its file nor a copy at a destination is marked missing."""
        if not self.source.local_file(run) and self.source.remote_copy(run) is None:
            self.store.set_file_state([run.id], FileState.MISSING)
        self.source.require(run)

    def _drop_scratch(self, server: ConnInfo, name: str) -> None:
        """Drop a database this service created; keep it registered (for the next
        start) only if dropping fails."""
        try:
            drop_database(server, name)
        except (BackupError, ToolFailed) as exc:
            log.error("Cannot drop scratch database; will retry at the next start",
                      database=name, error=_message(exc))
            return
        self.restores.remove_scratch(name)


def _message(exc: BaseException) -> str:
    return getattr(exc, "message", str(exc))
