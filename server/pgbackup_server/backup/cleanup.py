"""Applying retention: deleting expired backups from disk, and noticing vanished ones.

The rules themselves are pure (:mod:`.retention`); this module does the I/O
and records the outcome on the runs. """

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import structlog

from ..domain import retention
from ..domain.models import CleanupResult, FileState, Run
from ..domain.ports import Clock, Listener, RunStore
from ..settings import BackupConfig, TargetConfig
from . import files

log = structlog.get_logger("pgbackup")


class WalPruner(Protocol):
    def prune_after_cleanup(self, kept: list[Run]) -> None: ...


class Cleaner:
    """Retention for the service's backup directories. Thread-safe as the store is."""

    def __init__(self, backup: BackupConfig, store: RunStore,
                 targets: Mapping[str, TargetConfig], events: Listener,
                 clock: Clock, wal: WalPruner | None = None) -> None:
        self.backup = backup
        self.store = store
        self.targets = targets
        self.events = events
        self.clock = clock
        self.wal = wal

    def reconcile(self, backup_dir: str | None = None) -> int:
        """Mark backups whose file disappeared from disk as missing. A directory that
        is absent as a whole (an unmounted volume) is skipped: that is not a deletion."""
        return len(self._mark_vanished(self.store.present_runs(backup_dir)))

    def _mark_vanished(self, present: list[Run]) -> set[int]:
        gone = {r.id for r in present
                if not os.path.lexists(r.file_path) and os.path.isdir(r.backup_dir)}
        self.store.set_file_state(sorted(gone), FileState.MISSING)
        for run_id in sorted(gone):
            log.warning("Backup file missing from disk", run_id=run_id)
        return gone

    def _chains(self, present: list[Run], doomed: list[Run]) -> list[Run]:
        """Physical chains: a backup a kept one depends on stays; an incremental goes
        with the backup it depends on (physical/chain.py)."""
        from ..physical.chain import close_retention

        ids, reasons = close_retention(present, {r.id for r in doomed})
        for run_id, reason in sorted(reasons.items()):
            log.info("Retention over a backup chain", run_id=run_id, reason=reason)
        return sorted((r for r in present if r.id in ids), key=lambda r: r.id)

    def cleanup(self, *, dry_run: bool = False) -> CleanupResult:
        """Apply retention to the configured directory now."""
        b = self.backup
        return self.cleanup_dir(b.directory, b.retention_days, dry_run=dry_run,
                                per_target=True)

    def cleanup_dir(self, directory: Path, retention_days: int, *, dry_run: bool,
                    per_target: bool = False) -> CleanupResult:
        """Retention for one directory. With ``per_target``, a target's own
        retentionDays overrides ``retention_days`` for its runs."""
        key = str(directory)
        present = self.store.present_runs(key)
        if not dry_run:  # one listing serves both the reconcile and retention
            vanished = self._mark_vanished(present)
            present = [r for r in present if r.id not in vanished]
        latest = self.store.latest_status_by_database(key)
        groups: dict[int, list[Run]] = {}
        for run in present:
            target = self.targets.get(run.target)
            days = (target.retention_days if per_target and target and target.retention_days
                    else retention_days)
            groups.setdefault(days, []).append(run)
        doomed = sorted(
            (r for days, group in groups.items()
             for r in retention.expired(group, now=self.clock(), retention_days=days,
                                        min_keep=self.backup.retention_min_keep,
                                        latest_status=latest)),
            key=lambda r: r.id)
        doomed = self._chains(present, doomed)
        deleted: list[str] = []
        gone: list[int] = []
        missing: list[int] = []
        freed = 0
        for run in doomed:
            path = Path(run.file_path)
            # Only a regular file with our name, directly in the run's directory.
            if path.parent != directory or not files.is_our_regular_file(path):
                missing.append(run.id)
                log.warning("Not deleting: file is not the backup the service wrote",
                            run_id=run.id, file_path=run.file_path)
                continue
            if dry_run:
                size: int | None = files.backup_size(path)
            else:
                size = files.delete_backup(path, self.backup.allowed_directories)
                if size is None:
                    missing.append(run.id)
                    log.warning("Not deleting: file changed under the service",
                                run_id=run.id, file_path=run.file_path)
                    continue
                gone.append(run.id)
            deleted.append(str(path))
            freed += size or 0
        if not dry_run and self.wal is not None:
            self.wal.prune_after_cleanup([r for r in present if r.id not in set(gone)])
        if not dry_run:
            self.store.set_file_state(gone, FileState.DELETED)
            self.store.set_file_state(missing, FileState.MISSING)
            if gone:  # once for the batch: a sync per file would make big cleanups slow
                files.fsync_dir(directory)
        log.info("Cleanup completed", deleted_files=len(deleted), freed_bytes=freed,
                 dry_run=dry_run, backup_dir=key, retention_days=retention_days)
        result = CleanupResult(len(deleted), freed, dry_run, tuple(deleted))
        if not dry_run:
            self.events.on_cleanup(result, key)
        return result
