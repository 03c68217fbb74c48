"""The backup service: the operations behind the backup RPCs and the schedules.

It turns requests into recorded runs (PENDING -> RUNNING -> SUCCEEDED | FAILED),
queued per database server (:mod:`.queue`) and executed (:mod:`.executor`);
retention (:mod:`.cleanup`), progress (:mod:`.progress`) and crash recovery
(:mod:`.recovery`) have modules of their own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import replace
from functools import partial
from pathlib import Path

import structlog

from ..domain.errors import BackupError, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from ..domain.models import (
    BackupType,
    CleanupResult,
    CreateResult,
    FileState,
    Progress,
    Run,
    RunKind,
    RunPage,
    RunStatus,
    Stats,
    TargetSummary,
    Trigger,
)
from ..domain.ports import Clock, CopyStore, Destination, Listener, RunStore
from ..domain.targets import Targets
from ..domain.validation import refuse_control_characters
from ..postgres.binaries import PgBinary
from ..settings import Settings, TargetConfig
from ..storage.registry import Destinations
from . import files
from .cleanup import Cleaner, Exclusive
from .copies import Copier, RetryPolicy, Secrets
from .copy_retention import CopyRetention
from .executor import RunExecutor
from .jobs import Job, jobs_for
from .progress import ProgressTracker
from .queue import NOT_STARTED, Queue, QueueFactory, RunQueue, gather
from .recovery import recover

log = structlog.get_logger("pgbackup")


class BackupService:
    """Domain operations. Thread-safe; one instance per process."""

    def __init__(self, settings: Settings, store: RunStore, events: Listener, *,
                 copies: CopyStore, binaries: list[PgBinary], runtime_dir: Path,
                 clock: Clock, destinations: Mapping[str, Destination] | None = None,
                 retry: RetryPolicy | None = None, queue_factory: QueueFactory | None = None,
                 exclusive: Exclusive | None = None) -> None:
        """``queue_factory`` and ``exclusive``: a cluster's queue, and its lock that keeps
        retention on one replica at a time (default: this process's own)."""
        self.settings = settings
        self.store = store
        self.events = events
        self.clock = clock
        self.runtime_dir = runtime_dir
        self.targets = Targets(settings.targets)
        self._schedule_types = {s.name: s.type for s in settings.schedules}
        if destinations is None:
            destinations = dict(Destinations.from_configs(settings.destinations,
                                                             settings.environment))
        self.copier = Copier(settings, store, copies, destinations, events, clock,
                             secrets=Secrets(v for c in settings.destinations
                                             for v in c.secret_options(os.environ).values()),
                             retry=retry)
        b = settings.backup
        self.queue: Queue = (queue_factory(self.targets, self._run) if queue_factory else
                             RunQueue(self.targets.servers(), max_concurrent=b.max_concurrent,
                                      max_queued=b.max_queued))
        self.tracker = ProgressTracker(store, clock)
        from ..physical.wal import WalArchives  # physical/ builds on backup/

        self.wal = WalArchives(settings, binaries, runtime_dir, clock, copier=self.copier)
        self.cleaner = Cleaner(settings, store, self.targets.by_name, events, clock,
                               CopyRetention(settings, store, copies, destinations, clock,
                                             self.copier.secrets.scrub),
                               exclusive=exclusive, wal=self.wal)
        self.executor = RunExecutor(settings, store, events, targets=self.targets,
                                    binaries=binaries, runtime_dir=runtime_dir, clock=clock,
                                    tracker=self.tracker, cleaner=self.cleaner,
                                    copier=self.copier)

    # -- lifecycle ----------------------------------------------------------

    def recover(self) -> None:
        """Settle what a previous process left (see :func:`.recovery.recover`)."""
        recover(self.store, self.events, self.cleaner, clock=self.clock,
                runtime_dir=self.runtime_dir,
                directories=self.settings.backup.allowed_directories)
        self.copier.recover()

    def shutdown(self, grace_seconds: float) -> None:
        """Stop admitting runs, give running ones ``grace_seconds``, then cancel them;
        runs that never started are recorded as cancelled."""
        self.queue.shutdown(grace_seconds, on_expired=self.executor.cancel_all)
        now = self.clock()
        for run in self.queue.unsettled(self.store):
            failed = self.store.mark_failed(
                run.id, finished_at=now,
                error="cancelled: the service shut down before this run started")
            self.events.on_run_finished(failed)

    # -- backups ------------------------------------------------------------

    def create_backup(self, *, database: str = "", background: bool = False,
                      trigger: Trigger = Trigger.MANUAL, schedule: str = "",
                      backup_type: BackupType = BackupType.UNSPECIFIED) -> CreateResult:
        """Back up a configured target (default: the first) into the configured directory;
        ``backup_type`` (full or incremental) for a physical target."""
        b = self.settings.backup
        target = self.targets.resolve(database)
        if backup_type is not BackupType.UNSPECIFIED and not target.physical:
            raise InvalidArgument(f"type: {backup_type.value} applies to physical targets; "
                                  f"target {target.name!r} is logical (pg_dump backups are "
                                  "always full): leave type unset")
        if trigger is Trigger.MANUAL and self.executor.writes_in(target, b.directory):
            # Refused before any run exists: a request that cannot run is not a failed
            # backup. A scheduled fire is recorded as FAILED instead, never silent.
            files.prepare_backup_dir(b.directory, "backup.directory", requested=False)
        jobs = self._jobs(target, b.directory, target.retention_days or b.retention_days,
                          b.cleanup_old, trigger, schedule, "backup.directory", backup_type)
        return self._submit(jobs, trigger=trigger, schedule=schedule, background=background)

    def create_custom_backup(self, backup_dir: str, *, retention_days: int = 0,
                             cleanup_old: bool = False, background: bool = False,
                             database: str = "") -> CreateResult:
        """Back up into ``backup_dir`` (inside an allowed root) with its own retention."""
        b = self.settings.backup
        if not 0 <= retention_days <= 36500:
            raise InvalidArgument(f"retention_days: must be between 1 and 36500 days (0 uses "
                                  f"backup.retentionDays), got {retention_days}")
        directory = files.confine(backup_dir, b.allowed_directories)
        target = self.targets.resolve(database)
        if target.physical:
            raise FailedPrecondition(
                f"database: target {target.name!r} is physical; its backups go to "
                "backup.directory, where its chain is (use POST /api/v1/backup/create)")
        retention = retention_days or target.retention_days or b.retention_days
        files.prepare_backup_dir(directory, "backup_dir", requested=True)
        jobs = self._jobs(target, directory, retention, cleanup_old, Trigger.MANUAL, "",
                          "backup_dir")
        return self._submit(jobs, trigger=Trigger.MANUAL, schedule="", background=background)

    def run_scheduled(self, schedule: str, target: str) -> None:
        """A schedule fired: back up its target and wait for the run(s) to finish."""
        try:
            self.create_backup(database=target, trigger=Trigger.SCHEDULE, schedule=schedule,
                               backup_type=self._schedule_type(schedule))
        except BackupError:
            pass  # recorded on the run(s), logged and notified

    def queue_scheduled(self, schedule: str, target: str) -> CreateResult:
        """A schedule fired (cluster): queue its run(s) and return; a BackupError when
        even that failed (recorded on a FAILED run)."""
        return self.create_backup(database=target, trigger=Trigger.SCHEDULE,
                                  schedule=schedule, background=True,
                                  backup_type=self._schedule_type(schedule))

    def plan_scheduled(self, target: str, backup_type: BackupType) -> list[Job]:
        """The jobs a scheduled fire of ``target`` makes, recording nothing: a cluster
        records and queues them in the transaction that claims the fire. BackupError
        when they cannot be found (an allDatabases server that does not answer); the
        fire then goes through :meth:`queue_scheduled`, which records the failure."""
        b = self.settings.backup
        config = self.targets.resolve(target)
        return jobs_for(self.targets, config, b.directory,
                        config.retention_days or b.retention_days, b.cleanup_old,
                        "backup.directory", backup_type)

    def _schedule_type(self, schedule: str) -> BackupType:
        return self._schedule_types.get(schedule, BackupType.UNSPECIFIED)

    def _jobs(self, target: TargetConfig, directory: Path, retention: int, cleanup_old: bool,
              trigger: Trigger, schedule: str, dir_field: str,
              backup_type: BackupType = BackupType.UNSPECIFIED) -> list[Job]:
        """The jobs of a request; when even finding them fails (allDatabases on an
        unreachable server), a FAILED run records it, so the failure is never silent."""
        try:
            return jobs_for(self.targets, target, directory, retention, cleanup_old, dir_field,
                            backup_type)
        except BackupError as exc:
            now = self.clock()
            run = self.store.create_run(database=f"{target.name}-globals", trigger=trigger,
                                        backup_dir=str(directory), queued_at=now,
                                        schedule=schedule, target=target.name,
                                        kind=RunKind.GLOBALS)
            failed = self.store.mark_failed(run.id, finished_at=now, error=exc.message,
                                            started_at=now)
            log.error("Database backup failed", run_id=run.id, database=run.database,
                      error=exc.message)
            self.events.on_run_finished(failed)
            raise exc.prefixed(f"backup {run.id} failed: ") from None

    def _submit(self, jobs: list[Job], *, trigger: Trigger, schedule: str,
                background: bool) -> CreateResult:
        key = self.targets.server_key(jobs[0].target.name)
        self.queue.admit(key, len(jobs), trigger)
        futures: list[Future[CreateResult]] = []
        runs: list[Run] = []
        try:
            for job in jobs:
                run = self.store.create_run(database=job.database, trigger=trigger,
                                            backup_dir=str(job.directory),
                                            queued_at=self.clock(), schedule=schedule,
                                            target=job.target.name, kind=job.kind)
                log.info("Database backup job queued", run_id=run.id, database=run.database,
                         trigger=trigger.value)
                try:
                    futures.append(self.queue.submit(key, run.id,
                                                     partial(self._run, run, job), job=job))
                except BackupError as exc:
                    self.store.mark_failed(run.id, finished_at=self.clock(), error=exc.message)
                    raise
                runs.append(run)
        except BaseException:
            self.queue.release(key, len(jobs) - len(futures))
            raise
        if background:
            return CreateResult(runs[0], runs=tuple(runs))
        return gather(futures)

    def _run(self, run: Run, job: Job) -> CreateResult:
        if self.queue.closing:  # queued before the shutdown: recorded as cancelled then
            raise Unavailable(NOT_STARTED)
        return self.executor.execute(run, job)

    # -- retention ----------------------------------------------------------

    def cleanup(self, *, dry_run: bool = False) -> CleanupResult:
        """Apply retention to the configured directory now."""
        return self.cleaner.cleanup(dry_run=dry_run)

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
        refuse_control_characters("database", database)
        if self.store.has_runs(database=database):
            return "", database
        raise NotFound(f'database: no backups or target named "{database}"; configured: '
                       f"{', '.join(self.targets.names)}")

    def stats(self, database: str = "") -> Stats:
        target, database = self._scope(database)
        stats = self.store.stats(str(self.settings.backup.directory), target=target,
                                 database=database)
        stats = replace(stats, destinations=self.copier.usage(target=target, database=database))
        if target or database:
            return replace(stats, targets=())
        # Every configured target, also one that never ran: "never" is an answer too.
        known = {t.name: t.databases for t in stats.targets}
        return replace(stats, targets=tuple(
            TargetSummary(t.name, t.all_databases, known.get(t.name, ()))
            for t in self.targets.all))

    def list_backups(self, *, database: str = "", status: RunStatus | None = None,
                     page_size: int = 0, page_token: str = "",
                     trigger: Trigger | None = None) -> RunPage:
        target, database = self._scope(database)
        return self.store.list_runs(target=target, database=database, status=status,
                                    page_size=page_size, page_token=page_token,
                                    trigger=trigger)

    def get_backup(self, run_id: int) -> Run:
        if run_id < 1:
            raise InvalidArgument(f"id: must be a positive backup id, got {run_id}")
        run = self.store.get(run_id)
        # Only a file on this host can be checked here; an object store's copy is not.
        if (run.file_state is FileState.PRESENT and os.path.isabs(run.file_path)
                and not os.path.lexists(run.file_path)):
            self.store.set_file_state([run.id], FileState.MISSING)
            run = self.store.get(run_id)
        return run

    def watch(self, run_id: int, *, interval: float = 0.5,
              cancelled: Callable[[], bool] = lambda: False) -> Iterator[Progress]:
        """Progress snapshots of a run until it ends; the last one carries the run."""
        yield from self.tracker.watch(self.get_backup(run_id), interval=interval,
                                      cancelled=cancelled)
