"""Alerts, notifications and health end to end: a real backupd (gRPC, real
PostgreSQL and pg_dump), a local HTTP server for webhooks, a local SMTP server
(aiosmtpd) for e-mail, and an injected clock instead of waiting."""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import DB, PASSWORD, ManualClock, Running, serve_metrics
from grpc_health.v1 import health_pb2, health_pb2_grpc
from probes import scrape, value
from test_notify import Inbox, Receiver, smtp_server

from pgbackup_client import BackupClientError
from pgbackup_server.observability.setup import HealthMonitor, Observability, start_observability
from pgbackup_server.persistence import open_store
from pgbackup_server.postgres.embedded import EmbeddedPostgres
from pgbackup_server.transport.grpc.server import SERVICE_NAME

T0 = datetime(2024, 1, 15, 2, 0, tzinfo=UTC)
HOOK_SECRET = "whsec-test-0123"


def observe(stack: Running, clock: Any = None, **kwargs: Any) -> tuple[Observability,
                                                                      list[bool]]:
    """start_observability as app.py wires it: set_serving drives gRPC health."""
    statuses: list[bool] = []

    def set_serving(ok: bool) -> None:
        statuses.append(ok)
        status = (health_pb2.HealthCheckResponse.SERVING if ok
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", SERVICE_NAME):
            stack.app.grpc.health.set(name, status)

    # Replace the app's own observability with one on the test's clock and channels.
    stack.app.observability.stop()
    obs = start_observability(stack.app.settings, stack.app.events, stack.app.store.runs,
                              stack.app.store.alerts, set_serving,
                              clock or stack.app.clock, **kwargs)
    return obs, statuses


@pytest.fixture
def observed() -> Iterator[list[Observability]]:
    started: list[Observability] = []
    yield started
    for obs in started:
        obs.stop()


def grpc_health(stack: Running) -> int:
    with grpc.insecure_channel(stack.grpc_address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME),
                              timeout=10).status)


