"""What a backup request turns into: one job per database to dump."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ..domain.models import BackupType, RunKind
from ..domain.targets import Targets
from ..postgres.server import list_databases
from ..settings import TargetConfig


@dataclass(frozen=True, slots=True)
class Job:
    directory: Path
    retention_days: int
    cleanup_old: bool
    target: TargetConfig
    database: str  # the run's name: the target's, <target>.<db>, <target>-globals
    dbname: str = ""  # the PostgreSQL database dumped (empty: the one in the target's URL)
    kind: RunKind = RunKind.DATABASE
    dir_field: str = "backup.directory"  # what names the directory in errors
    requested: bool = False  # the caller gave the directory (create-custom)


def jobs_for(targets: Targets, target: TargetConfig, directory: Path, retention_days: int,
             cleanup_old: bool, dir_field: str,
             backup_type: BackupType = BackupType.UNSPECIFIED) -> list[Job]:
    """One job per database. An allDatabases target lists its server's databases at each
    request, so new ones are picked up without a restart, and adds its globals. A
    physical target is one job for its whole cluster, of the kind asked for."""
    job = partial(Job, directory, retention_days, cleanup_old, target, dir_field=dir_field,
                  requested=dir_field == "backup_dir")
    if target.physical:
        kind = (RunKind.PHYSICAL_INCREMENTAL if backup_type is BackupType.INCREMENTAL
                else RunKind.PHYSICAL_FULL)
        return [job(target.name, kind=kind)]
    if not target.all_databases:
        return [job(target.name)]
    names = list_databases(targets.conninfo(target.name))
    jobs = [job(f"{target.name}.{name}", dbname=name) for name in names]
    jobs.append(job(f"{target.name}-globals", kind=RunKind.GLOBALS))
    return jobs
