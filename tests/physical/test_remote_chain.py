"""A chain whose folders are gone from this host is read from its encrypted copies in
S3: verify and restore fetch every backup of the chain (full and incremental),
decrypt it with the request's identity, check each file against its recorded
SHA-256, and combine it as for local folders; a restore also reads S3 for a folder
that is damaged here. Without an identity the request is refused before anything
runs; a damaged object is refused, naming the file."""

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

    key = str(identity)
    # The incremental's folder here is damaged: verify says so; a restore reads S3.
    local = Path(incr.file_path) / "base.tar.gz"
    data = bytearray(local.read_bytes())
    data[len(data) // 2] ^= 0x01
    local.write_bytes(bytes(data))
    result = client.verify_backup(incr.id)
    assert result.verification == "FAILED" and "base.tar.gz has changed" in result.reason
    out = reachable_dir / "repaired"
    restored = client.restore_backup(incr.id, target_directory=str(out), identity=key)
    assert restored.status == "SUCCEEDED", restored.error
    with ThrowawayServer(out, r.app.service.executor.binaries, trust_local=False) as srv:
        assert srv.psql("SELECT count(*) FROM r", "app").strip() == "80"

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


@pytest.mark.parametrize("store", ["s3", "file"])
def test_a_new_host_imports_a_physical_chain_and_restores_it(
        start_physical, phys_pg, reachable_dir, tmp_path, request, store):
    """The host and its run store are lost; a new backupd with the same destination
    (an object store, or a folder such as a mounted share) imports the catalog: the
    chain comes back (kinds, parent, WAL range) and restores, its encrypted files
    fetched and decrypted (in the folder too: the imported runs' paths are the copies)."""
    identity = x25519.Identity.generate()
    phys_pg.psql("DROP TABLE IF EXISTS n; CREATE TABLE n (i int); "
                 "INSERT INTO n SELECT generate_series(1, 40)", "app")
    if store == "s3":
        s3 = request.getfixturevalue("s3")
        offsite, env = s3.destination("offsite", f"{s3.make_bucket()}/pg"), s3.env()
    else:
        offsite, env = {"name": "offsite", "url": f"file://{tmp_path / 'share'}"}, {}
    old = start_physical(env=env, root=tmp_path / "old-host", destinations=[
        {"name": "local", "url": f"file://{tmp_path / 'old-host' / 'backups'}"}, offsite],
        encryption={"recipients": [str(identity.to_public())]})
    full = old.client().create_backup(database="cluster").backup
    phys_pg.psql("INSERT INTO n SELECT generate_series(41, 70)", "app")
    incr = old.client().create_backup(database="cluster", type="incremental").backup
    assert incr.parent_id == full.id
    old.app.stop()
    shutil.rmtree(tmp_path / "old-host")  # the machine is gone, with its store

    new = start_physical(env=env, root=tmp_path / "new-host", envoy=False,
                         destinations=[offsite])
    client = new.client()
    result = client.import_catalog("offsite")
    assert result.imported == 2 and not result.problems, result
    by_kind = {b.kind: b for b in client.list_backups(database="cluster").backups}
    new_full, new_incr = by_kind["PHYSICAL_FULL"], by_kind["PHYSICAL_INCREMENTAL"]
    assert new_incr.parent_id == new_full.id
    assert new_incr.chain == f"{new_full.id},{new_incr.id}"
    assert (new_incr.start_lsn, new_incr.end_lsn) == (incr.start_lsn, incr.end_lsn)
    assert client.import_catalog("offsite").skipped == 2  # idempotent

    out = reachable_dir / "imported"
    restored = client.restore_backup(new_incr.id, target_directory=str(out),
                                     identity=str(identity))
    assert restored.status == "SUCCEEDED", restored.error
    with ThrowawayServer(out, new.app.service.executor.binaries, trust_local=False) as srv:
        assert srv.psql("SELECT count(*), max(i) FROM n", "app").strip() == "70|70"
    # A quick verify needs no identity (the copies are checked as stored); a damaged
    # object fails it, and the backup is not taken for gone: its copy is still there.
    assert client.verify_backup(new_incr.id).verification == "OK"
    if store == "file":
        damaged = tmp_path / "share" / Path(incr.file_path).name / "pg_wal.tar.gz.age"
        data = bytearray(damaged.read_bytes())
        data[len(data) // 2] ^= 0xFF
        damaged.write_bytes(bytes(data))
        result = client.verify_backup(new_incr.id)
        assert result.verification == "FAILED" and "pg_wal.tar.gz.age" in result.reason
        assert not client.get_backup(new_incr.id).file_missing
