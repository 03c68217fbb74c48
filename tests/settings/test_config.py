"""Config parsing: defaults from the seed's table, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgbackup_server.domain.errors import ConfigError
from pgbackup_server.settings import build_settings, load_settings, parse_duration

URL = {"database": {"url": "postgresql://app:pw@db.example:5432/my_db"}}
BASE = Path("/srv/backupd")


def build(raw: dict, env: dict | None = None):
    return build_settings(raw, base=BASE, env=env or {})


def errors_of(raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        build(raw)
    return info.value.message


def test_seed_defaults():
    cfg = build(URL)
    b = cfg.backup
    assert b.enabled is False  # the seed's table
    assert b.directory == BASE / "backups"
    assert (b.retention_days, b.cleanup_old, b.compress_backup) == (30, True, False)
    assert b.allowed_directories == (BASE / "backups",)
    assert b.timeout_seconds == 6 * 3600
    assert (b.max_concurrent, b.max_queued, b.retention_min_keep) == (1, 10, 1)
    assert cfg.server.grpc_address == "127.0.0.1:50051"
    assert cfg.server.http_address == "127.0.0.1:8000"
    assert cfg.store_url == f"sqlite:///{BASE / 'data' / 'backupd.sqlite3'}"
    assert (cfg.log.level, cfg.log.format) == ("info", "console")
    assert cfg.scheduler.timezone == "UTC"


def test_database_url_env_overrides_and_password_is_redacted():
    cfg = build(URL, env={"DATABASE_URL": "postgresql://u:hunter2@other:6543/prod"})
    assert cfg.database.dbname == "prod"
    assert "hunter2" not in cfg.database.redacted_url
    assert "***" in cfg.database.redacted_url


def test_seed_schedule_entry():
    cfg = build({**URL, "scheduler": {"timezone": "Asia/Jakarta"},
                 "schedules": [{"cron": "0 2 * * *", "job": "DatabaseBackup",
                                "isEnabled": True}]})
    (s,) = cfg.schedules
    assert (s.cron, s.job, s.enabled, s.name) == ("0 2 * * *", "DatabaseBackup", True,
                                                  "schedule-0")


def test_all_errors_are_reported_together_with_paths():
    text = errors_of({"backup": {"retentionDays": "thirty", "cleanupOld": "yes",
                                 "maxConcurrent": 0},
                      "log": {"level": "loud"}, "extra": True})
    assert 'backup.retentionDays: expected an integer >= 1, got "thirty"' in text
    assert 'backup.cleanupOld: expected true or false, got "yes"' in text
    assert "backup.maxConcurrent: expected an integer from 1 to 64, got 0" in text
    assert 'log.level: expected debug, info, warning or error, got "loud"' in text
    assert "extra: unknown key" in text
    assert "database.url: required" in text


@pytest.mark.parametrize(("raw", "needle"), [
    ({"database": {"url": "postgresql://h:notaport/db"}}, "database.url"),
    ({"database": "postgres://x"}, "database: expected a mapping"),
    ({**URL, "schedules": {"cron": "0 2 * * *"}}, "schedules: expected a list"),
    ({**URL, "schedules": [{"cron": "0 2 * * *", "job": "DatabaseBackup", "name": "a"},
                           {"cron": "0 3 * * *", "job": "DatabaseBackup", "name": "a"}]},
     'the name "a" is used twice'),
    ({**URL, "backup": {"timeout": "forever"}}, "backup.timeout: expected a duration"),
    ({**URL, "backup": {"compression": "brotli"}}, "backup.compression"),
    ({**URL, "backup": {"directory": "bad\x00dir"}}, "backup.directory: expected a path"),
    ({**URL, "server": {"grpcAddress": "localhost"}}, "server.grpcAddress: expected HOST:PORT"),
    ({**URL, "backup": {"allowedDirectories": "/tmp"}}, "backup.allowedDirectories"),
])
def test_bad_values_name_the_key(raw, needle):
    assert needle in errors_of(raw)


def test_durations():
    assert parse_duration("6h") == 21600
    assert parse_duration("90m") == 5400
    assert parse_duration(45) == 45
    for bad in ("0s", "-1h", "soon", True, None, "1y"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_load_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("backup: [unclosed")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_settings(bad)
    rel = tmp_path / "ok.yaml"
    rel.write_text("database: {url: 'postgresql://u@h/db'}\nbackup: {directory: b}\n")
    assert load_settings(rel, env={}).backup.directory == tmp_path / "b"


def test_repository_config_yaml_is_valid():
    cfg = load_settings(Path(__file__).resolve().parents[2] / "config.yaml", env={})
    assert cfg.schedules[0].cron == "0 2 * * *"
    assert cfg.scheduler.timezone == "Asia/Jakarta"
