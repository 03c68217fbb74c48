"""A full physical backup, changes, an incremental on top, more changes: the chain
rebuilt by a restore starts and holds the data as of the incremental."""

from __future__ import annotations

from pathlib import Path

from pgbackup_server.physical.scratch import ThrowawayServer


def test_full_then_incremental_restores_the_data_as_of_the_incremental(
        start_physical, phys_pg, reachable_dir):
    phys_pg.psql("DROP TABLE IF EXISTS t; CREATE TABLE t (i int); "
                 "INSERT INTO t SELECT generate_series(1, 100)", "app")
    r = start_physical()
    client = r.client()
    full = client.create_backup(database="cluster").backup
    assert (full.kind, full.parent_id, full.chain) == ("PHYSICAL_FULL", 0, str(full.id))
    assert sorted(p.name for p in Path(full.file_path).iterdir()) == [
        "SHA256SUMS", "backup_manifest", "base.tar.gz", "pg_wal.tar.gz"]
    phys_pg.psql("INSERT INTO t SELECT generate_series(101, 200)", "app")
    incr = client.create_backup(database="cluster", type="incremental").backup
    assert incr.kind == "PHYSICAL_INCREMENTAL" and incr.parent_id == full.id
    assert incr.chain == f"{full.id},{incr.id}" and incr.type_reason == ""
    assert incr.size_bytes < full.size_bytes / 2
    phys_pg.psql("INSERT INTO t SELECT generate_series(201, 300)", "app")

    status, body = r.rest("GET", f"/api/v1/backups/{incr.id}")
    assert status == 200
    assert (body["kind"], body["parent_id"], body["chain"]) == (
        "PHYSICAL_INCREMENTAL", str(full.id), f"{full.id},{incr.id}")

    out = reachable_dir / "restored"
    status, body = r.rest("POST", f"/api/v1/backups/{incr.id}:restore",
                          {"target_directory": str(out)})
    assert status == 200, body
    assert body["status"] == "SUCCEEDED"
    assert (out / "PG_VERSION").is_file() and oct(out.stat().st_mode & 0o777) == "0o700"
    assert not [p for p in reachable_dir.iterdir() if p.name.startswith(".pgbackup-restore")]
    with ThrowawayServer(out, r.app.service.executor.binaries, trust_local=False) as srv:
        assert srv.psql("SELECT count(*), max(i) FROM t", "app").strip() == "200|200"
