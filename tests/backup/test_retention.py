"""Retention rules as pure functions: no files, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pgbackup_server.domain.models import FileState, Run, RunStatus, Trigger
from pgbackup_server.domain.retention import expired

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
_ids = iter(range(1, 10_000))


def run(days_ago: float, *, db: str = "shop", status: RunStatus = RunStatus.SUCCEEDED,
        state: FileState = FileState.PRESENT) -> Run:
    t = NOW - timedelta(days=days_ago)
    return Run(id=next(_ids), database=db, status=status, trigger=Trigger.SCHEDULE,
               backup_dir="/b", queued_at=t, started_at=t, finished_at=t, file_state=state,
               file_path=f"/b/f{days_ago}")


def ids(runs: list[Run]) -> list[int]:
    return [r.id for r in runs]


def test_deletes_only_backups_older_than_the_window_oldest_first():
    runs = [run(40), run(31), run(29), run(1)]
    assert ids(expired(runs, now=NOW, retention_days=30)) == [runs[0].id, runs[1].id]


def test_boundary_is_exclusive():
    runs = [run(30), run(0)]
    assert expired(runs, now=NOW, retention_days=30) == []


def test_newest_successful_backup_is_kept_whatever_its_age():
    runs = [run(400), run(300)]
    assert ids(expired(runs, now=NOW, retention_days=30)) == [runs[0].id]


def test_min_keep_keeps_n_newest_per_database():
    shop = [run(100 + i) for i in range(5)]
    other = [run(200 + i, db="other") for i in range(2)]
    doomed = expired(shop + other, now=NOW, retention_days=30, min_keep=3)
    assert sorted(ids(doomed)) == sorted(ids(shop[3:]))


def test_no_pruning_while_the_newest_run_failed():
    runs = [run(100), run(90), run(80)]
    latest = {("", "shop"): RunStatus.FAILED}
    assert expired(runs, now=NOW, retention_days=30, latest_status=latest) == []
    # Another database that is healthy is still pruned.
    other = [run(100, db="other"), run(1, db="other")]
    doomed = expired(runs + other, now=NOW, retention_days=30,
                     latest_status={("", "shop"): RunStatus.FAILED,
                                    ("", "other"): RunStatus.SUCCEEDED})
    assert ids(doomed) == [other[0].id]


def test_failed_missing_and_deleted_runs_are_never_candidates():
    runs = [run(100, status=RunStatus.FAILED, state=FileState.NONE),
            run(99, state=FileState.MISSING), run(98, state=FileState.DELETED),
            run(97, status=RunStatus.RUNNING, state=FileState.NONE), run(1)]
    assert expired(runs, now=NOW, retention_days=30) == []


def test_min_keep_below_one_still_keeps_one():
    runs = [run(100), run(90)]
    assert ids(expired(runs, now=NOW, retention_days=1, min_keep=0)) == [runs[0].id]


def test_rejects_a_zero_window():
    with pytest.raises(ValueError):
        expired([], now=NOW, retention_days=0)


def test_same_database_name_on_two_servers_is_kept_apart():
    a = [run(100, db="postgres"), run(90, db="postgres")]
    b = [run(80, db="postgres"), run(70, db="postgres")]
    a = [Run(**{**_fields(r), "target": "server-a"}) for r in a]
    b = [Run(**{**_fields(r), "target": "server-b"}) for r in b]
    # Server b keeps failing: none of its backups go, whatever server a does.
    latest = {("server-a", "postgres"): RunStatus.SUCCEEDED,
              ("server-b", "postgres"): RunStatus.FAILED}
    doomed = expired(a + b, now=NOW, retention_days=30, latest_status=latest)
    assert ids(doomed) == [a[0].id]


def _fields(r: Run) -> dict:
    return {f: getattr(r, f) for f in Run.__dataclass_fields__}
