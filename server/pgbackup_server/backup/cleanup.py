"""Applying retention: deleting expired backups from disk, and noticing vanished ones.

The rules themselves are pure (:mod:`.retention`); this module does the I/O
and records the outcome on the runs. """

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import structlog

from ..domain import retention
from ..domain.models import CleanupDecision, CleanupResult, FileState, Run
from ..domain.ports import Clock, Listener, RunStore
from ..domain.retention import Group, Policy
from ..settings import Settings, TargetConfig
from ..settings.retention import retention_for
from . import files

log = structlog.get_logger("pgbackup")
LOCAL = "local"  # the destination of backup directories, until copies are per destination


# A lock held while retention runs (a cluster's: one replica at a time).
Exclusive = Callable[[], AbstractContextManager[None]]


class Cleaner:
    """Retention for the service's backup directories. Thread-safe as the store is."""

    def __init__(self, settings: Settings, store: RunStore,
                 targets: Mapping[str, TargetConfig], events: Listener,
                 clock: Clock, *, exclusive: Exclusive | None = None) -> None:
        self.settings = settings
        self.backup = settings.backup
        self.exclusive = exclusive or nullcontext
        self.store = store
        self.targets = targets
        self.events = events
        self.clock = clock

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

    def cleanup(self, *, dry_run: bool = False) -> CleanupResult:
        """Apply retention to the configured directory now, each target's backups by
        its own policy."""
        return self.cleanup_dir(self.backup.directory, self.policy_by_target, dry_run=dry_run)

    def policy_by_target(self, group: Group) -> Policy:
        """The policy of a target's backups in the configured directory (a target no
        longer configured, or a run of 0.1.0 without one: the ``backup:`` defaults)."""
        return retention_for(self.settings, self.targets.get(group[0]))

    def uniform(self, retention_days: int) -> Callable[[Group], Policy]:
        """A request's ``retention_days`` for every backup of its directory."""
        policy = Policy(days=retention_days, min_keep=self.backup.retention_min_keep)
        return lambda _group: policy

    def after_backup(self, directory: Path, retention_days: int, *,
                     requested: bool) -> CleanupResult:
        """Retention after a successful backup (``cleanupOld``): in the configured
        directory each target keeps its own policy (another target's shorter one never
        applies); a requested directory (create-custom) uses the request's days."""
        policy_for = self.uniform(retention_days) if requested else self.policy_by_target
        return self.cleanup_dir(directory, policy_for, dry_run=False)

    def cleanup_dir(self, directory: Path, policy_for: Callable[[Group], Policy], *,
                    dry_run: bool) -> CleanupResult:
        """Retention for one directory: a decision for each backup in it, and the
        files of those that go deleted (listed only, with ``dry_run``). Under the
        cluster's lock when there is one: retention runs on one replica at a time."""
        with self.exclusive():
            return self._cleanup_dir(directory, policy_for, dry_run=dry_run)

    def _cleanup_dir(self, directory: Path, policy_for: Callable[[Group], Policy], *,
                     dry_run: bool) -> CleanupResult:
        key = str(directory)
        present = self.store.present_runs(key)
        if not dry_run:  # one listing serves both the reconcile and retention
            vanished = self._mark_vanished(present)
            present = [r for r in present if r.id not in vanished]
        by_id = {r.id: r for r in present}
        decisions = retention.decide(retention.candidates(present), policy_for,
                                     now=self.clock(), tz=self.settings.scheduler.tz,
                                     latest_status=self.store.latest_status_by_database(key))
        reasons = {d.candidate.id: d.reasons for d in decisions}
        doomed = sorted((by_id[d.candidate.id] for d in decisions if not d.keep),
                        key=lambda r: r.id)
        deleted: list[str] = []
        gone: list[int] = []
        missing: list[int] = []
        freed = 0
        for run in doomed:
            path = Path(run.file_path)
            # Only a regular file with our name, directly in the run's directory.
            if path.parent != directory or not files.is_our_regular_file(path):
                missing.append(run.id)
                reasons[run.id] += ("not deleted: the file is not the backup the service "
                                    "wrote",)
                log.warning("Not deleting: file is not the backup the service wrote",
                            run_id=run.id, file_path=run.file_path)
                continue
            if dry_run:
                size: int | None = files.backup_size(path)
            else:
                size = files.delete_backup(path, self.backup.allowed_directories)
                if size is None:
                    missing.append(run.id)
                    reasons[run.id] += ("not deleted: the file changed under the service",)
                    log.warning("Not deleting: file changed under the service",
                                run_id=run.id, file_path=run.file_path)
                    continue
                gone.append(run.id)
            deleted.append(str(path))
            freed += size or 0
        if not dry_run:
            self.store.set_file_state(gone, FileState.DELETED)
            self.store.set_file_state(missing, FileState.MISSING)
            if gone:  # once for the batch: a sync per file would make big cleanups slow
                files.fsync_dir(directory)
        log.info("Cleanup completed", deleted_files=len(deleted), freed_bytes=freed,
                 dry_run=dry_run, backup_dir=key, kept=len(decisions) - len(doomed))
        result = CleanupResult(len(deleted), freed, dry_run, tuple(deleted), tuple(
            CleanupDecision(d.candidate.id, by_id[d.candidate.id].database, LOCAL,
                            by_id[d.candidate.id].file_path, d.keep, reasons[d.candidate.id])
            for d in sorted(decisions, key=lambda d: d.candidate.id)))
        if not dry_run:
            self.events.on_cleanup(result, key)
        return result
