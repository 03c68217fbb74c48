"""Executes one backup run: checks the directory, asks the server its version,
picks a pg_dump, plans and dumps, and records every step on the run.

A run always ends recorded: SUCCEEDED with its file, size and SHA-256, or FAILED
with the reason (logged and sent to the event listeners), whatever went wrong.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import NoReturn

import structlog

from ..domain.errors import BackupError, BackupFailed, Unavailable
from ..domain.models import CreateResult, Run, RunKind
from ..domain.ports import Clock, Listener, RunStore
from ..domain.targets import Targets
from ..postgres import binaries as pg_binaries
from ..postgres.binaries import PgBinary
from ..postgres.server import query_server
from ..settings import Settings
from . import files, naming
from .cleanup import Cleaner
from .dump import DumpOutcome, DumpProcess
from .jobs import Job
from .pipeline import Extras
from .plan import DumpPlan, plan_dump, wanted_capability
from .progress import ProgressTracker

log = structlog.get_logger("pgbackup")
# (run, plan, file stem) -> more sinks and stages for the run (see backup.pipeline).
ExtraOutputs = Callable[[Run, DumpPlan, str], Extras | None]
SHUTDOWN_CANCELLED = "cancelled: the service shut down (server.shutdownGrace expired)"


class RunExecutor:
    """Runs jobs; :meth:`cancel_all` stops the ones running (at shutdown)."""

    def __init__(self, settings: Settings, store: RunStore, events: Listener, *,
                 targets: Targets, binaries: list[PgBinary], runtime_dir: Path, clock: Clock,
                 tracker: ProgressTracker, cleaner: Cleaner) -> None:
        self.settings = settings
        self.store = store
        self.events = events
        self.targets = targets
        self.binaries = binaries
        self.runtime_dir = runtime_dir
        self.clock = clock
        self.tracker = tracker
        self.cleaner = cleaner
        self._lock = threading.Lock()
        self._active: dict[int, DumpProcess] = {}
        self._cancelling = False
        self.extra_outputs: ExtraOutputs | None = None
        from ..physical.runner import PhysicalRunner  # physical/ builds on backup/

        self.physical = PhysicalRunner(settings, store, events, targets=targets,
                                       binaries=binaries, runtime_dir=runtime_dir, clock=clock,
                                       tracker=tracker)

    def cancel_all(self) -> None:
        """Stop every running dump; a run not yet at pg_dump fails instead of starting."""
        with self._lock:
            self._cancelling = True
            active = list(self._active.values())
        for dump in active:
            dump.stop(SHUTDOWN_CANCELLED)
        self.physical.cancel_all(SHUTDOWN_CANCELLED)

    def execute(self, run: Run, job: Job) -> CreateResult:
        """Run ``job`` for the recorded ``run``; raise its error after recording it."""
        bound = log.bind(run_id=run.id, database=run.database)
        started = self.clock()
        bound.info("Database backup job started", backup_dir=str(job.directory))
        changes: dict[str, object] = {}
        try:
            files.prepare_backup_dir(job.directory, job.dir_field, requested=job.requested)
            if run.kind.physical:
                made = self.physical.produce(run, job, started)
                outcome = DumpOutcome(made.outcome.path, made.outcome.size_bytes,
                                      made.outcome.sha256, made.outcome.size_bytes,
                                      made.stored)
                changes = made.changes
            else:
                outcome = self._dump(run, job, started, bound)
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
            self.tracker.forget(run.id)
        finished = self.clock()
        done = self.store.mark_succeeded(run.id, finished_at=finished,
                                         file_path=str(outcome.path),
                                         size_bytes=outcome.size_bytes, sha256=outcome.sha256,
                                         bytes_written=outcome.bytes_in, **changes)
        bound.info("Database backup completed successfully", file_path=str(outcome.path),
                   size_bytes=outcome.size_bytes,
                   duration_seconds=round((finished - started).total_seconds(), 3))
        self.events.on_run_finished(done)
        deleted = 0
        if job.cleanup_old:  # only after a success: a failure never triggers cleanup
            try:
                deleted = self.cleaner.cleanup_dir(job.directory, job.retention_days,
                                                   dry_run=False).deleted_files
            except Exception:  # cleanup must never turn a good backup into an error
                bound.exception("Cleanup after backup failed")
        return CreateResult(done, deleted)

    def _dump(self, run: Run, job: Job, started: datetime,
              bound: structlog.typing.FilteringBoundLogger) -> DumpOutcome:
        """pg_dump (pg_dumpall for globals) of a logical run."""
        b = self.settings.backup
        conninfo = self.targets.conninfo(job.target.name, job.dbname)
        server = query_server(conninfo)
        binary = pg_binaries.choose(self.binaries, server.major, server.version,
                                    wanted_capability(b.format, b.compression,
                                                      b.compress_backup))
        plan = plan_dump(binary, format=b.format, compression=b.compression,
                         compress_backup=b.compress_backup,
                         supports=pg_binaries.supports_compression, jobs=b.jobs)
        globals_only = run.kind is RunKind.GLOBALS
        if globals_only:
            plan = plan.for_globals()
        # The run's database names the file; globals_<target> for the globals.
        name = job.target.name if globals_only else run.database
        stem = naming.stem(run.kind, name, started, self.settings.scheduler.tz)
        extras = self.extra_outputs(run, plan, stem) if self.extra_outputs else None
        ext = plan.extension + (extras.suffix if extras else "")
        temp = naming.free_temp_path(job.directory, f"{stem}{ext}", run.id)
        dump = DumpProcess(plan, conninfo, str(self.runtime_dir))
        try:
            with self._lock:
                if self._cancelling:
                    raise Unavailable(SHUTDOWN_CANCELLED)
                self._active[run.id] = dump
            running = self.store.mark_running(
                run.id, started_at=started, temp_path=str(temp), format=plan.format,
                compression=plan.compression, pg_dump_version=binary.version,
                server_version=server.version)
            self.events.on_run_started(running)
        except BaseException as exc:
            if extras:  # dump.run owns them from here on
                extras.abort(str(exc))
            raise
        bound.debug("pg_dump starting", pg_dump=binary.path, pg_dump_version=binary.version,
                    server_version=server.version, format=plan.format,
                    compression=str(plan.compression))
        return dump.run(job.directory, stem, run.id, b.timeout_seconds,
                        on_progress=self.tracker.recorder(run.id, server.database_size),
                        temp=temp, extras=extras)

    def _fail(self, run: Run, started: datetime, exc: BackupError,
              bound: structlog.typing.FilteringBoundLogger) -> NoReturn:
        """Record the failure on the run, log it, and raise it for the caller."""
        failed = self.store.mark_failed(run.id, finished_at=self.clock(), error=exc.message,
                                        started_at=started)
        bound.error("Database backup failed", error=exc.message)
        self.events.on_run_finished(failed)
        raise exc.prefixed(f"backup {run.id} failed: ")
