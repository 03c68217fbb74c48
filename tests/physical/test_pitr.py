"""Point-in-time recovery: rows inserted at T1 < T2 < T3, a restore to a time
between T2 and T3 replays the archived WAL (pg_receivewal, fetched back through
``backupctl wal-fetch``) and holds the rows up to T2 only."""

from __future__ import annotations

import time
import urllib.request

from physical_support import fetch_command, rows_at_three_times

from pgbackup_server.physical.scratch import ThrowawayServer


def test_restore_to_a_time_between_t2_and_t3_has_the_rows_up_to_t2(
        start_physical, phys_pg, reachable_dir):
    phys_pg.psql("DROP TABLE IF EXISTS p; CREATE TABLE p (n int)", "app")
    r = start_physical(wal={"stream": True, "maxLag": "1m", "fetchCommand": fetch_command()})
    client = r.client()
    full = client.create_backup(database="cluster").backup
    between = rows_at_three_times(r, phys_pg, "p")

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


def _until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never met"
        time.sleep(0.05)


def test_archiving_that_stops_fires_an_alert_and_metrics_show_the_stream(start_physical,
                                                                          phys_pg):
    r = start_physical(wal={"stream": True, "maxLag": "1m"})
    receiver = r.app.service.wal.receivers["cluster"]
    _until(lambda: receiver.running)
    with urllib.request.urlopen(f"http://127.0.0.1:{r.app.metrics_port}/metrics") as resp:
        text = resp.read().decode()
    assert 'backup_wal_streaming{target="cluster"} 1.0' in text
    assert 'backup_wal_lag_bytes{target="cluster"}' in text
    alerts = r.app.observability.alerts
    assert r.client().get_stats().wal[0].slot == "pgbackup_cluster"

    # The receiver dies (its connection is cut): the alert fires until it is back.
    phys_pg.psql("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                 "WHERE slot_name = 'pgbackup_cluster'")
    _until(lambda: not receiver.running and receiver.error)
    alerts.check()
    firing = alerts.active()
    assert "wal_archiving/cluster" in firing
    assert firing["wal_archiving/cluster"].details["slot"] == "pgbackup_cluster"
    _until(lambda: receiver.running)
    alerts.check()
    assert "wal_archiving/cluster" not in alerts.active()
