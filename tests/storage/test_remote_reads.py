"""Verify, restore and contents of a backup whose only copy is at S3 (moto over HTTP),
encrypted with age or not, in the plain (zstd) and custom formats: the host's own file
is gone, so every byte comes from the store.

The copy is put at S3 by the test (as the fan-out does), so these tests cover the
read side alone; the identity never shows in a log or an error.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyrage
import pytest
from conftest import DB, Running, drop_database, table_fingerprint
from s3 import S3

from pgbackup_client import BackupClientError
from pgbackup_server.domain.age_keys import fingerprint
from pgbackup_server.domain.models import Copy, CopyState, FileState
from pgbackup_server.postgres.embedded import EmbeddedPostgres
from pgbackup_server.storage.catalog import manifest_for, write_manifest

IDENTITY = pyrage.x25519.Identity.generate()
RECIPIENT = str(IDENTITY.to_public())
SECRET = str(IDENTITY)


def offsite_only(app: Any, run_id: int, *, encrypt: bool) -> str:
    """Store run ``run_id``'s backup at destination ``offsite`` (encrypted to RECIPIENT
    when ``encrypt``), with its manifest, record the copy, and delete the local file."""
    runs, run = app.store.runs, app.store.runs.get(run_id)
    data = Path(run.file_path).read_bytes()
    name = Path(run.file_path).name
    stored = data
    if encrypt:
        stored, name = pyrage.encrypt(data, [IDENTITY.to_public()]), name + ".age"
        runs.mark_running(run.id, encryption=(fingerprint(RECIPIENT),),
                          plaintext_sha256=hashlib.sha256(data).hexdigest())
        run = runs.mark_succeeded(run.id, finished_at=run.finished_at,
                                  file_path=run.file_path + ".age", size_bytes=len(stored),
                                  sha256=hashlib.sha256(stored).hexdigest())
    dest = app.destinations["offsite"]
    sink = dest.upload(name)
    sink.write(stored)
    [done] = sink.finish()
    write_manifest(dest, name, manifest_for(run, done))
    app.store.copies.record(Copy(run.id, "offsite", CopyState.SUCCEEDED, name, done.size,
                                 done.sha256, stored_at=run.finished_at,
                                 file_state=FileState.PRESENT))
    os.unlink(Path(run.file_path.removesuffix(".age")))
    return name


@pytest.mark.parametrize("fmt", ["plain", "custom"])
def test_restore_from_s3_encrypted_and_not(
        fmt: str, pg: EmbeddedPostgres, s3: S3, start_app: Callable[..., Running],
        caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    bucket = s3.make_bucket()
    # The target stores only locally: the test puts the S3 copy itself (below).
    stack = start_app(envoy=False, env=s3.env(), database=None, schedules=None,
                      databases=[{"name": DB, "url": pg.url(DB), "destinations": ["local"]}],
                      backup={"format": fmt, "compressBackup": fmt == "plain"},
                      destinations=[{"name": "local", "url": "file:///nonexistent-local"},
                                    s3.destination("offsite", f"{bucket}/pg")])
    client = stack.client()
    ids = {}
    for encrypt in (False, True):
        ids[encrypt] = client.create_backup().backup.id
        offsite_only(stack.app, ids[encrypt], encrypt=encrypt)

    for encrypt, backup_id in ids.items():
        identity = SECRET if encrypt else ""
        # Quick: size and the store's checksum against the manifest, no download, and
        # no identity needed.
        assert client.verify_backup(backup_id).ok
        target = f"from_s3_{fmt}_{int(encrypt)}"
        try:
            done = client.restore_backup(backup_id, target_database=target, identity=identity)
            assert done.status == "SUCCEEDED"
            assert table_fingerprint(pg, target) == table_fingerprint(pg, DB)
        finally:
            drop_database(pg, target)
        names = {e.name for e in client.list_backup_contents(backup_id,
                                                             identity=identity).entries}
        assert "orders" in names or len(names) > 3

    deep = client.verify_backup(ids[True], deep=True, identity=SECRET)
    assert deep.ok and deep.tables
    with pytest.raises(BackupClientError, match="encrypted with age; pass the identity"):
        client.restore_backup(ids[True], target_database="never_made")
    other = str(pyrage.x25519.Identity.generate())
    with pytest.raises(BackupClientError, match="does not match any recipient"):
        client.list_backup_contents(ids[True], identity=other)
    assert not [f for f in (stack.root / "data").rglob("staged-*")]  # staging removed

    # The store's object changes behind the service's back: quick verify notices from
    # the checksum alone.
    run = stack.app.store.runs.get(ids[False])
    key = f"pg/{run.copy_at('offsite').location}"
    body = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.client().put_object(Bucket=bucket, Key=key, Body=bytes([body[0] ^ 1]) + body[1:])
    result = client.verify_backup(ids[False])
    assert not result.ok and "has changed: the store's checksum" in result.reason

    out, err = capfd.readouterr()
    for text in (caplog.text, out, err):
        assert SECRET not in text and other not in text
