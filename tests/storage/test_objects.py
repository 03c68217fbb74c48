"""An S3 destination against moto over real HTTP: multipart round trip, no overwrite,
aborts that leave nothing, faults with clear errors, Object Lock, no leaked secret."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from s3 import S3

from pgbackup_server.domain.errors import StorageError, StorageExists, StorageNotFound
from pgbackup_server.settings import ConfigError, build_settings
from pgbackup_server.settings.destinations import DestinationConfig
from pgbackup_server.storage.objects import ObjectDestination
from pgbackup_server.storage.registry import Destinations

MiB = 1 << 20
PART = 5 * MiB  # S3's smallest part: a few MiB give a real multipart upload
FAST_FAIL: Any = {"max_retries": 1, "retry_timeout": timedelta(seconds=2),
                  "backoff": {"init_backoff": timedelta(milliseconds=50),
                              "max_backoff": timedelta(milliseconds=200), "base": 2}}


def destination(s3: S3, path: str, env: dict[str, str] | None = None,
                **extra: Any) -> ObjectDestination:
    entry = s3.destination("offsite", path, **extra)
    config = DestinationConfig.model_validate(entry)
    built = Destinations.from_configs((config,), env if env is not None else s3.env(),
                                      part_size=PART, retry=FAST_FAIL)
    dest = built.named("offsite")
    assert isinstance(dest, ObjectDestination)
    return dest


def write_all(sink: Any, data: bytes, chunk: int = MiB) -> None:
    for i in range(0, len(data), chunk):
        sink.write(data[i:i + chunk])


def test_multipart_round_trip(s3: S3) -> None:
    bucket = s3.make_bucket()
    dest = destination(s3, f"{bucket}/pg/prod", storageClass="STANDARD_IA")
    data = os.urandom(11 * MiB)  # three parts
    sink = dest.upload("shop/backup_shop.dump")
    write_all(sink, data)
    assert s3.keys(bucket) == []  # nothing visible before the upload completes
    [stored] = sink.finish()
    assert (stored.size, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert s3.keys(bucket) == ["pg/prod/shop/backup_shop.dump"]
    assert b"".join(dest.read("shop/backup_shop.dump")) == data
    info = dest.head("shop/backup_shop.dump")
    assert info is not None and info.size == len(data)
    # The store's own checksum matches what the sink predicted: a quick verify
    # compares them without downloading.
    assert info.etag == stored.etag and stored.etag.endswith("-3")
    assert [i.location for i in dest.list("shop/")] == ["shop/backup_shop.dump"]
    assert dest.location_of("shop/backup_shop.dump") == \
        f"s3://{bucket}/pg/prod/shop/backup_shop.dump"
    head = s3.client().head_object(Bucket=bucket, Key="pg/prod/shop/backup_shop.dump")
    assert head["StorageClass"] == "STANDARD_IA"
    assert dest.delete("shop/backup_shop.dump") is True
    assert dest.head("shop/backup_shop.dump") is None


def test_never_overwrites(s3: S3) -> None:
    bucket = s3.make_bucket()
    dest = destination(s3, bucket)
    dest.put_small("x.manifest.json", b"first")
    with pytest.raises(StorageExists, match="never overwritten"):
        dest.put_small("x.manifest.json", b"second")
    with pytest.raises(StorageExists, match="never overwritten"):
        dest.upload("x.manifest.json")
    assert b"".join(dest.read("x.manifest.json")) == b"first"


def test_abort_mid_upload_leaves_no_object_and_no_open_upload(s3: S3) -> None:
    bucket = s3.make_bucket()
    dest = destination(s3, bucket)
    sink = dest.upload("db/backup.sql.zst")
    write_all(sink, os.urandom(11 * MiB))  # two parts already sent
    sink.abort("pg_dump failed")
    assert s3.keys(bucket) == []
    assert s3.open_uploads(bucket) == []


def test_endpoint_stopping_mid_upload_is_a_clear_error(s3: S3) -> None:
    bucket = s3.make_bucket()
    proxy = s3.proxy()
    dest = destination(s3, bucket, endpoint=proxy.endpoint)
    sink = dest.upload("db/backup.sql.zst")
    write_all(sink, os.urandom(6 * MiB))
    proxy.cut()
    started = time.monotonic()
    with pytest.raises(StorageError, match=r'destination "offsite": upload of '
                                           r"db/backup.sql.zst failed: cannot reach"):
        write_all(sink, os.urandom(6 * MiB))
        sink.finish()
    sink.abort("the store went away")
    assert time.monotonic() - started < 20
    assert s3.keys(bucket) == []  # nothing counted under the backup's name
    # The abort could not reach the store; once it is back, the leftover is aborted.
    assert s3.open_uploads(bucket) == ["db/backup.sql.zst"]
    assert destination(s3, bucket).abort_unfinished(older_than=timedelta(0)) == 1
    assert s3.open_uploads(bucket) == []


def test_wrong_credentials_and_missing_bucket(s3: S3, caplog: pytest.LogCaptureFixture,
                                              capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    bucket = s3.make_bucket()
    wrong_secret = "Wr0ngSecretKeyValue/ForTheTest+0123456789"
    bad = destination(s3, bucket, env={**s3.env(), "TEST_S3_SECRET": wrong_secret})
    with pytest.raises(StorageError) as wrong:
        bad.put_small("x", b"data")
    assert "secret access key does not match" in str(wrong.value)
    with pytest.raises(StorageError) as wrong_upload:
        sink = bad.upload("y")
        sink.write(b"data")
        sink.finish()
    missing = destination(s3, "no-such-bucket/prefix")
    with pytest.raises(StorageNotFound, match='the bucket "no-such-bucket" does not exist'):
        missing.upload("z").finish()
    assert s3.keys(bucket) == []
    out, err = capfd.readouterr()
    for secret in (wrong_secret, s3.secret_access_key):
        for text in (str(wrong.value), str(wrong_upload.value), caplog.text, out, err):
            assert secret not in text


def test_config_never_echoes_a_misplaced_secret(tmp_path: Path) -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    raw = {"database": {"url": "postgresql://u@h/db"},
           "destinations": [{"name": "s3", "url": "s3://b", "credentials": {
               "accessKeyId": "KEY_VAR", "secretAccessKey": secret}}]}
    with pytest.raises(ConfigError) as exc:
        build_settings(raw, base=tmp_path, env={"KEY_VAR": "x"})
    assert "destinations[0].credentials: secretAccessKey: expected the NAME of an " \
           "environment variable" in str(exc.value)
    assert secret not in str(exc.value)
    raw["destinations"][0]["credentials"]["secretAccessKey"] = "UNSET_VAR"
    with pytest.raises(ConfigError, match="the environment variable UNSET_VAR is not set"):
        build_settings(raw, base=tmp_path, env={"KEY_VAR": "x"})


def test_object_lock_keeps_the_object(s3: S3) -> None:
    bucket = s3.make_bucket(lock=True)
    dest = destination(s3, bucket, objectLock={"mode": "GOVERNANCE", "days": 2})
    sink = dest.upload("db/locked.dump")
    sink.write(b"immutable")
    [stored] = sink.finish()
    info = dest.head(stored.location)
    assert info is not None and info.locked_until is not None
    assert info.locked_until > datetime.now(UTC) + timedelta(days=1)
    assert dest.delete(stored.location) is False  # kept, not a failure
    assert b"".join(dest.read(stored.location)) == b"immutable"
    versions = s3.client().list_object_versions(Bucket=bucket)
    assert len(versions.get("Versions", ())) == 1 and not versions.get("DeleteMarkers")


def test_directory_format_is_refused_with_an_object_store_or_encryption(
        tmp_path: Path) -> None:
    recipient = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
    raw: dict[str, Any] = {"database": {"url": "postgresql://u@h/db"},
                           "backup": {"format": "directory"},
                           "destinations": [{"name": "local", "url": "file:///b"},
                                            {"name": "offsite", "url": "s3://bucket/pg"}]}
    with pytest.raises(ConfigError) as exc:
        build_settings(raw, base=tmp_path, env={})
    assert "destination(s) offsite are object stores; use format: custom" in str(exc.value)
    raw = {**raw, "destinations": [{"name": "local", "url": "file:///b"}],
           "encryption": {"recipients": [recipient]}}
    with pytest.raises(ConfigError, match="directory backups cannot be encrypted"):
        build_settings(raw, base=tmp_path, env={})
