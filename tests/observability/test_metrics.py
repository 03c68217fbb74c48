"""Prometheus metrics, scraped over HTTP from a real backupd and from a bare store."""

from __future__ import annotations

import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import DB, ManualClock, serve_metrics
from probes import scrape, value

from pgbackup_client import BackupClientError
from pgbackup_server.domain.errors import ConfigError
from pgbackup_server.domain.models import Trigger
from pgbackup_server.observability.metrics import Metrics
from pgbackup_server.observability.setup import start_observability
from pgbackup_server.persistence import SqlRunStore, open_store
from pgbackup_server.settings import build_settings
from pgbackup_server.transport.http import HttpEndpoints, endpoints

T0 = datetime(2024, 1, 15, 2, 0, tzinfo=UTC)


def test_metrics_after_a_success_and_a_failure(pg, start_app, tmp_path):
    pg.psql("DROP ROLE IF EXISTS metrics_flaky; CREATE ROLE metrics_flaky LOGIN PASSWORD "
            "'before'; GRANT pg_read_all_data TO metrics_flaky")
    blocked = tmp_path / "blocked"  # an allowed backup directory that is a file
    clock = ManualClock(T0)
    stack = start_app(clock=clock, envoy=False,
                      database={"url": pg.url(DB, user="metrics_flaky", password="before")},
                      backup={"allowedDirectories": [str(blocked)]})
    stack.app.observability.stop()  # replaced by one that runs on the test's clock
    obs = start_observability(stack.app.settings, stack.app.events, stack.app.store.runs,
                              stack.app.store.alerts,
                              lambda ok: None, clock, background=False)
    try:
        client = stack.client()
        before = scrape(serve_metrics(obs))
        for status in ("succeeded", "failed"):
            assert value(before, "backup_runs_total", database=DB, status=status,
                         trigger="manual") == 0
        assert ("backup_last_success_timestamp_seconds", frozenset({("database", DB)})) \
            not in before

        run = client.create_backup().backup
        clock.advance(seconds=90)
        m = scrape(serve_metrics(obs))
        assert value(m, "backup_runs_total", database=DB, status="succeeded",
                     trigger="manual") == 1
        assert value(m, "backup_runs_total", database=DB, status="failed",
                     trigger="manual") == 0
        assert value(m, "backup_size_bytes", database=DB) == run.size_bytes > 0
        assert value(m, "backup_last_success_timestamp_seconds", database=DB) == T0.timestamp()
        assert value(m, "backup_last_success_age_seconds", database=DB) == 90
        assert value(m, "backup_storage_bytes", directory=str(stack.backup_dir)) == run.size_bytes
        assert value(m, "backup_storage_files", directory=str(stack.backup_dir)) == 1
        assert value(m, "backup_duration_seconds_count", database=DB, status="succeeded") == 1
        assert value(m, "backup_in_progress") == 0
        assert value(m, "backup_healthy") == 1
        assert value(m, "backup_directory_free_bytes", directory=str(stack.backup_dir)) > 0

        blocked.write_text("not a directory")
        with pytest.raises(BackupClientError, match="is a regular file"):
            client.create_custom_backup(str(blocked))
        # Refused before anything ran: no run, nothing counted.
        assert value(scrape(serve_metrics(obs)), "backup_runs_total", database=DB,
                     status="failed", trigger="manual") == 0
        assert len(client.list_backups().backups) == 1
        pg.psql("ALTER ROLE metrics_flaky PASSWORD 'after'")  # now the run itself fails
        with pytest.raises(BackupClientError, match="password authentication failed"):
            client.create_backup()
        clock.advance(seconds=10)
        m = scrape(serve_metrics(obs))
        assert value(m, "backup_runs_total", database=DB, status="failed",
                     trigger="manual") == 1
        assert value(m, "backup_runs_total", database=DB, status="succeeded",
                     trigger="manual") == 1
        assert value(m, "backup_last_failure_timestamp_seconds", database=DB) \
            == (T0 + timedelta(seconds=90)).timestamp()
        # The failure changes nothing about the last success, which keeps ageing.
        assert value(m, "backup_last_success_timestamp_seconds", database=DB) == T0.timestamp()
        assert value(m, "backup_last_success_age_seconds", database=DB) == 100
        assert value(m, "backup_size_bytes", database=DB) == run.size_bytes
        assert value(m, "backup_in_progress") == 0

        client.cleanup()  # nothing old enough: retention deletes nothing
        assert value(scrape(serve_metrics(obs)), "backup_retention_deleted_total") == 0
    finally:
        obs.stop()
        stack.app.stop()
        pg.psql("DROP ROLE IF EXISTS metrics_flaky")