def poll(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


# -- stale backups --------------------------------------------------------------


def test_stale_backup_alert_fires_once_and_resolves_once(start_app, observed, monkeypatch):
    monkeypatch.setenv("BACKUP_HOOK_SECRET", HOOK_SECRET)
    receiver = Receiver()
    clock = ManualClock(T0)
    try:
        stack = start_app(clock=clock, envoy=False,
                          alerts={"maxAge": "26h", "checkInterval": "1h"},
                          notifications=[{"type": "webhook", "url": receiver.url,
                                          "events": ["stale"],
                                          "secretEnv": "BACKUP_HOOK_SECRET"}])
        client = stack.client()
        first = client.create_backup().backup  # the last success, about to get old
        obs, _ = observe(stack, clock)
        observed.append(obs)

        clock.advance(hours=26)
        obs.alerts.check()
        assert obs.notifier.flush() and receiver.requests == []
        clock.advance(hours=1)
        for _ in range(3):  # checks go on; the alert is not repeated
            obs.alerts.check()
            clock.advance(minutes=30)
        assert obs.notifier.flush()
        ((headers, body),) = receiver.requests
        digest = hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["x-backup-signature"] == f"sha256={digest}"
        (alert,) = receiver.json()
        assert alert == {
            "event": "stale", "status": "firing", "alert_key": f"stale/{DB}",
            "database": DB, "target": DB, "since": "2024-01-16T04:00:00Z",
            "time": "2024-01-16T05:00:00Z",
            "last_success_time": "2024-01-15T02:00:00Z", "age_seconds": 27 * 3600,
            "max_age_seconds": 26 * 3600.0, "host": socket.gethostname(),
            "message": f"No successful backup of {DB} in the last 26h (maxAge): the "
                       f"newest finished at 2024-01-15T02:00:00Z, 27h ago"}
        assert first.finished_at == T0
        assert value(scrape(serve_metrics(obs)), "backup_alerts_firing", alert="stale") == 1

        second = client.create_backup().backup  # a new success resolves it at once
        obs.alerts.check()
        clock.advance(hours=1)
        obs.alerts.check()
        assert obs.notifier.flush()
        firing, resolved = receiver.json()
        assert resolved["event"] == "stale" and resolved["status"] == "resolved"
        assert resolved["alert_key"] == firing["alert_key"]
        assert resolved["since"] == firing["since"]
        assert resolved["run_id"] == second.id and resolved["file_path"] == second.file_path
        assert resolved["time"] == "2024-01-16T06:30:00Z"
        assert value(scrape(serve_metrics(obs)), "backup_alerts_firing", alert="stale") == 0
    finally:
        receiver.close()


# -- failure e-mail ---------------------------------------------------------------


def test_failure_email_names_database_error_and_time(pg: EmbeddedPostgres, start_app,
                                                     observed):
    inbox = Inbox()
    controller, port = smtp_server(inbox)
    clock = ManualClock(T0)
    try:
        stack = start_app(clock=clock, envoy=False,
                          database={"url": pg.url(DB, password="wrong-password-9")},
                          notifications=[{"type": "email", "host": "127.0.0.1", "port": port,
                                          "security": "none", "from": "backupd@example.com",
                                          "to": ["dba@example.com"], "events": ["failure"]}])
        obs, _ = observe(stack, clock)
        observed.append(obs)
        with pytest.raises(BackupClientError, match="password authentication failed"):
            stack.client().create_backup()
        assert obs.notifier.flush()
    finally:
        controller.stop()
    ((sender, rcpts, msg),) = inbox.messages
    assert (sender, rcpts) == ("backupd@example.com", ["dba@example.com"])
    assert msg["Subject"] == f"[backupd] failure: {DB}"
    body = msg.get_payload(decode=True).decode()
    assert f"database: {DB}" in body
    assert "password authentication failed" in body
    assert "time: 2024-01-15T02:00:00Z" in body
    assert "wrong-password-9" not in body and PASSWORD not in body
    assert value(scrape(serve_metrics(obs)), "backup_notifications_sent_total",
                 channel="email[0]") == 1


def test_a_hanging_webhook_neither_fails_nor_delays_a_backup(start_app, observed):
    black_hole = socket.socket()
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen(8)  # accepts connections, never answers
    url = f"http://127.0.0.1:{black_hole.getsockname()[1]}/hook"
    try:
        stack = start_app(envoy=False, notifications=[
            {"type": "webhook", "url": url, "events": ["success"], "timeout": "2s",
             "retries": 1}])
        obs, _ = observe(stack, notify_sleep=lambda s: None)
        observed.append(obs)
        result = stack.client().create_backup()
        assert result.backup.status == "SUCCEEDED"
        assert obs.notifier.errors == {"webhook[0]": 0}  # still trying: the backup did not wait
        assert obs.notifier.flush(30)
        m = scrape(serve_metrics(obs))
        assert value(m, "backup_notification_errors_total", channel="webhook[0]") == 1
        assert value(m, "backup_runs_total", database=DB, status="succeeded",
                     trigger="manual") == 1
    finally:
        black_hole.close()


# -- health -----------------------------------------------------------------------


@contextmanager
def unwritable(path: Path) -> Iterator[None]:
    """Make ``path`` refuse new files, also for root (who ignores modes)."""
    if os.geteuid() != 0:
        path.chmod(0o500)
        try:
            yield
        finally:
            path.chmod(0o700)
        return
    chattr = shutil.which("chattr")
    if not chattr or subprocess.run([chattr, "+i", str(path)], capture_output=True,
                                    check=False).returncode != 0:
        pytest.skip("running as root, and chattr +i does not work on this file system")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


def test_health_flips_when_the_backup_directory_becomes_unwritable(start_app, observed):
    stack = start_app(envoy=False)
    stack.backup_dir.mkdir(mode=0o700, exist_ok=True)
    obs, statuses = observe(stack, background=False)
    observed.append(obs)
    assert statuses == [True]
    assert grpc_health(stack) == health_pb2.HealthCheckResponse.SERVING
    with unwritable(stack.backup_dir):
        report = obs.check_health()
        assert not report.serving
        assert "is not writable" in report.problems[0]
        assert grpc_health(stack) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert value(scrape(serve_metrics(obs)), "backup_healthy") == 0
        obs.check_health()
    assert obs.check_health().serving
    assert statuses == [True, False, True]  # changes only
    assert grpc_health(stack) == health_pb2.HealthCheckResponse.SERVING
    assert list(stack.backup_dir.iterdir()) == []  # the probe cleans up


def test_health_monitor_thread_notices_a_directory_replaced_by_a_file(start_app, observed):
    stack = start_app(envoy=False)
    obs, statuses = observe(stack, health_interval=0.1)
    observed.append(obs)
    assert statuses == [True]  # not created yet, but creatable: fine
    stack.backup_dir.parent.mkdir(parents=True, exist_ok=True)
    stack.backup_dir.write_text("oops")
    try:
        assert poll(lambda: grpc_health(stack) == health_pb2.HealthCheckResponse.NOT_SERVING)
        assert obs.health.last is not None
        assert "is not a directory" in obs.health.last.problems[0]
    finally:
        stack.backup_dir.unlink()
    assert poll(lambda: grpc_health(stack) == health_pb2.HealthCheckResponse.SERVING)
    assert statuses == [True, False, True]


def test_health_reports_an_unusable_store(pg: EmbeddedPostgres, tmp_path):
    """A run store in PostgreSQL whose database disappears, then comes back."""
    name = "obs_health_store"
    pg.psql(f'DROP DATABASE IF EXISTS "{name}"')
    pg.create_database(name)
    url = pg.url(name).replace("postgresql://", "postgresql+psycopg://", 1)
    store = open_store(url).runs
    statuses: list[bool] = []
    monitor = HealthMonitor(store, tmp_path / "backups", statuses.append)
    try:
        assert monitor.check().serving
        pg.psql(f'DROP DATABASE "{name}" WITH (FORCE)')
        report = monitor.check()
        assert not report.serving and report.problems[0].startswith("run store unusable")
        pg.create_database(name)
        open_store(url).runs.close()  # recreates the tables
        assert monitor.check().serving
        assert statuses == [True, False, True]
    finally:
        store.close()
        pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
