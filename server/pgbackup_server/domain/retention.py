"""Retention rules: pure functions over a list of runs, no I/O.

A backup is deleted only when all of these hold:
- the service recorded it as SUCCEEDED and its file is present;
- it started before ``now - retention_days``;
- it is not among the ``min_keep`` newest successful backups of its database
  (per target: two servers may both have a database "postgres");
- its database's newest finished run did not fail: while a database's backups
  are failing, none of its good backups is pruned, so a string of failures can
  never eat the last good copies.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from .models import FileState, Run, RunStatus


def expired(runs: Iterable[Run], *, now: datetime, retention_days: int, min_keep: int = 1,
            latest_status: Mapping[tuple[str, str], RunStatus] | None = None) -> list[Run]:
    """The runs whose files retention deletes now, oldest first."""
    if retention_days < 1:
        raise ValueError("retention_days must be >= 1")
    min_keep = max(1, min_keep)
    cutoff = now - timedelta(days=retention_days)
    latest_status = latest_status or {}
    by_db: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        if run.status is RunStatus.SUCCEEDED and run.file_state is FileState.PRESENT:
            by_db[(run.target, run.database)].append(run)
    doomed: list[Run] = []
    for key, good in by_db.items():
        if latest_status.get(key) is RunStatus.FAILED:
            continue
        good.sort(key=_order, reverse=True)
        doomed.extend(r for r in good[min_keep:] if _started(r) < cutoff)
    return sorted(doomed, key=_order)


def _started(run: Run) -> datetime:
    return run.started_at or run.queued_at


def _order(run: Run) -> tuple[datetime, int]:
    # Ids break ties: runs started in the same instant still have an order.
    return _started(run), run.id
