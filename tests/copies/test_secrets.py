"""Cloud credentials never appear in argv, logs, run or copy records, errors, API
answers or the store's file, whether the store accepts them or refuses them."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from pgbackup_client import BackupClientError
from pgbackup_server.observability import logs

from .helpers import BAD_SECRET, bad_credentials, s3_entry


def _cmdlines() -> list[str]:
    """Every process of this session, as argv text (backupd runs in-process here)."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                           .decode(errors="replace"))
            except OSError:
                continue
    return out


def test_cloud_credentials_are_nowhere(start_with, s3, s3_env, tmp_path):
    buf = io.StringIO()
    logs.configure("debug", "console", stream=buf)
    try:
        bucket = s3.make_bucket()
        app = start_with([{"name": "local", "url": (tmp_path / "local").as_uri()},
                          s3_entry(s3, "offsite", f"{bucket}/pg"),
                          bad_credentials(s3_entry(s3, "badkey", f"{bucket}/other"))],
                         envoy=True)
        client = app.client()
        with pytest.raises(BackupClientError) as info:
            client.create_backup()  # badkey is required: the run fails, naming it
        argv = _cmdlines()
        backup = client.list_backups().backups[0]
        with pytest.raises(BackupClientError) as again:
            client.copy_backup(backup.id)
        texts = [info.value.details, again.value.details, repr(backup), repr(client.get_stats()),
                 repr(client.list_destinations()), app.rest("GET", "/api/v1/destinations")[1]]
        texts.append(app.rest("GET", f"/api/v1/backups/{backup.id}")[1])
    finally:
        logs.configure("info", "console")
    assert "copy to destination badkey failed" in backup.error
    assert {c.destination: c.state for c in backup.copies} == {
        "badkey": "FAILED", "local": "SUCCEEDED", "offsite": "SUCCEEDED"}
    store = (app.app.settings.server.data_directory / "backupd.sqlite3")
    stored = b"".join(p.read_bytes() for p in store.parent.glob("backupd.sqlite3*"))
    secrets = [s3.secret_access_key, BAD_SECRET]
    for text in [buf.getvalue(), *argv, *map(str, texts)]:
        for secret in secrets:
            assert secret not in text
    for secret in secrets:
        assert secret.encode() not in stored
    assert buf.getvalue() and "badkey" in buf.getvalue()
