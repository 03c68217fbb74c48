"""Round trips through the API from S3 (moto over HTTP), every format that can be
stored there, encrypted with age and not: backup (streamed to S3 only, no local
file), quick and deep verify, restore, the same rows; contents; an encrypted backup
without its key, or with another, is refused; the key never shows in a log; an
object changed at the store fails quick verify; and the encrypted plain backup opens
with the standard tools alone, as the README says."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from pathlib import Path

import pyrage
import pytest
from conftest import DB, Running, drop_database, table_fingerprint
from s3 import S3

from pgbackup_client import BackupClientError
from pgbackup_server.postgres.embedded import EmbeddedPostgres

IDENTITY = pyrage.x25519.Identity.generate()
SECRET = str(IDENTITY)


@pytest.mark.parametrize("fmt,encrypted", [("plain", True), ("plain", False),
                                           ("custom", True), ("custom", False)])
def test_backup_to_s3_verify_restore(
        fmt: str, encrypted: bool, pg: EmbeddedPostgres, s3: S3, tmp_path: Path,
        start_app: Callable[..., Running], caplog: pytest.LogCaptureFixture,
        capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    bucket = s3.make_bucket()
    key_file = tmp_path / "key.txt"
    key_file.write_text(SECRET + "\n")
    key_file.chmod(0o600)
    extra = {"encryption": {"recipients": [str(IDENTITY.to_public())]}} if encrypted else {}
    if encrypted and fmt == "custom":  # this host holds the key: requests need none
        extra["encryption"]["identityFile"] = str(key_file)
    stack = start_app(envoy=False, env=s3.env(),
                      backup={"format": fmt, "compressBackup": fmt == "plain",
                              "directory": str(tmp_path / "unused")},
                      destinations=[s3.destination("offsite", f"{bucket}/pg")], **extra)
    client = stack.client()
    backup = client.create_backup().backup
    assert backup.status == "SUCCEEDED", backup.error
    [copy] = backup.copies
    assert copy.state == "SUCCEEDED" and copy.location.endswith(".age") is encrypted
    assert not (tmp_path / "unused").exists() or not any((tmp_path / "unused").iterdir())
    identity = SECRET if encrypted and fmt == "plain" else ""

    assert client.verify_backup(backup.id).ok  # size and the store's checksum: no key
    if encrypted:
        deep = client.verify_backup(backup.id, deep=True, identity=identity)
        assert deep.ok and deep.tables, deep.reason
    target = f"round_trip_{fmt}_{int(encrypted)}"
    try:
        client.restore_backup(backup.id, target_database=target, identity=identity)
        assert table_fingerprint(pg, target) == table_fingerprint(pg, DB)
    finally:
        drop_database(pg, target)
    key = f"pg/{copy.location}"

    if encrypted and fmt == "plain":
        with pytest.raises(BackupClientError, match="encrypted with age; pass the identity"):
            client.restore_backup(backup.id, target_database="never_made")
        # age -d -i key.txt FILE | zstd -d | psql …: no part of this project.
        stored = tmp_path / copy.location
        stored.write_bytes(s3.client().get_object(Bucket=bucket, Key=key)["Body"].read())
        sql = subprocess.run(f"age -d -i {key_file} {stored} | zstd -d", shell=True,
                             capture_output=True, check=True).stdout
        assert b"-- PostgreSQL database dump complete" in sql[-4096:]
    if encrypted and fmt == "custom":
        contents = client.list_backup_contents(backup.id, identity=identity)
        assert {"TABLE"} <= {e.kind for e in contents.entries}
        with pytest.raises(BackupClientError, match="does not match any recipient"):
            client.list_backup_contents(backup.id,
                                        identity=str(pyrage.x25519.Identity.generate()))
        assert not list((stack.root / "data").rglob("staged-*"))  # staged files removed
    if not encrypted and fmt == "plain":
        # Changed behind the service's back: quick verify sees it from the checksum.
        body = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        s3.client().put_object(Bucket=bucket, Key=key, Body=bytes([body[0] ^ 1]) + body[1:])
        result = client.verify_backup(backup.id)
        assert not result.ok and "has changed: the store's checksum" in result.reason

    out, err = capfd.readouterr()
    for text in (caplog.text, out, err):
        assert SECRET not in text
