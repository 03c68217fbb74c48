"""Bad input gets a clear error naming the field and the fix, and leaves no
file and no SUCCEEDED record behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import DB, PASSWORD, base_config


def run_backupd(tmp_path: Path, cfg: dict) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.run([sys.executable, "-m", "pgbackup_server.app", "--config", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"schedules": [{"cron": "61 * * * *", "job": "DatabaseBackup"}]},
         'schedules[0].cron: invalid cron expression "61 * * * *"'),
        ({"schedules": [{"cron": "0 2 * *", "job": "DatabaseBackup"}]},
         "schedules[0].cron: invalid cron expression"),
        ({"schedules": [{"cron": "0 2 * * *", "job": "Vacuum"}]},
         'schedules[0].job: unknown job "Vacuum"; known jobs: DatabaseBackup'),
        ({"scheduler": {"timezone": "Mars/Olympus"}},
         'scheduler.timezone: unknown timezone "Mars/Olympus"'),
        ({"backup": {"retentionDays": "thirty"}},
         'backup.retentionDays: expected an integer >= 1, got "thirty"'),
        ({"backup": {"retentionDay": 3}}, "backup.retentionDay: unknown key"),
        ({"bogus": 1}, "bogus: unknown key"),
        ({"backup": {"pgDumpPath": "/nonexistent/pg_dump"}},
         "backup.pgDumpPath: /nonexistent/pg_dump is not a working pg_dump"),
    ],
)
def test_startup_errors_name_the_entry(pg, tmp_path, change, expected):
    cfg = base_config(pg, tmp_path)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    out = run_backupd(tmp_path, cfg)
    assert out.returncode == 2, out.stderr
    assert expected in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "backups").exists()


def _no_success(stack) -> None:
    assert stack.client().list_backups(status="SUCCEEDED").backups == ()
    backups = stack.backup_dir
    assert not backups.exists() or list(backups.iterdir()) == []


def test_backup_dir_outside_allowed_roots_is_refused(stack, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    status, body = stack.rest("POST", "/api/v1/backup/create-custom",
                              {"backup_dir": str(elsewhere), "retention_days": 60})
    assert status == 403
    assert str(stack.backup_dir) in body["message"]  # names the allowed roots
    assert "backup.allowedDirectories" in body["message"]
    assert not elsewhere.exists()
    _no_success(stack)


def test_dotdot_traversal_and_symlink_escape_are_refused(stack, tmp_path):
    stack.backup_dir.mkdir(mode=0o700)
    status, _ = stack.rest("POST", "/api/v1/backup/create-custom",
                           {"backup_dir": f"{stack.backup_dir}/../../etc"})
    assert status == 403
    (stack.backup_dir / "link").symlink_to(tmp_path)
    status, _ = stack.rest("POST", "/api/v1/backup/create-custom",
                           {"backup_dir": str(stack.backup_dir / "link")})
    assert status == 403
    assert [p.name for p in stack.backup_dir.iterdir()] == ["link"]
    assert stack.client().list_backups().backups == ()


def test_inside_allowed_root_subdirectory_is_created_private(stack):
    sub = stack.backup_dir / "team-a" / "nightly"
    status, body = stack.rest("POST", "/api/v1/backup/create-custom",
                              {"backup_dir": f"{stack.backup_dir}/x/../team-a/nightly"})
    assert status == 200, body
    assert Path(body["backup"]["file_path"]).parent == sub
    assert oct(sub.stat().st_mode & 0o777) == oct(0o700)
    assert oct((stack.backup_dir / "team-a").stat().st_mode & 0o777) == oct(0o700)


@pytest.mark.parametrize("value", [-1, -60, 100000])
def test_bad_retention_days_is_invalid_argument(stack, value):
    status, body = stack.rest("POST", "/api/v1/backup/create-custom",
                              {"backup_dir": str(stack.backup_dir), "retention_days": value})
    assert status == 400
    assert "retention_days" in body["message"]
    _no_success(stack)


def test_wrong_password_fails_the_run_without_leaking(pg, start_app):
    wrong = "not-the-password-42"
    stack = start_app(database={"url": pg.url(DB, password=wrong)})
    status, body = stack.rest("POST", "/api/v1/backup/create")
    assert status == 503
    assert "password authentication failed" in body["message"]
    assert wrong not in body["message"] and PASSWORD not in body["message"]
    (run,) = stack.client().list_backups().backups
    assert run.status == "FAILED" and "password authentication failed" in run.error
    _no_success(stack)


def test_unreachable_database_fails_the_run(pg, start_app):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connection refused
        stack = start_app(database={"url": f"postgresql://postgres:x@127.0.0.1:{port}/{DB}"})
        status, body = stack.rest("POST", "/api/v1/backup/create")
    assert status == 503
    assert "Connection refused" in body["message"] or "connection refused" in body["message"]
    stats = stack.rest("GET", "/api/v1/backup/stats")[1]
    assert int(stats["failed_runs"]) == 1 and int(stats["total_backups"]) == 0
    assert "refused" in stats["last_failure"]["error"].lower()
    _no_success(stack)


def test_client_older_than_server_fails_with_both_versions(pg, start_app):
    old = "/usr/lib/postgresql/15/bin/pg_dump"
    if not os.access(old, os.X_OK):
        pytest.skip("no PostgreSQL 15 pg_dump on this machine")
    stack = start_app(backup={"pgDumpPath": old})
    status, body = stack.rest("POST", "/api/v1/backup/create")
    assert status == 400  # FAILED_PRECONDITION
    assert "server version 18." in body["message"]
    assert "15." in body["message"] and old in body["message"]
    _no_success(stack)


def _pg15_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _pg15_available(), reason="no PostgreSQL on 127.0.0.1:5432")
def test_older_server_is_dumped_by_a_matching_client(start_app):
    stack = start_app(database={"url": "postgresql://postgres@127.0.0.1:5432/test"})
    status, body = stack.rest("POST", "/api/v1/backup/create")
    assert status == 200, body
    backup = body["backup"]
    server_major = int(backup["server_version"].split(".")[0])
    assert int(backup["pg_dump_version"].split(".")[0]) >= server_major
    assert "PostgreSQL database dump complete" in Path(backup["file_path"]).read_text()[-400:]
