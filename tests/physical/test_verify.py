"""Verification of physical backups: quick verify names the file of the chain that
changed or went missing; deep verify starts the restored chain and counts rows,
leaving nothing behind."""

from __future__ import annotations

import tempfile
from pathlib import Path


def test_a_deleted_or_changed_incremental_file_fails_verify_naming_it(start_physical,
                                                                      phys_pg):
    phys_pg.psql("DROP TABLE IF EXISTS v; CREATE TABLE v AS SELECT generate_series(1, 50) i",
                 "app")
    r = start_physical()
    client = r.client()
    full = client.create_backup(database="cluster").backup
    phys_pg.psql("INSERT INTO v SELECT generate_series(51, 80)", "app")
    incr = client.create_backup(database="cluster", type="incremental").backup
    assert incr.parent_id == full.id

    def scratch() -> set[Path]:
        return set(Path(tempfile.gettempdir()).glob("pgbackup-verify-*"))

    before = scratch()
    deep = client.verify_backup(incr.id, deep=True)
    assert deep.verification == "OK", deep.reason
    assert any(t.table == "v" and t.rows == 80 and t.schema == "app.public"
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
