"""Archived WAL at the destinations: each segment pg_receivewal finishes is copied,
age-encrypted, to S3 under ``wal/<target>/``; a restore to a point in time on a host
whose local archive is gone fetches the WAL back from there; retention prunes it by
the local rule; a failing destination is counted, alerted on and retried, while
pg_receivewal goes on archiving."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import time
import urllib.request
import uuid
from dataclasses import replace
from datetime import datetime

from physical_support import fetch_command
from pyrage import x25519

from pgbackup_server.backup.copies import RetryPolicy
from pgbackup_server.physical.chain import WAL_SEGMENT_SIZE, lsn_text, segment_start
from pgbackup_server.physical.scratch import ThrowawayServer

XLP_PAGE_MAGIC_PG18 = 0xD118


def _until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never met"
        time.sleep(0.05)


def _archived(wal, segment: str) -> bool:
    return any(p.name.startswith(segment) and not p.name.endswith(".partial")
               for p in wal.files("cluster"))


def _switch(phys_pg) -> str:
    """Close the current WAL segment (written to first: a segment just begun does not
    switch); its name."""
    phys_pg.psql("SELECT pg_logical_emit_message(false, 'pgbackup-test', 'x')")
    segment = phys_pg.psql("SELECT pg_walfile_name(pg_current_wal_lsn())").strip()
    phys_pg.psql("SELECT pg_switch_wal()")
    return segment


def test_wal_reaches_s3_encrypted_and_a_host_without_the_archive_restores_from_it(
        start_physical, phys_pg, s3, reachable_dir, tmp_path):
    identity = x25519.Identity.generate()
    key = tmp_path / "key.txt"
    key.write_text(f"{identity}\n")
    key.chmod(0o600)
    bucket = s3.make_bucket()
    phys_pg.psql("DROP TABLE IF EXISTS w; CREATE TABLE w (n int)", "app")
    r = start_physical(
        wal={"stream": True, "maxLag": "1m", "fetchCommand": fetch_command()}, env=s3.env(),
        destinations=[{"name": "local", "url": f"file://{tmp_path / 'backups'}"},
                      s3.destination("offsite", f"{bucket}/pg")],
        encryption={"recipients": [str(identity.to_public())], "identityFile": str(key)})
    client = r.client()
    wal = r.app.service.wal
    full = client.create_backup(database="cluster").backup
    assert full.status == "SUCCEEDED", full.error
    phys_pg.psql("INSERT INTO w VALUES (1)", "app")  # T1
    phys_pg.psql("INSERT INTO w VALUES (2)", "app")  # T2
    between = datetime.fromisoformat(phys_pg.psql("SELECT clock_timestamp()").strip())
    phys_pg.psql("INSERT INTO w VALUES (3)", "app")  # T3
    segment = _switch(phys_pg)
    _until(lambda: _archived(wal, segment))
    wal.copies.ship_once()

    keys = [k for k in s3.keys(bucket) if k.startswith("pg/wal/cluster/")]
    assert f"pg/wal/cluster/{segment}.gz.age" in keys
    assert all(k.endswith(".age") for k in keys)
    ciphertext = tmp_path / "segment.age"
    ciphertext.write_bytes(s3.client().get_object(
        Bucket=bucket, Key=f"pg/wal/cluster/{segment}.gz.age")["Body"].read())
    plain = subprocess.run(["age", "-d", "-i", str(key), str(ciphertext)],
                           capture_output=True, check=True).stdout
    data = gzip.decompress(plain)
    assert len(data) == 16 * 1024 * 1024
    assert int.from_bytes(data[:2], "little") == XLP_PAGE_MAGIC_PG18  # a WAL page header
    assert data[8:16] == segment_start(segment).to_bytes(8, "little")  # its own address

    # This host loses its archive: the restore's restore_command reads S3.
    wal.stop()
    shutil.rmtree(wal.directory("cluster"))
    out = reachable_dir / "pitr"
    restored = client.restore_backup(full.id, target_directory=str(out), target_time=between)
    assert restored.status == "SUCCEEDED", restored.error
    with ThrowawayServer(out, r.app.service.executor.binaries, trust_local=False) as srv:
        srv.wait_promoted()
        assert srv.psql("SELECT string_agg(n::text, ',' ORDER BY n) FROM w", "app").strip() \
            == "1,2"

    # Retention: a kept backup starting after the segment no longer needs it there.
    run = r.app.service.store.get(full.id)
    later = replace(run, start_lsn=lsn_text(segment_start(segment) + WAL_SEGMENT_SIZE))
    wal.copies.prune("cluster", [later])
    left = set(s3.keys(bucket))
    assert f"pg/wal/cluster/{segment}.gz.age" not in left
    assert all(k in left for k in keys if k.split("/")[-1][:24] > segment
               or ".history" in k)


def test_a_failing_destination_is_counted_alerted_and_retried_while_archiving_goes_on(
        start_physical, phys_pg, s3, tmp_path):
    bucket = f"b-later-{uuid.uuid4().hex[:10]}"  # not created yet: every copy fails
    r = start_physical(wal={"stream": True, "maxLag": "1m"}, env=s3.env(),
                       destinations=[{"name": "local", "url": f"file://{tmp_path / 'backups'}"},
                                     s3.destination("offsite", f"{bucket}/pg")])
    wal = r.app.service.wal
    wal.copies.copier.retry = RetryPolicy(attempts=2, wait_min=0, wait_max=0,
                                          sleep=lambda _: None)
    receiver = wal.receivers["cluster"]
    _until(lambda: receiver.running)
    segment = _switch(phys_pg)
    _until(lambda: _archived(wal, segment))  # pg_receivewal is not held up
    assert wal.copies.ship_once() == 0
    assert wal.copies.failures[("cluster", "offsite")] >= 1
    alerts = r.app.observability.alerts
    alerts.check()
    firing = alerts.active()["wal_archiving/cluster"]
    assert "offsite" in firing.details["copy_errors"]
    with urllib.request.urlopen(f"http://127.0.0.1:{r.app.metrics_port}/metrics") as resp:
        text = resp.read().decode()
    assert 'backup_wal_copy_failures_total{destination="offsite",target="cluster"}' in text
    assert receiver.running

    s3.client().create_bucket(Bucket=bucket)  # the destination is back
    assert wal.copies.ship_once() >= 1
    assert f"pg/wal/cluster/{segment}.gz" in s3.keys(bucket)
    alerts.check()
    assert "wal_archiving/cluster" not in alerts.active()
    assert wal.copies.ship_once() == 0  # nothing is copied twice
