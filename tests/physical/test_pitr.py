"""Point-in-time recovery: rows inserted at T1 < T2 < T3, a restore to a time
between T2 and T3 replays the archived WAL (pg_receivewal, fetched back through
``backupctl wal-fetch``) and holds the rows up to T2 only."""

from __future__ import annotations

import time
from datetime import datetime

from physical_support import fetch_command

from pgbackup_server.physical.scratch import ThrowawayServer


def _wait_archived(r, segment: str, timeout: float = 30.0) -> None:
    wal = r.app.service.wal
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.name.startswith(segment) and not p.name.endswith(".partial")
               for p in wal.files("cluster")):
            return
        time.sleep(0.1)
    raise AssertionError(f"segment {segment} never archived: {wal.status()}")


def test_restore_to_a_time_between_t2_and_t3_has_the_rows_up_to_t2(
        start_physical, phys_pg, reachable_dir):
    phys_pg.psql("DROP TABLE IF EXISTS p; CREATE TABLE p (n int)", "app")
    r = start_physical(wal={"stream": True, "maxLag": "1m", "fetchCommand": fetch_command()})
    client = r.client()
    full = client.create_backup(database="cluster").backup
    phys_pg.psql("INSERT INTO p VALUES (1)", "app")  # T1
    phys_pg.psql("INSERT INTO p VALUES (2)", "app")  # T2
    between = datetime.fromisoformat(phys_pg.psql("SELECT clock_timestamp()").strip())
    phys_pg.psql("INSERT INTO p VALUES (3)", "app")  # T3
    segment = phys_pg.psql("SELECT pg_walfile_name(pg_current_wal_lsn())").strip()
    phys_pg.psql("SELECT pg_switch_wal()")
    _wait_archived(r, segment)

    stats = client.get_stats()
    (archive,) = stats.wal
    assert archive.target == "cluster" and archive.streaming and archive.error == ""
    assert archive.segments >= 1 and archive.newest_restorable is not None

    out = reachable_dir / "pitr"
    restored = client.restore_backup(full.id, target_directory=str(out), target_time=between)
    assert restored.status == "SUCCEEDED"
    assert (out / "recovery.signal").exists()
    assert "wal-fetch" in (out / "postgresql.auto.conf").read_text()
    with ThrowawayServer(out, r.app.service.executor.binaries, trust_local=False) as srv:
        srv.wait_promoted()
        assert srv.psql("SELECT string_agg(n::text, ',' ORDER BY n) FROM p", "app").strip() \
            == "1,2"
