"""Retention applied to a directory, on a real SQLite store and real files (no
pg_dump needed): each target keeps its own policy, also after a backup."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from pgbackup_server.backup.cleanup import Cleaner
from pgbackup_server.domain.targets import Targets
from pgbackup_server.observability.events import EventHub
from pgbackup_server.persistence import open_store
from pgbackup_server.settings import build_settings

NOW = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)


def test_after_a_backup_each_target_keeps_its_own_policy(tmp_path: Path):
    directory = tmp_path / "backups"
    directory.mkdir(mode=0o700)
    settings = build_settings({
        "databases": [{"name": "short", "url": "postgresql://u@h/a",
                       "retention": {"days": 1}},
                      {"name": "long", "url": "postgresql://u@h/b"}],
        "backup": {"directory": str(directory), "retentionDays": 30}},
        base=tmp_path, env={})
    store = open_store(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    rows = []
    for i, (target, age) in enumerate([("short", 3), ("short", 0), ("long", 3), ("long", 2)]):
        when = NOW - timedelta(days=age, minutes=i)
        path = directory / f"backup_{target}_{when:%Y-%m-%d_%H-%M-%S}.sql"
        path.write_text("-- backup\n")
        rows.append({"database": target, "target": target, "status": "SUCCEEDED",
                     "trigger": "SCHEDULE", "backup_dir": str(directory),
                     "file_path": str(path), "size_bytes": 10, "queued_at": when,
                     "started_at": when, "finished_at": when, "file_state": "PRESENT",
                     "present": True})
    store.runs.bulk_insert(rows)
    try:
        cleaner = Cleaner(settings, store.runs, Targets(settings.targets).by_name,
                          EventHub(), lambda: NOW)
        # After a backup of "short": its 1 day never reaches "long"'s 3-day-old backup.
        result = cleaner.after_backup(directory, 1, requested=False)
        assert result.files == (rows[0]["file_path"],)
        decisions = {d.location: d for d in result.decisions}
        assert decisions[rows[2]["file_path"]].reasons == ("within 30 days",)
        assert not Path(rows[0]["file_path"]).exists()
        # A requested directory (create-custom with cleanup_old): the request's days.
        result = cleaner.after_backup(directory, 1, requested=True)
        assert result.files == (rows[2]["file_path"],)
    finally:
        store.close()
