"""Settling what a previous process left: runs it did not finish, temporary files
of a crash, passfiles a SIGKILL left behind, and backup files removed by hand."""

from __future__ import annotations

from pathlib import Path

import structlog

from ..domain.ports import Clock, Listener, RunStore
from . import files
from .cleanup import Cleaner
from .naming import TEMP_NAME

log = structlog.get_logger("pgbackup")
INTERRUPTED = "interrupted: the service stopped during this run"


def recover(store: RunStore, events: Listener, cleaner: Cleaner, *, clock: Clock,
            runtime_dir: Path, directories: tuple[Path, ...]) -> None:
    """Runs left PENDING or RUNNING are FAILED "interrupted" (recorded first: a cleanup
    problem must never leave them unrecorded) and their temporary files removed; orphan
    temporary files in ``directories`` and every directory the store knows are removed;
    vanished backup files are marked missing."""
    now = clock()
    for run in store.unfinished_runs():
        failed = store.mark_failed(run.id, finished_at=now, error=INTERRUPTED)
        log.warning("Backup run interrupted by a service stop", run_id=run.id,
                    database=run.database)
        if (run.temp_path and TEMP_NAME.match(Path(run.temp_path).name)
                and files.remove_temp(Path(run.temp_path))):
            log.info("Removed temporary file left by a crash", run_id=run.id,
                     file_path=run.temp_path)
        events.on_run_finished(failed)
    for stale in runtime_dir.glob("pgpass-*"):  # left by a SIGKILL: they hold a password
        files.remove_quietly(stale)
    for directory in sorted({*directories, *(Path(d) for d in store.backup_dirs())}):
        for path in files.remove_orphan_temps(directory):
            log.info("Removed temporary file left by a crash", file_path=str(path))
    cleaner.reconcile()
