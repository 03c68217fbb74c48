"""Executes one backup run: checks the directory, asks the server its version,
picks a pg_dump, plans and dumps, and records every step on the run.

A run always ends recorded: SUCCEEDED with its file, size and SHA-256, or FAILED
with the reason (logged and sent to the event listeners), whatever went wrong.

Where the bytes go: with the one default destination (``backup.directory``) and no
encryption, pg_dump writes the file itself (the fast path) and the copy is recorded
after. Otherwise the dump is streamed once, [compressed,] [encrypted,] to every
destination of the target (:mod:`.fanout`): no local file unless a destination is
local; the run succeeds when every required destination holds its copy.
"""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import structlog

from ..domain.errors import BackupError, BackupFailed, Unavailable
from ..domain.models import CreateResult, DumpFormat, FileState, Run, RunKind, Stored
from ..domain.ports import Clock, Listener, RunStore
from ..domain.targets import Targets
from ..postgres import binaries as pg_binaries
from ..postgres.binaries import PgBinary
from ..postgres.conninfo import ConnInfo
from ..postgres.server import query_server, table_sizes
from ..settings import DestinationConfig, Settings, TargetConfig
from ..storage.age import EncryptingSink
from ..storage.paths import recorded_place
from . import files, naming
from .cleanup import Cleaner
from .copies import Copier
from .dump import DumpOutcome, DumpProcess
from .fanout import Outputs, Settled, free_name
from .jobs import Job
from .pipeline import Extras, HashStage, Sink, StageFactory, build
from .plan import auto_jobs, plan_dump, wanted_capability
from .progress import ProgressTracker

log = structlog.get_logger("pgbackup")
SHUTDOWN_CANCELLED = "cancelled: the service shut down (server.shutdownGrace expired)"


