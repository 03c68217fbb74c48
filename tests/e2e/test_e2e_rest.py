"""End to end through Envoy: the seed's curl examples, restore, stats, cleanup
and schedules, against real PostgreSQL, pg_dump, SQLite and Envoy."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest
from conftest import (
    DB,
    ManualClock,
    drop_database,
    restore_plain,
    table_fingerprint,
)

NAME = re.compile(r"^backup_shop_\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}(_\d+)?\.sql$")
CUSTOM = "/custom/backup/path"


def curl(*args: str) -> tuple[int, dict]:
    out = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", *args], capture_output=True,
                         text=True, check=True, timeout=120)
    body, _, code = out.stdout.rpartition("\n")
    return int(code), json.loads(body)


@pytest.fixture
def seed_examples(start_app, tmp_path):
    """A stack listening on the seed's port 8000 when free, allowing the seed's
    custom directory, so the examples run verbatim."""
    if shutil.which("curl") is None:
        pytest.skip("curl not installed")
    custom_existed = os.path.exists(CUSTOM)
    try:
        os.makedirs("/custom", exist_ok=True)
    except PermissionError:
        pytest.skip("cannot create /custom (the seed's example directory) as this user")
    created_root = not custom_existed and not os.listdir("/custom")
    import socket

    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 8000)) == 0:
            pytest.skip("port 8000 is taken; the verbatim examples need it")
    stack = start_app(server={"httpAddress": "127.0.0.1:8000"},
                      backup={"allowedDirectories": [CUSTOM]})
    before = set(os.listdir(CUSTOM)) if custom_existed else set()
    yield stack
    stack.app.stop()
    if os.path.isdir(CUSTOM):
        for name in set(os.listdir(CUSTOM)) - before:
            os.unlink(os.path.join(CUSTOM, name))
    if created_root:
        shutil.rmtree("/custom", ignore_errors=True)


def test_seed_curl_examples_verbatim(seed_examples, pg):
    # Create a backup
    code, body = curl("-X", "POST", "http://localhost:8000/api/v1/backup/create")
    assert code == 200, body
    backup = body["backup"]
    assert backup["status"] == "SUCCEEDED"
    assert backup["trigger"] == "MANUAL"
    assert NAME.match(Path(backup["file_path"]).name)
    assert int(backup["size_bytes"]) == os.path.getsize(backup["file_path"]) > 0

    # Get backup statistics
    code, stats = curl("-X", "GET", "http://localhost:8000/api/v1/backup/stats")
    assert code == 200
    for key in ("total_backups", "total_size_bytes", "oldest_backup", "newest_backup",
                "backup_directory"):
        assert key in stats, key
    assert int(stats["total_backups"]) == 1

    # Create backup with custom parameters
    code, body = curl("-X", "POST", "http://localhost:8000/api/v1/backup/create-custom",
                      "-H", "Content-Type: application/json",
                      "-d", '{\n    "backup_dir": "/custom/backup/path",\n'
                            '    "retention_days": 60,\n    "cleanup_old": true\n  }')
    assert code == 200, body
    assert body["backup"]["status"] == "SUCCEEDED"
    assert body["backup"]["backup_dir"] == CUSTOM
    assert Path(body["backup"]["file_path"]).parent == Path(CUSTOM)
    assert stat.S_IMODE(os.stat(CUSTOM).st_mode) == 0o700


def test_backup_restores_to_identical_data(stack, pg):
    status, body = stack.rest("POST", "/api/v1/backup/create")
    assert status == 200, body
    path = Path(body["backup"]["file_path"])
    assert NAME.match(path.name)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    import hashlib

    assert hashlib.sha256(path.read_bytes()).hexdigest() == body["backup"]["sha256"]
    assert body["backup"]["finished_at"] >= body["backup"]["started_at"]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]
    target = "restored_e2e"
    drop_database(pg, target)
    try:
        restore_plain(pg, path, target)
        assert table_fingerprint(pg, target) == table_fingerprint(pg, DB)
        assert "public.orders" in table_fingerprint(pg, target)
    finally:
        drop_database(pg, target)


def test_stats_match_files_on_disk(stack):
    for _ in range(3):
        assert stack.rest("POST", "/api/v1/backup/create")[0] == 200
    status, stats = stack.rest("GET", "/api/v1/backup/stats")
    assert status == 200
    on_disk = [p for p in stack.backup_dir.iterdir()
               if p.is_file() and not p.name.endswith(".manifest.json")]
    assert int(stats["total_backups"]) == len(on_disk) == 3
    assert int(stats["total_size_bytes"]) == sum(p.stat().st_size for p in on_disk)
    assert int(stats["succeeded_runs"]) == 3 and int(stats["failed_runs"]) == 0
    assert stats["backup_directory"] == str(stack.backup_dir)
    assert stats["oldest_backup"] <= stats["newest_backup"]
    # Two backups in the same second never overwrite each other.
    assert len({p.name for p in on_disk}) == 3

    # A file removed by hand is no longer counted once retention reconciles.
    victim = sorted(on_disk)[0]
    victim.unlink()
    assert stack.rest("POST", "/api/v1/backup/cleanup", {})[0] == 200
    stats = stack.rest("GET", "/api/v1/backup/stats")[1]
    assert int(stats["total_backups"]) == 2
    listed = stack.rest("GET", "/api/v1/backups")[1]["backups"]
    assert sum(1 for b in listed if b["file_missing"]) == 1


def test_cleanup_removes_exactly_the_expired_backups(start_app):
    clock = ManualClock()
    stack = start_app(clock=clock, backup={"retentionDays": 7, "cleanupOld": False})
    old = [stack.rest("POST", "/api/v1/backup/create")[1]["backup"] for _ in range(2)]
    clock.advance(days=5)
    middle = stack.rest("POST", "/api/v1/backup/create")[1]["backup"]
    clock.advance(days=3)  # the first two are now 8 days old, the middle one 3
    newest = stack.rest("POST", "/api/v1/backup/create")[1]["backup"]

    status, dry = stack.rest("POST", "/api/v1/backup/cleanup", {"dry_run": True})
    assert status == 200
    assert sorted(dry["files"]) == sorted(b["file_path"] for b in old)
    assert all(os.path.exists(b["file_path"]) for b in old)

    status, done = stack.rest("POST", "/api/v1/backup/cleanup", {})
    assert status == 200
    assert done["deleted_files"] == 2
    assert int(done["freed_bytes"]) == sum(int(b["size_bytes"]) for b in old)
    assert not any(os.path.exists(b["file_path"]) for b in old)
    assert os.path.exists(middle["file_path"]) and os.path.exists(newest["file_path"])
    got = stack.rest("GET", f"/api/v1/backups/{old[0]['id']}")[1]
    assert got["file_deleted"] is True
    stats = stack.rest("GET", "/api/v1/backup/stats")[1]
    assert int(stats["total_backups"]) == 2

    # Far in the future, the newest successful backup is still kept.
    clock.advance(days=365)
    assert stack.rest("POST", "/api/v1/backup/cleanup", {})[1]["deleted_files"] == 1
    assert os.path.exists(newest["file_path"])


def test_cleanup_after_backup_when_cleanup_old(start_app):
    clock = ManualClock()
    stack = start_app(clock=clock, backup={"retentionDays": 1, "cleanupOld": True})
    first = stack.rest("POST", "/api/v1/backup/create")[1]
    assert first["deleted_files"] == 0
    clock.advance(days=2)
    second = stack.rest("POST", "/api/v1/backup/create")[1]
    assert second["deleted_files"] == 1
    assert not os.path.exists(first["backup"]["file_path"])


def test_scheduled_fire_is_recorded_with_trigger_schedule(start_app):
    stack = start_app(schedules=[{"name": "nightly", "cron": "0 2 * * *",
                                  "job": "DatabaseBackup", "isEnabled": True}],
                      scheduler={"timezone": "Asia/Jakarta"})
    status, body = stack.rest("GET", "/api/v1/schedules")
    assert status == 200
    (sched,) = body["schedules"]
    assert sched["cron"] == "0 2 * * *" and sched["timezone"] == "Asia/Jakarta"
    assert sched["enabled"] is True
    assert sched["next_run_time"].endswith("T19:00:00Z")  # 02:00 in Jakarta (UTC+7)

    stack.app.scheduler.run_now("nightly")
    deadline = time.monotonic() + 60
    runs: list = []
    while time.monotonic() < deadline:
        runs = stack.rest("GET", "/api/v1/backups?status=SUCCEEDED")[1]["backups"]
        if runs:
            break
        time.sleep(0.1)
    assert runs, "the scheduled backup did not run"
    assert runs[0]["trigger"] == "SCHEDULE" and runs[0]["schedule"] == "nightly"


def test_background_create_then_poll(stack):
    status, body = stack.rest("POST", "/api/v1/backup/create", {"background": True})
    assert status == 200
    assert body["backup"]["status"] in ("PENDING", "RUNNING", "SUCCEEDED")
    run_id = body["backup"]["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = stack.rest("GET", f"/api/v1/backups/{run_id}")[1]
        if got["status"] in ("SUCCEEDED", "FAILED"):
            break
        time.sleep(0.05)
    assert got["status"] == "SUCCEEDED"


def test_list_pagination_and_filters(stack):
    for _ in range(3):
        stack.rest("POST", "/api/v1/backup/create")
    first = stack.rest("GET", "/api/v1/backups?page_size=2")[1]
    assert len(first["backups"]) == 2 and first["next_page_token"]
    second = stack.rest("GET", f"/api/v1/backups?page_size=2&page_token="
                               f"{first['next_page_token']}")[1]
    assert len(second["backups"]) == 1 and second["next_page_token"] == ""
    ids = [b["id"] for b in first["backups"] + second["backups"]]
    assert ids == sorted(ids, key=int, reverse=True) and len(set(ids)) == 3
    status, err = stack.rest("GET", "/api/v1/backups?database=other")
    assert status == 404 and 'no backups or target named "other"' in err["message"]
    assert stack.rest("GET", "/api/v1/backups?status=FAILED")[1]["backups"] == []
    status, err = stack.rest("GET", "/api/v1/backups?page_token=garbage")
    assert status == 400 and "page_token" in err["message"]


def test_rest_errors(stack):
    status, body = stack.rest("GET", "/api/v1/backups/999999")
    assert status == 404 and "999999" in body["message"]
    # Envoy's own errors have the same JSON shape (more in test_rest_errors.py).
    assert stack.rest("GET", "/api/v1/nope") == (
        404, {"code": 5, "message": "no REST method for GET /api/v1/nope", "details": []})
    status, body = stack.rest("GET", "/api/v1/backup/stats?bogus=1")
    assert status == 400 and body["code"] == 3 and '"bogus"' in body["message"]
    status, body = stack.rest("POST", "/api/v1/backup/create-custom", raw=b"{not json")
    assert status == 400 and body["code"] == 3
    assert body["message"].startswith("malformed JSON body") and "not json" not in body["message"]
