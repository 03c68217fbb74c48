"""The store's PostgreSQL restarts while the replicas fire and run backups: every
replica rides it out, and no run is lost or doubled. The store is a PostgreSQL of
its own here, so that it can be restarted."""

from __future__ import annotations

import re
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
from replicas import cluster, rows, tiny, wait_for  # noqa: F401

from pgbackup_server.postgres.embedded import EmbeddedPostgres

EVERY_MINUTE = [{"name": "every-minute", "cron": "* * * * *", "job": "DatabaseBackup"}]


@pytest.fixture
def store_pg():
    server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="pgbackup-store-pg-"))).start()
    yield server
    server.destroy()


def test_store_restart_mid_run_loses_and_doubles_nothing(tiny, cluster, store_pg):  # noqa: F811
    store_pg.create_database("store")
    url = store_pg.url("store").replace("postgresql://", "postgresql+psycopg://")
    store = store_pg.admin_conninfo("store")
    trio = cluster(3, store=url, speed=60, lease="20s", schedules=EVERY_MINUTE,
                   backup={"maxConcurrent": 2}, max_per_server=4)

    def fires() -> int:
        return len(rows(store, "SELECT 1 FROM schedule_fires"))

    wait_for(lambda: fires() >= 3, timeout=30)
    store_pg.stop("fast")  # connections are cut, mid-run for some
    time.sleep(1.5)
    store_pg.start()
    before = fires()
    wait_for(lambda: fires() >= before + 3, timeout=40)
    for r in trio:
        with r.client() as client:  # every replica is back, and heartbeating
            view = client.get_cluster()
            assert len(view.nodes) == 3 and not any(n.silent for n in view.nodes)
    for r in trio:
        r.stop()
    claimed = rows(store, "SELECT run_ids FROM schedule_fires ORDER BY fire_time")
    assert all(ids.isdigit() for (ids,) in claimed), claimed  # one run per fire
    logs = "".join(r.log() for r in trio)
    # A run whose replica could not renew its lease for too long is stopped, FAILED
    # "interrupted" and queued again as a new run: that is recovery, not a loss.
    again = {int(new): int(old) for new, old in re.findall(
        r"Interrupted scheduled run queued again\s+run_id=(\d+)\s+interrupted_run=(\d+)", logs)}
    runs = rows(store, "SELECT id, status, error FROM backup_runs ORDER BY id")
    assert sorted([int(ids) for (ids,) in claimed] + list(again)) == [r[0] for r in runs]
    for run_id, status, error in runs:
        if status == "FAILED":  # only ever interrupted, and then queued again
            assert error.startswith("interrupted") and run_id in again.values(), runs
        else:  # PENDING: still queued at the stop
            assert status in ("SUCCEEDED", "PENDING"), runs
    taken = Counter(int(m) for m in re.findall(
        r"Run taken from the cluster queue\s+run_id=(\d+)", logs))
    assert taken and max(taken.values()) == 1, taken  # never executed twice
    assert all(r[0] in taken for r in runs if r[1] == "SUCCEEDED")
