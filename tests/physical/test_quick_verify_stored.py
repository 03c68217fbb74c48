"""A quick verify of a physical chain whose encrypted copies cannot be decrypted here
(no identity in the request, no encryption.identityFile) checks each copy as stored,
as for a logical backup: every object its manifest records is there, nothing else, of
its size and unchanged (the store's checksum in S3, read back and hashed at a local
destination), naming the damaged object. A backup whose folder is here is checked
as always; with an identity, verify still decrypts and checks every file. Deep
verify still needs the identity."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from pyrage import x25519

from pgbackup_client import FailedPrecondition
from pgbackup_server.observability import logs


def _events(buf: io.StringIO, event: str) -> list[dict[str, Any]]:
    out = []
    for line in buf.getvalue().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == event:
            out.append(record)
    return out


def _put_multipart(s3c: Any, bucket: str, key: str, body: bytes) -> None:
    """Store ``body`` as backupd did: a multipart upload of one part (same ETag)."""
    upload = s3c.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    part = s3c.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=body)
    s3c.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={
        "Parts": [{"ETag": part["ETag"], "PartNumber": 1}]})


def _chain(start_physical: Any, phys_pg: Any, destinations: list[dict[str, Any]],
           recipient: str, env: dict[str, str] | None = None) -> tuple[Any, Any, Any]:
    phys_pg.psql("DROP TABLE IF EXISTS q; CREATE TABLE q (i int); "
                 "INSERT INTO q SELECT generate_series(1, 50)", "app")
    r = start_physical(env=env, destinations=destinations,
                       encryption={"recipients": [recipient]})
    client = r.client()
    full = client.create_backup(database="cluster").backup
    phys_pg.psql("INSERT INTO q SELECT generate_series(51, 80)", "app")
    incr = client.create_backup(database="cluster", type="incremental").backup
    assert incr.parent_id == full.id
    return client, full, incr


def test_an_encrypted_chain_in_s3_quick_verifies_without_an_identity(
        start_physical, phys_pg, s3, tmp_path):
    identity = x25519.Identity.generate()
    bucket = s3.make_bucket()
    client, full, incr = _chain(start_physical, phys_pg, [
        {"name": "local", "url": f"file://{tmp_path / 'backups'}"},
        s3.destination("offsite", f"{bucket}/pg")], str(identity.to_public()), s3.env())
    folder = Path(incr.file_path).name
    shutil.rmtree(full.file_path)  # this host keeps nothing: S3 holds the chain
    shutil.rmtree(incr.file_path)

    buf = io.StringIO()
    logs.configure("info", "json", stream=buf)
    try:
        result = client.verify_backup(incr.id)
        assert result.verification == "OK", result.reason
        checked = _events(buf, "Copy checked")
        assert {(e["run_id"], e["checked"], e["decrypted"]) for e in checked} == {
            (full.id, "objects' sizes and store checksums", False),
            (incr.id, "objects' sizes and store checksums", False)}
        assert not _events(buf, "Physical backup fetched from a destination")

        # With an identity the chain is still fetched, decrypted and checked file by
        # file: a key that is not a recipient is refused, the right one passes.
        with pytest.raises(FailedPrecondition):
            client.verify_backup(incr.id, identity=str(x25519.Identity.generate()))
        buf.truncate(0)
        buf.seek(0)
        assert client.verify_backup(incr.id, identity=str(identity)).verification == "OK"
        assert {e["run_id"] for e in
                _events(buf, "Physical backup fetched from a destination")} == \
            {full.id, incr.id}
        # and the verified backup's own copies are checked as stored besides
        assert {(e["run_id"], e["destination"]) for e in _events(buf, "Copy checked")} \
            == {(incr.id, "offsite")}
    finally:
        logs.configure("info", "console")
    with pytest.raises(FailedPrecondition, match=r"encryption\.identityFile"):
        client.verify_backup(incr.id, deep=True)  # deep still needs the identity

    key = f"pg/{folder}/base.tar.gz.age"
    s3c = s3.client()
    original = s3c.get_object(Bucket=bucket, Key=key)["Body"].read()
    changed = bytearray(original)
    changed[len(changed) // 2] ^= 0x01
    s3c.put_object(Bucket=bucket, Key=key, Body=bytes(changed))
    result = client.verify_backup(incr.id)
    assert result.verification == "FAILED"
    assert f"backup {incr.id}: " in result.reason
    assert f"{folder}/base.tar.gz.age has changed since it was stored" in result.reason
    assert "store's checksum" in result.reason
    assert client.get_backup(incr.id).verification == "FAILED"

    s3c.put_object(Bucket=bucket, Key=key, Body=original[:-100])
    result = client.verify_backup(incr.id)
    assert result.verification == "FAILED"
    assert f"{folder}/base.tar.gz.age holds {len(original) - 100} bytes, " \
           f"{len(original)} were stored: it is truncated" in result.reason

    s3c.delete_object(Bucket=bucket, Key=key)
    result = client.verify_backup(incr.id)
    assert result.verification == "FAILED"
    assert f"{folder}/base.tar.gz.age is missing" in result.reason

    _put_multipart(s3c, bucket, key, original)  # put back as it was (one part, as sent)
    assert client.verify_backup(incr.id).verification == "OK"
    s3c.put_object(Bucket=bucket, Key=f"pg/{folder}/stray", Body=b"x")
    result = client.verify_backup(incr.id)
    assert result.verification == "FAILED" and "unexpected file stray" in result.reason


def test_a_mixed_chain_with_a_local_copy_is_read_back_without_an_identity(
        start_physical, phys_pg, tmp_path):
    """Full here and incremental only at a local destination (no store checksum: read
    back and hashed), and the other way round; a copy whose manifest lists no objects
    (written before they were recorded) is checked as a whole."""
    identity = x25519.Identity.generate()
    vault = tmp_path / "vault"
    client, full, incr = _chain(start_physical, phys_pg, [
        {"name": "local", "url": f"file://{tmp_path / 'backups'}"},
        {"name": "vault", "url": f"file://{vault}"}], str(identity.to_public()))
    folder = Path(incr.file_path).name
    stored = vault / folder / "base.tar.gz.age"
    assert stored.is_file()

    # Both folders here and intact, the vault's copy damaged: the verify fails, naming
    # it (that copy is what a restore reads once this host is gone).
    original = stored.read_bytes()
    stored.write_bytes(original[:-1])
    result = client.verify_backup(incr.id)
    assert result.verification == "FAILED"
    assert f"{folder}/base.tar.gz.age holds {len(original) - 1} bytes" in result.reason
    stored.write_bytes(original)
    assert client.verify_backup(incr.id).verification == "OK"

    shutil.rmtree(full.file_path)  # the incremental is here, its full only in the vault
    assert client.verify_backup(incr.id).verification == "OK"
    shutil.rmtree(incr.file_path)
    buf = io.StringIO()
    logs.configure("info", "json", stream=buf)
    try:
        assert client.verify_backup(incr.id).verification == "OK"
    finally:
        logs.configure("info", "console")
    assert {(e["run_id"], e["checked"]) for e in _events(buf, "Copy checked")} == {
        (full.id, "objects' sizes and SHA-256, read back"),
        (incr.id, "objects' sizes and SHA-256, read back")}

    changed = bytearray(original)
    changed[len(changed) // 2] ^= 0x01
    stored.write_bytes(bytes(changed))
    result = client.verify_backup(incr.id)
    assert result.verification == "FAILED"
    assert f"{folder}/base.tar.gz.age has changed since it was stored (SHA-256 differs)" \
        in result.reason

    # A manifest without the objects: the folder read back, against the copy's digest.
    manifest = vault / f"{folder}.manifest.json"
    described = json.loads(manifest.read_text())
    assert [f["name"] for f in described["files"]] == sorted(
        p.name for p in (vault / folder).iterdir())
    del described["files"]
    manifest.write_text(json.dumps(described))
    result = client.verify_backup(incr.id)
    assert result.verification == "FAILED"
    assert f"backup {incr.id}: the files in " in result.reason
    assert f"{vault}/{folder} are not those stored there" in result.reason
    stored.write_bytes(original)
    assert client.verify_backup(incr.id).verification == "OK"