# -- without PostgreSQL -----------------------------------------------------------


def make_config(tmp_path: Path, **overrides: Any) -> Any:
    raw: dict[str, Any] = {"database": {"url": "postgresql://u@127.0.0.1:5432/shop"},
                           "backup": {"directory": str(tmp_path / "backups")},
                           "server": {"dataDirectory": str(tmp_path / "data")},
                           "metrics": {"address": "127.0.0.1:0"}}
    raw.update(overrides)
    return build_settings(raw, base=tmp_path, env={})


def add_success(store: SqlRunStore, directory: Path, at: datetime, size: int) -> int:
    run = store.create_run(database="shop", trigger=Trigger.SCHEDULE, backup_dir=str(directory),
                           queued_at=at, schedule="nightly")
    store.mark_running(run.id, started_at=at, temp_path="", format="plain", compression="none",
                       pg_dump_version="18", server_version="18")
    store.mark_succeeded(run.id, finished_at=at + timedelta(seconds=30),
                         file_path=str(directory / f"b{run.id}.sql"), size_bytes=size,
                         sha256="0" * 64)
    return run.id


def test_last_success_is_right_after_a_restart(tmp_path):
    config = make_config(tmp_path)
    store = open_store(f"sqlite:///{tmp_path / 'runs.sqlite3'}").runs
    add_success(store, config.backup.directory, T0, 100)
    add_success(store, config.backup.directory, T0 + timedelta(hours=24), 120)
    add_success(store, tmp_path / "custom", T0, 5)
    clock = ManualClock(T0 + timedelta(hours=25))
    metrics = Metrics(config, store, clock)  # a fresh process over an existing store
    listener = HttpEndpoints(endpoints(metrics.registry), "127.0.0.1:0", key="metrics.address")
    port = listener.start()
    try:
        m = scrape(port)
    finally:
        listener.stop()
    last = (T0 + timedelta(hours=24, seconds=30)).timestamp()
    assert value(m, "backup_last_success_timestamp_seconds", database="shop") == last
    assert value(m, "backup_last_success_age_seconds", database="shop") == 3600 - 30
    assert value(m, "backup_size_bytes", database="shop") == 120
    assert value(m, "backup_storage_bytes", directory=str(config.backup.directory)) == 220
    assert value(m, "backup_storage_bytes", directory=str(tmp_path / "custom")) == 5
    # Counters count this process's events only.
    assert value(m, "backup_runs_total", database="shop", status="succeeded",
                 trigger="schedule") == 0


def test_two_instances_in_one_process_and_only_metrics_path(tmp_path):
    config = make_config(tmp_path)
    store = open_store(f"sqlite:///{tmp_path / 'runs.sqlite3'}").runs
    first, second = Metrics(config, store, ManualClock(T0)), Metrics(config, store,
                                                                      ManualClock(T0))
    listeners = [HttpEndpoints(endpoints(m.registry), "127.0.0.1:0", key="metrics.address")
                 for m in (first, second)]
    ports = listeners[0].start(), listeners[1].start()
    try:
        assert ports[0] != ports[1] and all(ports)
        first.misfires.labels("nightly").inc()
        assert value(scrape(ports[0]), "backup_scheduler_misfires_total", schedule="nightly") == 1
        assert ("backup_scheduler_misfires_total", frozenset({("schedule", "nightly")})) \
            not in scrape(ports[1])
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/", timeout=10)
        assert err.value.code == 404
        err.value.close()
        with pytest.raises(ConfigError, match="metrics.address"):
            HttpEndpoints(endpoints(Metrics(config, store, ManualClock(T0)).registry),
                          f"127.0.0.1:{ports[0]}", key="metrics.address").start()
    finally:
        for listener in listeners:
            listener.stop()
