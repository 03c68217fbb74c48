"""Makes one physical backup run: checks the server, picks the parent (or says why
the run is a full backup), runs pg_basebackup and records the outcome.

Called by ``backup/executor.py`` for runs of kind PHYSICAL_FULL or
PHYSICAL_INCREMENTAL, inside its recording: what this raises is recorded as the
run's failure there.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from ..backup import naming
from ..backup.copies import Copier
from ..backup.files import CHUNK, manifest_digest
from ..backup.jobs import Job
from ..backup.pipeline import Extras, Fanout
from ..backup.progress import ProgressTracker
from ..domain.errors import BackupFailed, FailedPrecondition, Unavailable
from ..domain.models import BackupType, Compression, DumpFormat, Run, RunKind, Stored
from ..domain.ports import Clock, Listener, RunStore, Sink
from ..domain.targets import Targets
from ..postgres.binaries import PgBinary
from ..settings import DestinationConfig, Settings
from ..settings.encryption import EncryptionConfig
from ..storage.age import EncryptingSink
from . import chain
from .basebackup import MANIFEST, BaseBackupOutcome, BaseBackupProcess
from .checks import check_server, read_server
from .tools import tool, tool_version

log = structlog.get_logger("pgbackup")
EXTENSIONS = {RunKind.PHYSICAL_FULL: ".full", RunKind.PHYSICAL_INCREMENTAL: ".incr"}


# (run, "<backup dir name>/<file>") -> what else gets that file (destinations' upload
# sinks, an encryption stage), per file of the physical backup (a physical backup is
# a directory of files).
FileOutputs = Callable[[Run, str], Extras | None]


@dataclass(frozen=True, slots=True)
class PhysicalOutcome:
    outcome: BaseBackupOutcome
    changes: dict[str, Any]
    running: Run
    stored: tuple[Stored, ...] = ()


def target_runs(store: RunStore, target: str) -> list[Run]:
    """Every recorded run of ``target`` (newest first)."""
    out: list[Run] = []
    token = ""
    while True:
        page = store.list_runs(target=target, page_size=1000, page_token=token)
        out.extend(page.runs)
        token = page.next_page_token
        if not token:
            return out


def requested_kind(backup_type: BackupType) -> RunKind:
    return (RunKind.PHYSICAL_INCREMENTAL if backup_type is BackupType.INCREMENTAL
            else RunKind.PHYSICAL_FULL)


class PhysicalRunner:
    """Runs pg_basebackup for physical runs; :meth:`cancel_all` stops them."""

    def __init__(self, settings: Settings, store: RunStore, events: Listener, *,
                 targets: Targets, binaries: list[PgBinary], runtime_dir: Path,
                 clock: Clock, tracker: ProgressTracker) -> None:
        self.settings = settings
        self.store = store
        self.events = events
        self.targets = targets
        self.binaries = binaries
        self.runtime_dir = runtime_dir
        self.clock = clock
        self.tracker = tracker
        self._lock = threading.Lock()
        self._active: dict[int, BaseBackupProcess] = {}
        self._cancelling = ""
        self.file_outputs: FileOutputs | None = None

    def cancel_all(self, reason: str) -> None:
        with self._lock:
            self._cancelling = reason
            active = list(self._active.values())
        for proc in active:
            proc.stop(reason)

    def produce(self, run: Run, job: Job, started: datetime, *, copier: Copier | None = None,
                configs: tuple[DestinationConfig, ...] = (),
                encryption: EncryptionConfig | None = None) -> PhysicalOutcome:
        """Back up the target's cluster for ``run`` into ``job.directory``, then copy it
        to the target's other destinations; raise a BackupError on failure."""
        conninfo = self.targets.conninfo(job.target.name)
        wal = job.target.wal
        incremental = run.kind is RunKind.PHYSICAL_INCREMENTAL
        server = read_server(conninfo)
        parent: Run | None = None
        reason = ""
        if incremental:
            check_server(server, incremental=True, wal_stream=bool(wal and wal.stream))
            choice = chain.choose_parent(
                [r for r in target_runs(self.store, job.target.name)
                 if r.id != run.id and r.backup_dir == str(job.directory)], now=started)
            parent, reason = choice.parent, choice.reason
        else:
            check_server(server, incremental=False, wal_stream=bool(wal and wal.stream))
        kind = chain.kind_for(parent)
        parent_manifest = None
        if parent is not None:
            parent_manifest = Path(parent.file_path) / MANIFEST
            if not parent_manifest.is_file():
                parent, kind = None, RunKind.PHYSICAL_FULL
                parent_manifest = None
                reason = ("the parent's backup_manifest is missing from disk: taken as a "
                          "full backup")
        pg_basebackup = tool(self.binaries, "pg_basebackup", server.major)
        stem = naming.stem(RunKind.DATABASE, job.target.name, started,
                           self.settings.scheduler.tz)
        extension = EXTENSIONS[kind]
        temp = naming.free_temp_path(job.directory, f"{stem}{extension}", run.id)
        proc = BaseBackupProcess(pg_basebackup, conninfo, str(self.runtime_dir))
        with self._lock:
            if self._cancelling:
                raise Unavailable(self._cancelling)
            self._active[run.id] = proc
        try:
            running = self.store.mark_running(
                run.id, started_at=started, temp_path=str(temp), kind=kind,
                parent_id=parent.id if parent else 0, type_reason=reason,
                chain=chain.chain_text(parent, run.id),
                # A folder of files (its kind says what they are), gzip from the server.
                format=DumpFormat.DIRECTORY, compression=Compression.parse("gzip:1"),
                pg_dump_version=_version(
                    pg_basebackup), server_version=server.version)
            self.events.on_run_started(running)
            if reason:
                log.warning("Incremental backup taken as a full backup", run_id=run.id,
                            reason=reason)
            outcome = proc.run(job.directory, stem, extension, temp,
                               self.settings.backup.timeout_seconds, parent_manifest,
                               on_progress=self.tracker.recorder(run.id,
                                                                 server.database_size))
        finally:
            with self._lock:
                self._active.pop(run.id, None)
        try:
            stored = self._copies(running, outcome.path, self.file_outputs)
            if copier is not None:
                remote = [c for c in configs if not (c.is_local and os.path.realpath(c.path)
                                                     == os.path.realpath(job.directory))]
                parent_name = Path(parent.file_path).name if parent is not None else ""
                for config in remote:
                    self._to_destination(running, outcome, copier, config, encryption,
                                         parent_name)
        except BaseException:
            shutil.rmtree(outcome.path, ignore_errors=True)  # a failed run keeps no backup
            raise
        return PhysicalOutcome(outcome, {"start_lsn": outcome.start_lsn,
                                         "end_lsn": outcome.end_lsn,
                                         "timeline": outcome.timeline}, running, stored)

    def _to_destination(self, run: Run, outcome: BaseBackupOutcome, copier: Copier,
                        config: DestinationConfig, encryption: EncryptionConfig | None,
                        parent_name: str) -> None:
        """Every file of the backup to one destination, under ``<backup name>/``,
        encrypted (``.age``) when configured; one copy recorded for the backup (its
        location the folder, its size the sum, its SHA-256 over the stored files as
        for a directory backup). A failed required copy fails the run. Its manifest
        names the parent (``parent_name``) and the WAL range, so that a new host can
        import the chain (``catalog.importer``)."""
        dest = copier.destination(config.name)
        suffix = naming.ENCRYPTED_SUFFIX if encryption is not None else ""

        def outputs(_run: Run, relative: str) -> Extras:
            stages = ((lambda down: EncryptingSink(encryption.recipients, down),)
                      if encryption is not None else ())
            return Extras(sinks=(dest.upload(relative + suffix),), stages=stages)

        copier.copies.add(run.id, config.name)
        try:
            stored = self._copies(run, outcome.path, outputs)
        except Exception as exc:
            copier.failed(run, config.name, f"{type(exc).__name__}: {exc}")
            if config.required:
                raise BackupFailed(f"the copy at destination {config.name!r} failed: "
                                   f"{exc}") from None
            return
        fingerprints = encryption.fingerprints if encryption is not None else ()
        described = replace(run, encryption=fingerprints, start_lsn=outcome.start_lsn,
                            end_lsn=outcome.end_lsn, timeline=outcome.timeline)
        copier.succeeded(described, config.name, Stored(
            outcome.path.name, sum(s.size for s in stored),
            manifest_digest((s.location.rsplit("/", 1)[-1], s.sha256) for s in stored),
            parts=stored), parent=parent_name)

    def _copies(self, run: Run, path: Path, file_outputs: FileOutputs | None
                ) -> tuple[Stored, ...]:
        """Each file of the published backup through the pipeline's extra sinks and
        stages (backup/pipeline.py), e.g. to a destination, encrypted; their Stored,
        in file order. Any failure aborts every copy and is raised."""
        if file_outputs is None:
            return ()
        stored: list[Stored] = []
        for name in sorted(os.listdir(path)):
            extras = file_outputs(run, f"{path.name}/{name}")
            if not extras:
                continue
            sink: Sink = Fanout(extras.sinks)
            for stage in extras.stages:
                sink = stage(sink)
            try:
                with open(path / name, "rb") as f:
                    while chunk := f.read(CHUNK):
                        sink.write(chunk)
                stored.extend(sink.finish())
            except BaseException as exc:
                sink.abort(f"copy of {name} failed: {exc}")
                raise
        return tuple(stored)


def _version(path: str) -> str:
    return tool_version(path)


def refuse_custom(target_name: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"database: target {target_name!r} is physical; physical backups go to "
        "backup.directory (use POST /api/v1/backup/create with its name)")
