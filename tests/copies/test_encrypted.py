"""Encrypted copies: compress, then encrypt to the age recipients, then store; the name
ends in ``.age``; the run records the recipients' fingerprints and the SHA-256 of the
plaintext; the standard ``age`` command (and zstd) opens it with no part of backupd."""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest

from pgbackup_server.domain.age_keys import fingerprint

from .helpers import copies_of, s3_entry


def test_an_encrypted_backup_opens_with_age_and_zstd_alone(start_with, s3, tmp_path):
    if not shutil.which("age") or not shutil.which("age-keygen"):
        pytest.skip("the age command is not installed (.ci/run installs Debian age)")
    key = tmp_path / "key.txt"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", str(key)], check=True,
                               capture_output=True, text=True).stdout.strip()
    bucket = s3.make_bucket()
    local = tmp_path / "local"
    app = start_with([{"name": "local", "url": local.as_uri()},
                      s3_entry(s3, "offsite", bucket)],
                     backup={"compression": "zstd:1", "compressBackup": True},
                     encryption={"recipients": [recipient]})
    backup = app.client().create_backup().backup
    assert backup.status == "SUCCEEDED", backup.error
    assert backup.encryption == (fingerprint(recipient),)
    name = copies_of(backup)["offsite"].location
    assert name.endswith(".sql.zst.age"), name
    stored = s3.client().get_object(Bucket=bucket, Key=name)["Body"].read()
    assert stored == (local / name).read_bytes()
    assert stored.startswith(b"age-encryption.org/v1")
    assert hashlib.sha256(stored).hexdigest() == backup.sha256

    opened = subprocess.run(f"age -d -i {key} {local / name} | zstd -d", shell=True,
                            capture_output=True, check=True)
    assert b"CREATE TABLE" in opened.stdout
    compressed = subprocess.run(["age", "-d", "-i", str(key), str(local / name)],
                                capture_output=True, check=True).stdout
    assert hashlib.sha256(compressed).hexdigest() == backup.plaintext_sha256
    manifest = s3.client().get_object(Bucket=bucket, Key=f"{name}.manifest.json")
    assert fingerprint(recipient) in manifest["Body"].read().decode()
