"""Failure paths found in review, each produced for real."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import DB, PASSWORD

from pgbackup_client import BackupClientError
from pgbackup_server.backup.dump import DumpProcess
from pgbackup_server.backup.plan import plan_dump
from pgbackup_server.domain.errors import ConfigError
from pgbackup_server.domain.models import DumpFormat, Trigger
from pgbackup_server.persistence import open_store
from pgbackup_server.postgres.binaries import discover
from pgbackup_server.postgres.conninfo import ConnInfo
from pgbackup_server.settings import build_settings


def test_a_failing_progress_callback_never_breaks_a_backup(pg, tmp_path):
    binary = next(b for b in discover(None) if b.major >= 18)
    plan = plan_dump(binary, format=DumpFormat.PLAIN, compression=None, compress_backup=False,
                     supports=lambda *_: False)
    conninfo = ConnInfo.of({"host": "127.0.0.1", "port": str(pg.port), "user": "postgres",
                            "password": PASSWORD, "dbname": DB})

    def broken(_seen: int) -> None:
        raise RuntimeError("store unavailable")

    out = DumpProcess(plan, conninfo, str(tmp_path)).run(tmp_path, "backup_shop_x", 1, 60,
                                                         on_progress=broken)
    assert out.path.exists() and out.size_bytes > 0


def test_postgresql_as_the_run_store(pg, start_app):
    pg.psql("DROP DATABASE IF EXISTS runstore")
    pg.create_database("runstore")
    try:
        url = pg.url("runstore").replace("postgresql://", "postgresql+psycopg://")
        stack = start_app(store={"url": url})
        client = stack.client()
        ok = client.create_backup().backup
        assert ok.status == "SUCCEEDED"
        stats = client.get_stats()
        assert (stats.total_backups, stats.succeeded_runs) == (1, 1)
        assert stats.last_success is not None and stats.last_success.id == ok.id
        stack.app.stop()
    finally:
        pg.psql("DROP DATABASE IF EXISTS runstore WITH (FORCE)")


def test_restart_after_a_crash_during_a_directory_backup(pg, start_app, tmp_path):
    backups = tmp_path / "backups"
    backups.mkdir(mode=0o700)
    data = tmp_path / "data"
    store = open_store(f"sqlite:///{data / 'backupd.sqlite3'}").runs
    run = store.create_run(database=DB, trigger=Trigger.SCHEDULE, backup_dir=str(backups),
                           queued_at=datetime.now(UTC), target=DB)
    temp = backups / f".backup_{DB}_2026-01-01_00-00-00.dir.run{run.id}.partial"
    temp.mkdir()
    (temp / "toc.dat").write_bytes(b"x")
    store.mark_running(run.id, started_at=datetime.now(UTC), temp_path=str(temp),
                       format="directory", compression="none", pg_dump_version="18.6",
                       server_version="18.6")
    store.close()
    (data / "run").mkdir(parents=True, exist_ok=True)
    (data / "run" / "pgpass-leftover").write_text("*:*:*:*:secret\n")
    stack = start_app(backup={"format": "directory"})
    got = stack.client().get_backup(run.id)
    assert got.status == "FAILED" and "interrupted" in got.error
    assert not temp.exists()
    assert not (data / "run" / "pgpass-leftover").exists()
    assert stack.client().create_backup().backup.status == "SUCCEEDED"


def test_all_databases_on_an_unreachable_server_records_a_failed_run(start_app):
    stack = start_app(database=None, schedules=None, databases=[
        {"name": "gone", "url": "postgresql://postgres:pw@127.0.0.1:1/postgres",
         "allDatabases": True,
         "schedules": [{"name": "gone-nightly", "cron": "0 2 * * *", "job": "DatabaseBackup"}]}])
    stack.app.service.run_scheduled("gone-nightly", "gone")
    (run,) = stack.client().list_backups().backups
    assert run.status == "FAILED" and run.trigger == "SCHEDULE"
    assert "cannot list the server's databases" in run.error
    assert "pw" not in run.error.replace("postgres", "")


def test_password_from_pgpassfile_reaches_pg_dump(pg, start_app, tmp_path, monkeypatch):
    passfile = tmp_path / "pgpass"
    escaped = PASSWORD.replace("\\", "\\\\").replace(":", "\\:")
    passfile.write_text(f"*:*:*:postgres:{escaped}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    stack = start_app(database={"url": f"postgresql://postgres@127.0.0.1:{pg.port}/{DB}"})
    assert stack.client().create_backup().backup.status == "SUCCEEDED"


@pytest.mark.parametrize("url", ["postgresql://u:my secret@h/db", "host=h password='unclosed",
                                 "postgresql://u:p@ss@h/db"])
def test_bad_database_url_errors_never_echo_the_password(url, tmp_path):
    with pytest.raises(ConfigError) as info:
        build_settings({"database": {"url": url}}, base=tmp_path, env={})
    text = info.value.message
    assert "database.url" in text
    for secret in ("my secret", "unclosed", "p@ss"):
        assert secret not in text


def test_overlong_path_component_is_invalid_argument(stack):
    status, body = stack.rest("POST", "/api/v1/backup/create-custom",
                              {"backup_dir": f"{stack.backup_dir}/{'x' * 300}"})
    assert status == 400 and "longer than 255 bytes" in body["message"]
    assert stack.client().list_backups().backups == ()


def test_reconcile_leaves_backups_of_an_absent_directory_alone(start_app, tmp_path):
    stack = start_app()
    run = stack.client().create_backup().backup
    moved = tmp_path / "unmounted"
    os.rename(stack.backup_dir, moved)  # the volume is not mounted
    stack.app.service.cleaner.reconcile()
    os.rename(moved, stack.backup_dir)
    assert not stack.client().get_backup(run.id).file_missing
    assert stack.client().get_stats().total_backups == 1


def test_bad_store_url_is_a_clear_startup_error(pg, tmp_path):
    import subprocess
    import sys

    import yaml
    from conftest import base_config

    cfg = base_config(pg, tmp_path)
    cfg["store"] = {"url": "nosuchdb://user:hunter2@h/x"}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run([sys.executable, "-m", "pgbackup_server", "--config", str(path)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    assert "store.url: cannot open" in out.stderr and "Traceback" not in out.stderr
    assert "hunter2" not in out.stderr


def test_failed_sync_create_is_an_error_not_a_success(pg, start_app):
    stack = start_app(database={"url": pg.url(DB, password="nope")})
    with pytest.raises(BackupClientError):
        stack.client().create_backup()
    assert Path(stack.backup_dir).exists() is False or not list(stack.backup_dir.iterdir())


def test_a_scheduled_run_cut_short_by_a_crash_is_caught_up(start_app, tmp_path):
    from datetime import timedelta

    from procs import wait_for

    now = datetime.now(UTC)
    fire = now.replace(second=0, microsecond=0) - timedelta(minutes=now.minute % 5)
    if now - fire < timedelta(seconds=5):
        fire -= timedelta(minutes=5)
    store = open_store(f"sqlite:///{tmp_path / 'data' / 'backupd.sqlite3'}").runs
    run = store.create_run(database=DB, trigger=Trigger.SCHEDULE,
                           backup_dir=str(tmp_path / "backups"),
                           queued_at=fire + timedelta(seconds=1), schedule="five", target=DB)
    store.mark_running(run.id, started_at=fire + timedelta(seconds=1), temp_path="",
                       format="plain", compression="none", pg_dump_version="18.6",
                       server_version="18.6")
    store.close()
    stack = start_app(schedules=[{"name": "five", "cron": "*/5 * * * *",
                                  "job": "DatabaseBackup"}])
    client = stack.client()
    assert "interrupted" in client.get_backup(run.id).error
    redo = wait_for(lambda: [b for b in client.list_backups(status="SUCCEEDED").backups
                             if b.schedule == "five"], timeout=60)
    assert redo[0].trigger == "SCHEDULE"
