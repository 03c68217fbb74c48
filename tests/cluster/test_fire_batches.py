"""The fires of one instant are claimed, recorded and queued in batches, one
transaction each: replicas claiming the same batches at once win each fire once,
every fire won has its runs PENDING and queued, and the totals count them once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

from replicas import rows, store_database

from pgbackup_server.backup.jobs import jobs_for
from pgbackup_server.cluster.fires import FireClaims, PlannedFire
from pgbackup_server.domain.targets import Targets
from pgbackup_server.persistence import open_store
from pgbackup_server.settings import build_settings

FIRE = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def test_replicas_claiming_the_same_fires_at_once_queue_each_once(pg, tmp_path: Path):
    url, store = store_database(pg)
    open_store(url).close()  # the schema
    settings = build_settings({"database": {"url": pg.url("tiny")},
                               "backup": {"directory": str(tmp_path)}},
                              base=tmp_path, env={})
    targets = Targets(settings.targets)
    (target,) = targets.all
    jobs = tuple(jobs_for(targets, target, tmp_path, 7, False, "backup.directory"))
    fires = [PlannedFire(f"s{i:03d}", FIRE, "127.0.0.1:5432", jobs) for i in range(120)]
    batches = [fires[i:i + 40] for i in range(0, len(fires), 40)]
    engines = [open_store(url) for _ in range(3)]
    won: list[list[str]] = [[] for _ in engines]
    go = threading.Barrier(len(engines))

    def replica(i: int) -> None:
        claims = FireClaims(engines[i].engine, f"node-{i}")
        go.wait()
        skipped = []
        for batch in batches[i:] + batches[:i]:  # each starts on another batch
            got = claims.claim_and_queue(batch, FIRE, wait=False)
            if got is None:
                skipped.append(batch)
            else:
                won[i] += [f.schedule for f, _ in got]
        for batch in skipped:  # taken meanwhile: nothing left to win
            won[i] += [f.schedule for f, _ in claims.claim_and_queue(batch, FIRE) or []]

    threads = [threading.Thread(target=replica, args=(i,)) for i in range(len(engines))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in engines:
        s.close()
    everyone = sorted(name for names in won for name in names)
    assert everyone == [f.schedule for f in fires]  # each fire won once
    assert sum(1 for names in won if names) > 1  # by more than one replica
    recorded = rows(store, "SELECT f.schedule, f.node, r.status, r.schedule, q.node "
                           "FROM schedule_fires f JOIN backup_runs r ON r.id::text = f.run_ids "
                           "JOIN run_queue q ON q.run_id = r.id ORDER BY 1")
    assert [r[0] for r in recorded] == everyone  # each with its one run, queued
    assert {(r[2], r[4]) for r in recorded} == {("PENDING", None)}
    assert all(r[0] == r[3] for r in recorded)
    # The totals count them once, under the key a recount of the runs gives.
    assert rows(store, "SELECT target, database, status, file_state, verification, runs "
                       "FROM run_totals") == rows(
        store, "SELECT target, database, status, file_state, verification, count(*) "
               "FROM backup_runs GROUP BY 1, 2, 3, 4, 5") == [
        ("tiny", "tiny", "PENDING", "NONE", "", 120)]
