"""Restores are not queued: one runs on the replica that got the request. When that
replica dies mid-restore, a surviving replica records the restore FAILED
"interrupted" once the dead one's lease has run out; it is not left RUNNING.
The restore is held for real at CREATE DATABASE, by a lock on pg_database."""

from __future__ import annotations

import psycopg
from replicas import cluster, rows, store_database, tiny, wait_for  # noqa: F401

LEASE = 2.0


def test_a_restore_on_a_killed_replica_is_recorded_interrupted(pg, tiny, cluster):  # noqa: F811
    url, store = store_database(pg)
    survivor, victim = cluster(2, store=url, lease=f"{LEASE:g}s")
    with survivor.client() as client:
        backup = client.create_backup().backup
    lock = psycopg.connect(pg.admin_conninfo("postgres"))
    try:
        lock.execute("LOCK TABLE pg_database IN SHARE MODE")  # CREATE DATABASE waits
        with victim.client() as client:
            restore = client.restore_backup(backup.id, target_database="tiny_restored",
                                            background=True)
        assert restore.status == "RUNNING"
        wait_for(lambda: rows(pg.admin_conninfo("postgres"),
                              "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                              "AND query LIKE 'CREATE DATABASE%%tiny_restored%%'"))
        victim.kill()
        with survivor.client() as client:
            done = wait_for(lambda: client.get_restore(restore.id).status == "FAILED",
                            timeout=LEASE * 5)
            record = client.get_restore(restore.id)
        assert done and record.error.startswith(
            "interrupted: replica node-1 stopped renewing its lease"), record.error
    finally:
        lock.rollback()
        lock.close()
        # The killed replica's CREATE DATABASE went on once the lock was released.
        wait_for(lambda: not rows(pg.admin_conninfo("postgres"),
                                  "SELECT 1 FROM pg_stat_activity WHERE query LIKE "
                                  "'CREATE DATABASE%%tiny_restored%%' AND state = 'active'"))
        pg.psql("DROP DATABASE IF EXISTS tiny_restored WITH (FORCE)")
    # The survivor's own restores are its own: one runs there and succeeds.
    with survivor.client() as client:
        again = client.restore_backup(backup.id, target_database="tiny_restored_2")
    assert again.status == "SUCCEEDED"
    pg.psql("DROP DATABASE IF EXISTS tiny_restored_2 WITH (FORCE)")
    assert rows(store, "SELECT node FROM restore_runs ORDER BY id") == [("node-1",),
                                                                        ("node-0",)]
