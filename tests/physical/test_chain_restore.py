"""A full physical backup, changes, an incremental on top, more changes: the chain
rebuilt by a restore starts and holds the data as of the incremental. Each backup
is copied, encrypted, to the target's other destination, with its manifest. Deep verify
starts the chain on a throwaway server; quick verify names the file of the chain
that changed or went missing. (One scenario: each physical backup costs seconds.)"""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import tempfile
from pathlib import Path

import pyrage
import pytest
from pyrage import x25519

from pgbackup_server.physical.combine import CombineFailed, rebuild
from pgbackup_server.physical.scratch import ThrowawayServer
from pgbackup_server.physical.tools import tool


def test_full_then_incremental_restores_the_data_as_of_the_incremental(
        start_physical, phys_pg, reachable_dir, tmp_path):
    phys_pg.psql("DROP TABLE IF EXISTS t; CREATE TABLE t (i int); "
                 "INSERT INTO t SELECT generate_series(1, 100)", "app")
    identity = x25519.Identity.generate()
    offsite = tmp_path / "offsite"
    r = start_physical(
        destinations=[{"name": "local", "url": f"file://{tmp_path / 'backups'}"},
                      {"name": "offsite", "url": f"file://{offsite}"}],
        encryption={"recipients": [str(identity.to_public())]})
    client = r.client()
    full = client.create_backup(database="cluster").backup
    # Copies: the folder as written here, and each of its files encrypted offsite.
    copies = {c.destination: c for c in full.copies}
    assert copies["local"].state == copies["offsite"].state == "SUCCEEDED"
    folder = Path(full.file_path).name
    assert copies["offsite"].location == folder
    assert (offsite / f"{folder}.manifest.json").is_file()
    sums = (Path(full.file_path) / "SHA256SUMS").read_text()
    for name in ("base.tar.gz", "pg_wal.tar.gz", "backup_manifest"):
        plain = pyrage.decrypt((offsite / folder / f"{name}.age").read_bytes(), [identity])
        assert f"{hashlib.sha256(plain).hexdigest()}  {name}" in sums
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

    # An unpacked backup that fails pg_verifybackup (a member changed, its sums
    # rewritten to match) fails the rebuild naming that backup, even though the chain
    # combines (the checks run beside the combining), and nothing is left.
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    members = [damaged / Path(run.file_path).name for run in (full, incr)]
    for run, into in zip((full, incr), members, strict=True):
        shutil.copytree(run.file_path, into)
    _rewrite_member(members[1] / "base.tar.gz", "PG_VERSION", b"99\n")
    bins = r.app.service.executor.binaries
    with pytest.raises(CombineFailed, match=rf"pg_verifybackup \({members[1].name}\).*PG_VERSION"):
        rebuild(members, reachable_dir / "never", pg_combinebackup=tool(bins, "pg_combinebackup"),
                pg_verifybackup=tool(bins, "pg_verifybackup"))
    assert not (reachable_dir / "never").exists()
    assert not [p for p in reachable_dir.iterdir() if p.name.startswith(".pgbackup-restore")]

    def scratch() -> set[Path]:
        return set(Path(tempfile.gettempdir()).glob("pgbackup-verify-*"))

    before = scratch()
    deep = client.verify_backup(incr.id, deep=True)
    assert deep.verification == "OK", deep.reason
    assert any(t.table == "t" and t.rows == 200 and t.schema == "app.public"
               for t in deep.tables)
    assert scratch() == before  # nothing left behind

    wal = Path(incr.file_path) / "pg_wal.tar.gz"
    data = bytearray(wal.read_bytes())
    data[len(data) // 2] ^= 0xFF
    wal.write_bytes(bytes(data))
    result = client.verify_backup(incr.id)
    assert result.verification == "FAILED"
    assert f"backup {incr.id}: pg_wal.tar.gz has changed" in result.reason

    (Path(incr.file_path) / "base.tar.gz").unlink()
    result = client.verify_backup(incr.id)
    assert result.verification == "FAILED"
    assert f"backup {incr.id}: base.tar.gz is missing" in result.reason
    assert client.get_backup(incr.id).verification == "FAILED"
    # The full backup is intact; the broken incremental is no parent for the next one.
    assert client.verify_backup(full.id).verification == "OK"
    again = client.create_backup(database="cluster", type="incremental").backup
    assert again.kind == "PHYSICAL_FULL" and again.parent_id == 0
    assert f"backup {incr.id} failed verification" in again.type_reason


def _rewrite_member(archive: Path, name: str, data: bytes) -> None:
    """``archive`` with the member ``name`` holding ``data`` instead."""
    out = archive.with_suffix(".new")
    with tarfile.open(archive, "r:gz") as src, tarfile.open(out, "w:gz") as dst:
        for member in src:
            body = src.extractfile(member) if member.isfile() else None
            if member.name == name:
                member.size, body = len(data), io.BytesIO(data)
            dst.addfile(member, body)
    out.replace(archive)
