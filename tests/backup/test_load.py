"""Load: the concurrency limit and queue, and the store under concurrent use."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from conftest import DB
from procs import lock_orders, wait_for


def _intervals_overlap_max(runs) -> int:
    events = []
    for r in runs:
        events.append((r.started_at, 1))
        events.append((r.finished_at, -1))
    peak = cur = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        cur += delta
        peak = max(peak, cur)
    return peak


def test_twenty_simultaneous_creates(pg, start_app):
    stack = start_app(backup={"maxConcurrent": 2, "maxQueued": 3})
    lock = lock_orders(pg.admin_conninfo(DB))  # keep the first runs busy while all arrive
    barrier = threading.Barrier(20)
    results: list[tuple[int, dict]] = []

    def create() -> tuple[int, dict]:
        barrier.wait()
        return stack.rest("POST", "/api/v1/backup/create")

    with ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(create) for _ in range(20)]
        # All requests are in once 5 runs are recorded (2 running, 3 queued) and 15 refused.
        wait_for(lambda: sum(f.done() for f in futures) >= 15, timeout=60)
        lock.close()
        results = [f.result() for f in futures]

    accepted = [body for code, body in results if code == 200]
    refused = [body for code, body in results if code == 429]
    assert len(accepted) + len(refused) == 20, [c for c, _ in results]
    assert len(accepted) == 5 and len(refused) == 15
    assert "backup queue is full" in refused[0]["message"]
    assert "backup.maxQueued" in refused[0]["message"]

    runs = stack.client().list_backups(page_size=100).backups
    assert len(runs) == 5 and all(r.status == "SUCCEEDED" for r in runs)
    files = {r.file_path for r in runs}
    assert len(files) == 5 and all(Path(f).exists() for f in files)
    assert _intervals_overlap_max(runs) <= 2


def test_store_under_concurrent_load(start_app):
    stack = start_app(backup={"maxConcurrent": 1, "maxQueued": 10},
                      schedules=[{"name": "often", "cron": "*/5 * * * *",
                                  "job": "DatabaseBackup"}])
    client = stack.client()
    accepted = [client.create_backup(background=True).backup.id for _ in range(3)]
    stack.app.scheduler.run_now("often")
    paths = ["/api/v1/backup/stats", "/api/v1/backups?page_size=20", "/api/v1/schedules",
             "/api/v1/backups?status=SUCCEEDED"]

    def call(i: int) -> tuple[int, object]:
        return stack.rest("GET", paths[i % len(paths)])

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(call, range(200)))
    bad = [(code, body) for code, body in results if code != 200]
    assert not bad, bad[:3]
    assert not any("locked" in str(body) for _, body in results)

    def settled():
        runs = client.list_backups(page_size=100).backups
        return len(runs) == 4 and all(r.status == "SUCCEEDED" for r in runs) and runs

    runs = wait_for(settled, timeout=120)
    assert set(accepted) <= {r.id for r in runs}
    assert [r.trigger for r in runs].count("SCHEDULE") == 1
    assert client.get_stats().succeeded_runs == 4
