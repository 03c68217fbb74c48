"""One dump, every copy: streamed once to each destination of the target; each copy
recorded; a failed copy retried, then FAILED with its reason, alerted and counted;
the run SUCCEEDED only when every required destination holds its copy."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from pgbackup_client import BackupClientError
from pgbackup_client.cli import main as backupctl

from .helpers import bad_credentials, copies_of, metric, s3_entry


def _object(s3, bucket: str, key: str) -> bytes:
    return s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def test_one_dump_is_stored_locally_and_in_s3_with_manifests(start_with, s3, tmp_path,
                                                            capsys):
    bucket = s3.make_bucket()
    local = tmp_path / "local"
    app = start_with([{"name": "local", "url": local.as_uri()},
                      s3_entry(s3, "offsite", f"{bucket}/pg")],
                     backup={"compression": "zstd:1", "compressBackup": True})
    backup = app.client().create_backup().backup
    assert backup.status == "SUCCEEDED", backup.error
    copies = copies_of(backup)
    assert {n: c.state for n, c in copies.items()} == {"local": "SUCCEEDED",
                                                       "offsite": "SUCCEEDED"}
    name = copies["local"].location
    assert name.endswith(".sql.zst") and copies["offsite"].location == name
    data = (local / name).read_bytes()
    assert _object(s3, bucket, f"pg/{name}") == data
    assert hashlib.sha256(data).hexdigest() == backup.sha256 == copies["offsite"].sha256
    assert backup.file_path == str(local / name) and backup.size_bytes == len(data)
    assert oct((local / name).stat().st_mode & 0o777) == "0o600"
    manifest = json.loads(_object(s3, bucket, f"pg/{name}.manifest.json"))
    assert (manifest["sha256"], manifest["database"]) == (backup.sha256, backup.database)
    assert (local / f"{name}.manifest.json").exists()

    stats = {d.name: d for d in app.client().get_stats().destinations}
    assert (stats["offsite"].copies, stats["offsite"].used_bytes) == (1, len(data))
    assert stats["offsite"].newest.backup_id == backup.id
    found = {d.name: d for d in app.client().list_destinations()}
    assert found["offsite"].copies == 1 and found["offsite"].newest.backup_id == backup.id

    assert backupctl(["--address", app.grpc_address, "show", str(backup.id)]) == 0
    assert "offsite: SUCCEEDED" in capsys.readouterr().out


def test_s3_only_writes_no_local_file(start_with, s3, tmp_path):
    bucket = s3.make_bucket()
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("backup.directory lies below a file: nothing can be written there")
    app = start_with([s3_entry(s3, "offsite", bucket)],
                     backup={"directory": str(blocker / "backups")})
    backup = app.client().create_backup().backup
    assert backup.status == "SUCCEEDED", backup.error
    (copy,) = backup.copies
    assert copy.state == "SUCCEEDED"
    assert backup.file_path == f"s3://{bucket}/{copy.location}"
    assert s3.keys(bucket) == [copy.location, f"{copy.location}.manifest.json"]
    assert b"CREATE TABLE" in _object(s3, bucket, copy.location)
    assert app.client().get_backup(backup.id).file_missing is False


def test_an_optional_copy_that_fails_is_recorded_alerted_and_counted(start_with, s3,
                                                                     tmp_path, sleeps):
    app = start_with([{"name": "local", "url": (tmp_path / "local").as_uri()},
                      s3_entry(s3, "offsite", "no-such-bucket/pg", required=False)])
    backup = app.client().create_backup().backup
    assert backup.status == "SUCCEEDED", backup.error
    copies = copies_of(backup)
    assert copies["local"].state == "SUCCEEDED"
    failed = copies["offsite"]
    assert failed.state == "FAILED" and failed.size_bytes == 0 and not failed.location
    assert 'bucket "no-such-bucket" does not exist' in failed.error
    assert len(sleeps) == 1  # retried once (attempts: 2), after a backoff wait
    assert metric(app, "backup_copy_failures_total", destination="offsite") == 1
    assert metric(app, "backup_copy_failures_total", destination="local") == 0
    alerts = app.app.observability.alerts.active()
    assert [a.kind.value for a in alerts.values()] == ["copy_failed"]
    assert "offsite" in next(iter(alerts.values())).details["destination"]
    (alert,) = app.client().list_alerts()
    assert alert.kind == "COPY_FAILED" and "offsite" in alert.message


def test_a_required_copy_that_fails_fails_the_run_and_keeps_the_others(start_with, s3,
                                                                       tmp_path):
    bucket = s3.make_bucket()
    app = start_with([{"name": "local", "url": (tmp_path / "local").as_uri()},
                      bad_credentials(s3_entry(s3, "offsite", f"{bucket}/pg"))])
    with pytest.raises(BackupClientError) as info:
        app.client().create_backup()
    assert "copy to destination offsite failed" in info.value.details
    backup = app.client().list_backups().backups[0]
    assert backup.status == "FAILED"
    assert "copy to destination offsite failed" in backup.error
    assert "access denied; check the credentials" in backup.error
    copies = copies_of(backup)
    assert copies["local"].state == "SUCCEEDED"
    assert (tmp_path / "local" / copies["local"].location).exists()
    assert copies["offsite"].state == "FAILED" and s3.keys(bucket) == []
    assert metric(app, "backup_copy_failures_total", destination="offsite") == 1


def test_copy_backup_repairs_a_missing_copy(start_with, s3, tmp_path, capsys):
    bucket = f"late-{os.getpid()}"
    app = start_with([{"name": "local", "url": (tmp_path / "local").as_uri()},
                      s3_entry(s3, "offsite", f"{bucket}/pg")], envoy=True)
    with pytest.raises(BackupClientError):
        app.client().create_backup()
    backup = app.client().list_backups().backups[0]
    assert backup.status == "FAILED" and copies_of(backup)["offsite"].state == "FAILED"
    assert app.app.observability.alerts.active()

    s3.make_bucket(bucket)  # the operator fixes the destination, then asks for the copy
    assert backupctl(["--address", app.grpc_address, "copy", str(backup.id)]) == 0
    assert "offsite: SUCCEEDED" in capsys.readouterr().out
    repaired = app.client().get_backup(backup.id)
    assert repaired.status == "SUCCEEDED" and repaired.error == ""
    copy = copies_of(repaired)["offsite"]
    assert copy.state == "SUCCEEDED" and copy.sha256 == repaired.sha256
    assert _object(s3, bucket, f"pg/{copy.location}") == (
        tmp_path / "local" / copy.location).read_bytes()
    assert not app.app.observability.alerts.active()  # resolved by the copy

    # Over REST too; nothing is missing any more, so nothing is copied again.
    status, body = app.rest("POST", f"/api/v1/backups/{backup.id}:copy", {})
    assert status == 200, body
    assert [c["state"] for c in body["copies"]] == ["SUCCEEDED", "SUCCEEDED"]
    status, body = app.rest("POST", "/api/v1/backups/999:copy", {})
    assert status == 404, body


def test_the_endpoint_stopping_mid_upload_leaves_no_object(start_with, s3, tmp_path):
    bucket = s3.make_bucket()
    proxy = s3.proxy()
    cut = _cut_after(proxy, 64 << 10)
    app = start_with([{"name": "local", "url": (tmp_path / "local").as_uri()},
                      s3_entry(s3, "offsite", f"{bucket}/pg", endpoint=proxy.endpoint,
                               required=False)])
    backup = app.client().create_backup().backup
    assert cut, "the upload never reached the cut"
    assert backup.status == "SUCCEEDED"
    copy = copies_of(backup)["offsite"]
    assert copy.state == "FAILED" and "cannot reach" in copy.error, copy.error
    # Nothing under the backup's name. (The multipart upload cannot be aborted while
    # the endpoint is gone: a bucket lifecycle rule AbortIncompleteMultipartUpload
    # removes such leftovers; see README.)
    assert s3.keys(bucket) == []
    stats = {d.name: d for d in app.client().get_stats().destinations}
    assert (stats["offsite"].copies, stats["offsite"].used_bytes) == (0, 0)


def _cut_after(proxy, limit: int) -> list[bool]:
    """Cut ``proxy`` once ``limit`` bytes went upstream (mid-request)."""
    cut: list[bool] = []
    forward = proxy._pipe
    sent = [0]

    port = int(proxy.endpoint.rsplit(":", 1)[1])

    def counting(source, sink) -> None:
        try:
            upstream = source.getsockname()[1] == port  # the client's side: requests
        except OSError:
            return None
        if not upstream:
            return forward(source, sink)  # the answers
        try:
            while data := source.recv(1 << 14):
                sink.sendall(data)
                sent[0] += len(data)
                if sent[0] >= limit and not cut:
                    cut.append(True)
                    proxy.cut()
                    return None
        except OSError:
            return None
        return None

    proxy._pipe = counting
    return cut


def test_a_full_local_disk_does_not_stop_the_s3_copy(start_with, s3, tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k,mode=0700", "tmpfs",
                              str(full)], capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip("a tiny tmpfs cannot be mounted here (needs root): "
                    f"{mounted.stderr.decode().strip()}")
    try:
        bucket = s3.make_bucket()
        app = start_with([{"name": "disk", "url": (full / "pg").as_uri(), "required": False},
                          s3_entry(s3, "offsite", bucket)])
        backup = app.client().create_backup().backup
        assert backup.status == "SUCCEEDED", backup.error
        copies = copies_of(backup)
        assert copies["offsite"].state == "SUCCEEDED"
        assert copies["disk"].state == "FAILED"
        assert "No space left on device" in copies["disk"].error
        assert backup.file_path.startswith(f"s3://{bucket}/")
        assert [p.name for p in (full / "pg").iterdir()] == []  # nothing partial stays
    finally:
        app.app.stop()
        subprocess.run(["umount", str(full)], check=False)


def test_nothing_is_copied_when_the_dump_fails(start_with, s3, tmp_path, pg):
    bucket = s3.make_bucket()
    app = start_with([{"name": "local", "url": (tmp_path / "local").as_uri()},
                      s3_entry(s3, "offsite", bucket)],
                     database={"url": pg.url("no_such_database")})
    with pytest.raises(BackupClientError):
        app.client().create_backup()
    backup = app.client().list_backups().backups[0]
    assert backup.status == "FAILED"
    assert {c.state for c in backup.copies} <= {"FAILED"}
    assert s3.keys(bucket) == [] and s3.open_uploads(bucket) == []
    assert not list(Path(tmp_path / "local").glob("backup_*"))
    assert metric(app, "backup_copy_failures_total", destination="offsite") == 0


def test_copies_left_pending_by_a_crash_are_failed_at_start(start_with, tmp_path):
    from datetime import UTC, datetime

    from pgbackup_server.domain.models import Trigger
    from pgbackup_server.persistence import open_store

    local = tmp_path / "local"
    local.mkdir()
    (local / "shop").mkdir()
    leftover = local / "shop" / ".backupd-upload-backup_shop_x.sql.1234abcd.partial"
    leftover.write_bytes(b"half a dump")
    os.utime(leftover, (time.time() - 3600, time.time() - 3600))  # the crash was a while ago
    store = open_store(f"sqlite:///{tmp_path / 'data' / 'backupd.sqlite3'}")
    run = store.runs.create_run(database="shop", trigger=Trigger.MANUAL, backup_dir="/b",
                                queued_at=datetime.now(UTC), target="shop")
    store.copies.add(run.id, "local")
    store.close()
    app = start_with([{"name": "local", "url": local.as_uri()}])
    backup = app.client().get_backup(run.id)
    assert backup.status == "FAILED"
    (copy,) = backup.copies
    assert copy.state == "FAILED" and "interrupted" in copy.error
    assert not leftover.exists()
