"""The alert state machine, with a real SQLite run store and an injected clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import ManualClock

from pgbackup_server.domain.durations import human_duration
from pgbackup_server.domain.models import Run, Trigger
from pgbackup_server.observability.alerts import AlertManager, subject_of
from pgbackup_server.persistence import open_store
from pgbackup_server.settings import build_settings

T0 = datetime(2024, 1, 15, 2, 0, tzinfo=UTC)


class Env:
    def __init__(self, tmp_path: Path, **overrides: Any) -> None:
        raw: dict[str, Any] = {
            "database": {"url": "postgresql://u@127.0.0.1:5432/shop"},
            "backup": {"directory": str(tmp_path / "backups")},
            "server": {"dataDirectory": str(tmp_path / "data")},
            "alerts": {"maxAge": "26h"},
            "schedules": [{"name": "nightly", "cron": "0 2 * * *", "job": "DatabaseBackup"}]}
        raw.update(overrides)
        raw = {k: v for k, v in raw.items() if v is not None}
        self.config = build_settings(raw, base=tmp_path, env={})
        self.tmp = tmp_path
        self.stores = open_store(f"sqlite:///{tmp_path / 'runs.sqlite3'}")
        self.store = self.stores.runs
        self.clock = ManualClock(T0)
        self.sent: list[dict[str, Any]] = []

    def manager(self) -> AlertManager:
        return AlertManager(self.config, self.store, self.clock, self.sent.append,
                            state=self.stores.alerts, host="testhost")

    def success(self, *, at: datetime | None = None, schedule: str = "",
                with_file: bool = True, database: str = "shop", target: str = "") -> Run:
        at = at or self.clock()
        run = self.store.create_run(database=database, backup_dir=str(self.tmp), queued_at=at,
                                    trigger=Trigger.SCHEDULE if schedule else Trigger.MANUAL,
                                    schedule=schedule, target=target)
        path = self.tmp / f"backup_{database}_{run.id}.sql"
        if with_file:
            path.write_text("-- dump\n")
        self.store.mark_succeeded(run.id, finished_at=at, file_path=str(path), size_bytes=8,
                                  sha256="0" * 64)
        return self.store.get(run.id)

    def failure(self, *, schedule: str = "", database: str = "shop", target: str = "") -> Run:
        run = self.store.create_run(database=database, backup_dir=str(self.tmp),
                                    queued_at=self.clock(), trigger=Trigger.SCHEDULE,
                                    schedule=schedule, target=target)
        self.store.mark_failed(run.id, finished_at=self.clock(), error="boom")
        return self.store.get(run.id)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def test_fresh_install_turns_stale_max_age_after_start_once(env):
    am = env.manager()
    am.check()
    assert env.sent == []  # a fresh install is not stale at once
    env.clock.advance(hours=26)
    am.check()
    assert env.sent == []
    env.clock.advance(seconds=1)
    am.check()
    am.check()
    env.clock.advance(hours=5)
    am.check()
    (alert,) = env.sent
    assert alert["event"] == "stale" and alert["status"] == "firing"
    assert alert["alert_key"] == "stale/shop" and alert["database"] == "shop"
    assert alert["last_success_time"] is None
    assert alert["since"] == "2024-01-16T04:00:00Z"  # start + maxAge
    assert alert["time"] == "2024-01-16T04:00:01Z"
    assert "none at all since tracking began at 2024-01-15T02:00:00Z" in alert["message"]
    assert am.firing_counts()["stale"] == 1


def test_failed_runs_do_not_count_and_a_success_resolves_once(env):
    env.success(at=T0 - timedelta(hours=30))
    am = env.manager()
    env.failure()
    am.check()
    am.check()
    assert [(a["event"], a["status"]) for a in env.sent] == [("stale", "firing")]
    assert env.sent[0]["last_success_time"] == "2024-01-13T20:00:00Z"
    assert env.sent[0]["age_seconds"] == 30 * 3600
    run = env.success()
    am.on_run_finished(run)
    am.on_run_finished(run)
    am.check()
    assert [(a["event"], a["status"]) for a in env.sent] == [("stale", "firing"),
                                                             ("stale", "resolved")]
    resolved = env.sent[1]
    assert resolved["alert_key"] == "stale/shop" and resolved["run_id"] == run.id
    assert resolved["since"] == env.sent[0]["since"] and resolved["host"] == "testhost"
    assert am.active() == {}


def test_a_success_whose_file_is_gone_is_no_backup(env):
    env.success(at=T0 - timedelta(hours=1), with_file=False)
    env.clock.advance(hours=27)
    am = env.manager()
    am.check()
    (alert,) = env.sent
    assert "has no backup file any more" in alert["message"]


def test_fresh_backup_means_no_alert(env):
    env.success(at=T0 - timedelta(hours=25))
    am = env.manager()
    am.check()
    assert env.sent == []
    env.clock.advance(hours=1, seconds=1)
    am.check()
    assert len(env.sent) == 1


def test_without_max_age_there_is_no_stale_alert(tmp_path):
    env = Env(tmp_path, alerts={})
    am = env.manager()
    env.clock.advance(days=30)
    am.check()
    assert env.sent == []


def test_state_survives_a_restart_without_repeating(env):
    am = env.manager()
    env.clock.advance(hours=20)
    am = env.manager()  # restart: tracking still counts from the first start
    env.clock.advance(hours=7)
    am.check()
    assert len(env.sent) == 1
    am = env.manager()  # restart while firing: not sent again
    am.check()
    assert len(env.sent) == 1
    am.on_run_finished(env.success())  # and still resolved by the new process
    assert [a["status"] for a in env.sent] == ["firing", "resolved"]
    assert env.manager().active() == {}


def test_missed_fire_fires_once_and_resolves_on_the_schedules_next_success(env):
    am = env.manager()
    missed = T0 - timedelta(days=1)
    am.on_missed_fire("nightly", missed)
    am.on_missed_fire("nightly", missed)
    (alert,) = env.sent
    assert alert["event"] == "missed_schedule" and alert["status"] == "firing"
    assert alert["schedule"] == "nightly" and alert["database"] == "shop"
    assert alert["missed_fire_time"] == "2024-01-14T02:00:00Z"
    am.on_run_finished(env.failure(schedule="nightly"))
    am.on_run_finished(env.success())  # manual: not the schedule
    assert len(env.sent) == 1
    run = env.success(schedule="nightly")
    am.on_run_finished(run)
    assert env.sent[1]["status"] == "resolved" and env.sent[1]["run_id"] == run.id


def test_missed_fire_resolved_after_restart_by_the_store(env):
    env.manager().on_missed_fire("nightly", T0 - timedelta(hours=1))
    env.success(schedule="nightly")  # ran while this process was not listening
    am = env.manager()
    am.check()
    assert [a["status"] for a in env.sent] == ["firing", "resolved"]


def test_verification_failure_fires_and_a_newer_good_backup_resolves(env):
    am = env.manager()
    old, bad, good = env.success(), env.success(), env.success()
    am.on_verification(bad, False, "checksum mismatch")
    am.on_verification(bad, False, "checksum mismatch")
    (alert,) = env.sent
    assert alert["event"] == "verification_failed" and alert["status"] == "firing"
    assert alert["run_id"] == bad.id and alert["error"] == "checksum mismatch"
    am.on_verification(old, True, "")  # older than the bad one: proves nothing
    assert len(env.sent) == 1
    am.on_verification(good, True, "")
    assert env.sent[1]["status"] == "resolved" and env.sent[1]["run_id"] == good.id


def test_the_state_of_backupd_0_1_0_is_imported_once(env, tmp_path):
    """alerts.json of the first release: its firing alerts and tracking dates move into
    the store, so an upgrade neither repeats nor forgets an alert."""
    legacy = tmp_path / "alerts.json"
    since = T0 - timedelta(hours=30)
    legacy.write_text(json.dumps({"version": 1, "tracking_since": {"shop": since.isoformat()},
                                  "alerts": [{"kind": "stale", "subject": "shop",
                                              "since": since.isoformat(),
                                              "details": {"database": "shop"}}]}))
    assert env.stores.alerts.import_legacy(legacy)
    assert not legacy.exists() and legacy.with_name("alerts.json.imported").exists()
    am = env.manager()
    assert "stale/shop" in am.active()
    am.check()
    assert env.sent == []  # already firing before the upgrade: not sent again
    am.on_run_finished(env.success())
    assert [a["status"] for a in env.sent] == ["resolved"]
    assert not env.stores.alerts.import_legacy(legacy)  # once


def test_an_unreadable_legacy_state_file_is_set_aside(env, tmp_path):
    legacy = tmp_path / "alerts.json"
    legacy.write_text("{not json")
    assert not env.stores.alerts.import_legacy(legacy)
    assert legacy.with_name("alerts.json.unreadable").exists()
    am = env.manager()
    am.on_missed_fire("nightly", T0)
    assert len(env.sent) == 1 and "missed_schedule/nightly" in env.manager().active()


def test_targets_have_their_own_max_age_and_all_databases_targets_watch_their_dumps(tmp_path):
    env = Env(tmp_path, database=None, schedules=None, databases=[
        {"name": "shop", "url": "postgresql://u@10.0.0.1:5432/shop", "maxAge": "2h"},
        {"name": "cluster", "url": "postgresql://u@10.0.0.2:5432/postgres",
         "allDatabases": True}])
    am = env.manager()
    for db in ("cluster.a", "cluster.b", "cluster.c", "cluster-globals"):  # one request
        env.success(database=db, target="cluster")
    env.success(database="shop", target="shop")
    # The subject is the run's database, as the API and the metrics name it.
    assert {w.subject for w in am.watched()} == {
        "shop", "cluster-globals", "cluster.a", "cluster.b", "cluster.c"}
    env.clock.advance(hours=2, seconds=1)
    am.check()
    assert [(a["alert_key"], a["status"]) for a in env.sent] == [("stale/shop", "firing")]
    assert env.sent[0]["max_age_seconds"] == 7200

    env.clock.advance(hours=8)  # the next request: b is gone from the server, c fails
    for db in ("cluster.a", "cluster-globals"):
        env.success(database=db, target="cluster")
    env.failure(database="cluster.c", target="cluster")
    env.clock.advance(hours=17)
    am.check()
    keys = [(a["alert_key"], a["status"]) for a in env.sent]
    assert keys == [("stale/shop", "firing"), ("stale/cluster.c", "firing")]
    assert env.sent[1]["database"] == "cluster.c" and env.sent[1]["target"] == "cluster"
    am.on_run_finished(env.success(database="cluster.c", target="cluster"))
    assert env.sent[2]["alert_key"] == "stale/cluster.c" and env.sent[2]["status"] == "resolved"


def test_a_target_named_apart_from_its_database_is_watched_by_its_name(tmp_path):
    env = Env(tmp_path, database=None, schedules=None, databases=[
        {"name": "pg15", "url": "postgresql://u@10.0.0.1:5432/test", "maxAge": "2h",
         "schedules": [{"name": "nightly", "cron": "0 2 * * *", "job": "DatabaseBackup"}]}])
    am = env.manager()
    assert [w.subject for w in am.watched()] == ["pg15"]
    env.success(database="pg15", target="pg15")
    env.clock.advance(hours=1)
    am.check()
    assert env.sent == []  # its backups are found under its name
    am.on_missed_fire("nightly", env.clock())
    assert env.sent[0]["database"] == "pg15" and "of pg15 did not run" in env.sent[0]["message"]
    # A run recorded under the older naming (the PostgreSQL name) keeps a qualified subject.
    assert subject_of("pg15", "test") == "pg15/test"


def test_human_duration():
    assert human_duration(1) == "1s"
    assert human_duration(59) == "59s"
    assert human_duration(5 * 60 + 3) == "5m 3s"
    assert human_duration(90 * 60) == "1h 30m"
    assert human_duration(26 * 3600) == "26h"
    assert human_duration(27 * 3600 + 180) == "27h 3m"
    assert human_duration(76 * 3600 + 180) == "3d 4h"
