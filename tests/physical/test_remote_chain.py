"""A chain whose folders are gone from this host is read from its encrypted copies in
S3: verify and restore fetch every backup of the chain (full and incremental),
decrypt it with the request's identity, check each file against its recorded
SHA-256, and combine it as for local folders. Without an identity the request is
refused before anything runs; a damaged object is refused, naming the file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pyrage import x25519

from pgbackup_client import FailedPrecondition, InternalError
from pgbackup_server.physical.scratch import ThrowawayServer


def test_a_chain_gone_from_this_host_restores_from_encrypted_s3(
        start_physical, phys_pg, s3, reachable_dir, tmp_path):
    identity = x25519.Identity.generate()
    bucket = s3.make_bucket()
    phys_pg.psql("DROP TABLE IF EXISTS r; CREATE TABLE r (i int); "
                 "INSERT INTO r SELECT generate_series(1, 50)", "app")
    r = start_physical(env=s3.env(), destinations=[
        {"name": "local", "url": f"file://{tmp_path / 'backups'}"},
        s3.destination("offsite", f"{bucket}/pg")],
        encryption={"recipients": [str(identity.to_public())]})
    client = r.client()
    full = client.create_backup(database="cluster").backup
    phys_pg.psql("INSERT INTO r SELECT generate_series(51, 80)", "app")
    incr = client.create_backup(database="cluster", type="incremental").backup
    assert incr.kind == "PHYSICAL_INCREMENTAL" and incr.parent_id == full.id
    phys_pg.psql("INSERT INTO r SELECT generate_series(81, 99)", "app")
    folder = Path(incr.file_path).name
    assert f"pg/{folder}/base.tar.gz.age" in s3.keys(bucket)

    # This host loses both folders; S3 holds the chain, encrypted.
    shutil.rmtree(full.file_path)
    shutil.rmtree(incr.file_path)
    out = reachable_dir / "from-s3"
    with pytest.raises(FailedPrecondition) as err:  # nothing is recorded or written
        client.restore_backup(incr.id, target_directory=str(out))
    assert f"backup {full.id}: its folder {full.file_path} is not on this host" in \
        str(err.value)
    assert "encryption.identityFile" in str(err.value)
    assert not out.exists()

    key = str(identity)
    assert client.verify_backup(incr.id, identity=key).verification == "OK"
    restored = client.restore_backup(incr.id, target_directory=str(out), identity=key)
    assert restored.status == "SUCCEEDED", restored.error
    assert not [p for p in reachable_dir.iterdir() if p.name.startswith(".pgbackup-")]
    with ThrowawayServer(out, r.app.service.executor.binaries, trust_local=False) as srv:
        assert srv.psql("SELECT count(*), max(i) FROM r", "app").strip() == "80|80"

    # One byte of the incremental's data changed in S3: refused, the object named.
    obj = f"pg/{folder}/base.tar.gz.age"
    data = bytearray(s3.client().get_object(Bucket=bucket, Key=obj)["Body"].read())
    data[len(data) // 2] ^= 0x01
    s3.client().put_object(Bucket=bucket, Key=obj, Body=bytes(data))
    result = client.verify_backup(incr.id, identity=key)
    assert result.verification == "FAILED"
    assert f"backup {incr.id}: " in result.reason
    assert f"{folder}/base.tar.gz.age cannot be decrypted" in result.reason
    again = reachable_dir / "again"
    with pytest.raises(InternalError, match=r"base\.tar\.gz\.age cannot be decrypted"):
        client.restore_backup(incr.id, target_directory=str(again), identity=key)
    assert not again.exists() or not any(again.iterdir())
    assert not [p for p in reachable_dir.iterdir() if p.name.startswith(".pgbackup-")]
