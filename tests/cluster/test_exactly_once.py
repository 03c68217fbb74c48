"""Three replicas share one PostgreSQL store; a cron that fires every minute, on a
clock 120 times faster than real time (shared by the replicas), fires 20 times:
each fire is claimed once and runs once, the runs are spread over the replicas,
and every replica answers for every run."""

from __future__ import annotations

from datetime import timedelta
from itertools import pairwise

from replicas import cluster, rows, store_database, tiny, wait_for  # noqa: F401

EVERY_MINUTE = [{"name": "every-minute", "cron": "* * * * *", "job": "DatabaseBackup"}]


def test_twenty_fires_run_exactly_once_across_three_replicas(pg, tiny, cluster):  # noqa: F811
    url, store = store_database(pg)
    trio = cluster(3, store=url, speed=120, schedules=EVERY_MINUTE,
                   backup={"maxConcurrent": 2}, max_per_server=4)
    wait_for(lambda: len(rows(store, "SELECT 1 FROM schedule_fires")) >= 21, timeout=90)
    for r in trio:  # a clean stop: runs taken finish, runs waiting stay queued
        r.stop()
    fires = rows(store, "SELECT fire_time, node, run_ids FROM schedule_fires ORDER BY 1")
    # Consecutive minutes: no fire missed, and (the key) none twice.
    times = [f[0] for f in fires]
    assert all(b - a == timedelta(minutes=1) for a, b in pairwise(times)), times
    run_ids = [f[2] for f in fires]
    assert all(ids.isdigit() for ids in run_ids), run_ids  # one run per fire
    runs = rows(store, "SELECT id, status, node, schedule FROM backup_runs ORDER BY id")
    assert sorted(int(i) for i in run_ids) == [r[0] for r in runs]  # no run of no fire
    done = [r for r in runs[:20] if r[1] == "SUCCEEDED"]
    assert len(done) == 20, runs
    # Work is spread: more than one replica fired and executed.
    assert len({f[1] for f in fires}) > 1 and len({r[2] for r in done}) > 1
    # Nothing left half-taken: a clean stop hands waiting runs back to the queue.
    assert rows(store, "SELECT count(*) FROM run_queue WHERE node IS NOT NULL") == [(0,)]