class RunExecutor:
    """Runs jobs; :meth:`cancel_all` stops the ones running (at shutdown)."""

    def __init__(self, settings: Settings, store: RunStore, events: Listener, *,
                 targets: Targets, binaries: list[PgBinary], runtime_dir: Path, clock: Clock,
                 tracker: ProgressTracker, cleaner: Cleaner, copier: Copier) -> None:
        self.settings = settings
        self.store = store
        self.events = events
        self.targets = targets
        self.binaries = binaries
        self.runtime_dir = runtime_dir
        self.clock = clock
        self.tracker = tracker
        self.cleaner = cleaner
        self.copier = copier
        self._lock = threading.Lock()
        self._active: dict[int, DumpProcess] = {}
        self._cancelling = False
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

    def stop_run(self, run_id: int, reason: str) -> None:
        """Stop one running dump (a cluster replica that lost the run's lease)."""
        with self._lock:
            dump = self._active.get(run_id)
        if dump is not None:
            dump.stop(reason)

    def execute(self, run: Run, job: Job) -> CreateResult:
        """Run ``job`` for the recorded ``run``; raise its error after recording it."""
        if run.kind.physical:
            return self._execute_physical(run, job)
        bound = log.bind(run_id=run.id, database=run.database)
        started = self.clock()
        b = self.settings.backup
        conninfo = self.targets.conninfo(job.target.name, job.dbname)
        bound.info("Database backup job started", backup_dir=str(job.directory))
        configs = () if job.requested else self.copier.configs_of(job.target.name)
        streamed = self._streams(job, configs)
        outputs: Outputs | None = None
        try:
            if not streamed or any(_is_dir(c, job.directory) for c in configs):
                files.prepare_backup_dir(job.directory, job.dir_field,
                                         requested=job.requested)
            server = query_server(conninfo)
            binary = pg_binaries.choose(self.binaries, server.major, server.version,
                                        wanted_capability(b.format, b.compression,
                                                          b.compress_backup))
            plan = plan_dump(binary, format=b.format, compression=b.compression,
                             compress_backup=b.compress_backup,
                             supports=pg_binaries.supports_compression,
                             jobs=_jobs(conninfo, b.format, b.jobs))
            globals_only = run.kind is RunKind.GLOBALS
            if globals_only:
                plan = plan.for_globals()
            # The run's database names the file; globals_<target> for the globals.
            name = job.target.name if globals_only else run.database
            stem = naming.stem(run.kind, name, started, self.settings.scheduler.tz)
            encryption = self.settings.encryption if streamed else None
            if streamed:
                ext = plan.extension + (naming.ENCRYPTED_SUFFIX if encryption else "")
                relative = free_name([self.copier.destination(c.name) for c in configs],
                                     stem, ext)
                temp_path = ""
            else:
                temp = naming.free_temp_path(job.directory, f"{stem}{plan.extension}", run.id)
                temp_path = str(temp)
            dump = DumpProcess(plan, conninfo, str(self.runtime_dir))
            with self._lock:
                if self._cancelling:
                    raise Unavailable(SHUTDOWN_CANCELLED)
                self._active[run.id] = dump
            running = self.store.mark_running(
                run.id, started_at=started, temp_path=temp_path, format=plan.format,
                compression=plan.compression, pg_dump_version=binary.version,
                server_version=server.version,
                encryption=encryption.fingerprints if encryption else ())
            self.events.on_run_started(running)
            bound.debug("pg_dump starting", pg_dump=binary.path, pg_dump_version=binary.version,
                        server_version=server.version, format=plan.format,
                        compression=str(plan.compression), jobs=plan.jobs)
            on_progress = self.tracker.recorder(run.id, server.database_size)
            if streamed:
                outputs = Outputs(self.copier, running, relative, [c.name for c in configs])
                hashing: list[HashStage] = []
                stages: tuple[StageFactory, ...] = ()
                if encryption is not None:
                    recipients = encryption.recipients

                    def plaintext(down: Sink) -> Sink:
                        hashing.append(HashStage(down))
                        return hashing[-1]

                    # compress, then hash (the plaintext), then encrypt, then store
                    stages = (lambda down: EncryptingSink(recipients, down), plaintext)
                sink = build(outputs, Extras(stages=stages), plan.zstd_level)
                bytes_in, _ = dump.stream(sink, relative, b.timeout_seconds, on_progress)
            else:
                outcome = dump.run(job.directory, stem, run.id, b.timeout_seconds,
                                   on_progress=on_progress, temp=temp)
        except Exception as exc:  # whatever went wrong, the run ends recorded
            error = _as_backup_error(exc, bound)
            self._unstored(run, outputs, error.message)
            self._fail(run, started, error, bound)
        finally:
            with self._lock:
                self._active.pop(run.id, None)
            self.tracker.forget(run.id)
        if outputs is not None:
            digest = hashing[0].hash.hexdigest() if hashing else ""
            stored = self._settle(replace(running, plaintext_sha256=digest), outputs,
                                  bytes_in, bound)
        else:
            self._record_local(running, job, configs, outcome)
            stored = dict(file_path=str(outcome.path), size_bytes=outcome.size_bytes,
                          sha256=outcome.sha256, bytes_written=outcome.bytes_in)
        return self._succeeded(run, job, started, stored, bound)

    def _execute_physical(self, run: Run, job: Job) -> CreateResult:
        """A physical run: pg_basebackup into the target's directory (physical/)."""
        bound = log.bind(run_id=run.id, database=run.database)
        started = self.clock()
        bound.info("Physical backup job started", backup_dir=str(job.directory))
        configs = self.copier.configs_of(job.target.name)
        try:
            files.prepare_backup_dir(job.directory, job.dir_field, requested=job.requested)
            # The folder here, then each of its files to the target's other destinations
            # (encrypted when configured); a failed required copy fails the run.
            made = self.physical.produce(run, job, started, copier=self.copier,
                                         configs=configs, encryption=self.settings.encryption)
        except Exception as exc:  # whatever went wrong, the run ends recorded
            self._fail(run, started, _as_backup_error(exc, bound), bound)
        finally:
            self.tracker.forget(run.id)
        out = made.outcome
        outcome = DumpOutcome(out.path, out.size_bytes, out.sha256, out.size_bytes)
        self._record_local(made.running, job, configs, outcome)
        stored = dict(file_path=str(out.path), size_bytes=out.size_bytes, sha256=out.sha256,
                      bytes_written=out.size_bytes, **made.changes)
        return self._succeeded(run, job, started, stored, bound)

    def _succeeded(self, run: Run, job: Job, started: datetime, stored: dict[str, Any],
                   bound: structlog.typing.FilteringBoundLogger) -> CreateResult:
        """Record the success, tell the listeners, and apply retention when asked."""
        finished = self.clock()
        done = self.store.mark_succeeded(run.id, finished_at=finished, **stored)
        bound.info("Database backup completed successfully", file_path=done.file_path,
                   size_bytes=done.size_bytes,
                   duration_seconds=round((finished - started).total_seconds(), 3))
        self.events.on_run_finished(done)
        deleted = 0
        if job.cleanup_old:  # only after a success: a failure never triggers cleanup
            try:
                deleted = self.cleaner.after_backup(job.directory, job.retention_days,
                                                    requested=job.requested).deleted_files
            except Exception:  # cleanup must never turn a good backup into an error
                bound.exception("Cleanup after backup failed")
        return CreateResult(done, deleted)

    def _fail(self, run: Run, started: datetime, exc: BackupError,
              bound: structlog.typing.FilteringBoundLogger) -> NoReturn:
        """Record the failure on the run, log it, and raise it for the caller."""
        failed = self.store.mark_failed(run.id, finished_at=self.clock(), error=exc.message,
                                        started_at=started)
        bound.error("Database backup failed", error=exc.message)
        self.events.on_run_finished(failed)
        raise exc.prefixed(f"backup {run.id} failed: ")

    # -- destinations -------------------------------------------------------

    def writes_in(self, target: TargetConfig, directory: Path) -> bool:
        """Whether a backup of ``target`` writes into ``directory`` (no: only object
        stores or other directories, where nothing local is written)."""
        configs = self.copier.configs_of(target.name)
        probe = Job(directory, 0, False, target, target.name)
        return not self._streams(probe, configs) or any(_is_dir(c, directory)
                                                        for c in configs)

    def _streams(self, job: Job, configs: tuple[DestinationConfig, ...]) -> bool:
        """Whether the run streams to its destinations (else: the fast path into
        ``job.directory``, as before destinations existed)."""
        if not configs or self.settings.backup.format is DumpFormat.DIRECTORY:
            return False
        if self.settings.encryption is not None:
            return True
        return not (len(configs) == 1 and _is_dir(configs[0], job.directory))

    def _record_local(self, run: Run, job: Job, configs: tuple[DestinationConfig, ...],
                      outcome: DumpOutcome) -> None:
        """The fast path wrote the file of the destination at ``job.directory``."""
        config = next((c for c in configs if _is_dir(c, job.directory)), None)
        if config is not None:
            stored = Stored(outcome.path.name, outcome.size_bytes, outcome.sha256)
            self.copier.succeeded(run, config.name, stored)

    def _unstored(self, run: Run, outputs: Outputs | None, reason: str) -> None:
        """The run failed before its copies were finished: none of them is stored."""
        if outputs is None:
            return
        for sink in outputs.sinks:
            self.copier.copies.mark_failed(run.id, sink.name,
                                           error=f"not stored: the backup failed: {reason}")

    def _settle(self, run: Run, outputs: Outputs, bytes_in: int,
                bound: structlog.typing.FilteringBoundLogger) -> dict[str, Any]:
        """Record the copies; what the run records as stored (file, size, hash, where),
        or FAILED (and raised) when a required destination lacks its copy."""
        settled = outputs.settle(run)
        present = [c for c in settled.copies if c.present]
        primary = next((c for c in present if self.copier.destination(c.destination).is_local),
                       present[0])
        dest = self.copier.destination(primary.destination)
        path, directory = recorded_place(dest, primary.location)
        stored = dict(file_path=path, size_bytes=primary.size_bytes, sha256=primary.sha256,
                      bytes_written=bytes_in, backup_dir=directory,
                      plaintext_sha256=run.plaintext_sha256)
        if settled.failed_required:
            self._fail_copies(run, settled, stored, bound)
        return stored

    def _fail_copies(self, run: Run, settled: Settled, stored: dict[str, Any],
                     bound: structlog.typing.FilteringBoundLogger) -> NoReturn:
        """A required copy is missing: the run is FAILED, naming the destination(s), and
        keeps the copies that were stored (CopyBackup can complete it later)."""
        error = settled.error
        failed = self.store.mark_failed(run.id, finished_at=self.clock(), error=error,
                                        file_state=FileState.PRESENT, **stored)
        bound.error("Database backup failed", error=error)
        self.events.on_run_finished(failed)
        raise BackupFailed(error).prefixed(f"backup {run.id} failed: ")


def _jobs(conninfo: ConnInfo, format: DumpFormat, jobs: int | str) -> int:
    """backup.jobs, with ``auto`` resolved from the table sizes and the cores."""
    if isinstance(jobs, int):
        return jobs
    if format is not DumpFormat.DIRECTORY:
        return 1
    total, largest = table_sizes(conninfo)
    return auto_jobs(total, largest, len(os.sched_getaffinity(0)))


def _is_dir(config: DestinationConfig, directory: Path) -> bool:
    return config.is_local and os.path.realpath(config.path) == os.path.realpath(directory)




def _as_backup_error(exc: Exception, bound: structlog.typing.FilteringBoundLogger) -> BackupError:
    """What a failed run records: the error itself, a file system error (no bug, no
    traceback), or an internal error (a bug: logged with its traceback)."""
    if isinstance(exc, BackupError):
        return exc
    if isinstance(exc, OSError):  # the file system changed under the run
        where = f" ({exc.filename})" if exc.filename else ""
        return BackupFailed(f"file system error{where}: {exc.strerror or exc}")
    bound.exception("Backup crashed")
    return BackupFailed(f"internal error: {exc}")
