"""200 backups asked for at once, through the three replicas: each is executed once,
none is lost, the replicas share them, and no more run at once than
backup.maxConcurrent per replica and cluster.maxPerServer across the cluster."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from itertools import cycle

from replicas import cluster, rows, store_database, tiny, wait_for  # noqa: F401

PER_REPLICA = 2
PER_SERVER = 4


def most_at_once(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    best = now = 0
    for _, step in edges:
        now += step
        best = max(best, now)
    return best


def test_200_concurrent_creates_spread_over_replicas_within_limits(pg, tiny, cluster):  # noqa: F811
    url, store = store_database(pg)
    trio = cluster(3, store=url, backup={"maxConcurrent": PER_REPLICA, "maxQueued": 300},
                   max_per_server=PER_SERVER)
    clients = [r.client() for r in trio]
    try:
        with ThreadPoolExecutor(max_workers=24) as pool:
            created = list(pool.map(lambda c: c.create_backup(background=True).backup.id,
                                    (c for c, _ in zip(cycle(clients), range(200)))))
        assert len(set(created)) == 200
        wait_for(lambda: rows(store, "SELECT count(*) FROM backup_runs WHERE status IN "
                                     "('SUCCEEDED', 'FAILED')")[0][0] == 200, timeout=120)
        # Any replica answers for any run, whoever executed it.
        assert {clients[0].get_backup(i).node for i in created[:30]} == {
            clients[2].get_backup(i).node for i in created[:30]}
    finally:
        for c in clients:
            c.close()
    done = rows(store, "SELECT id, status, node, extract(epoch FROM started_at), "
                       "extract(epoch FROM finished_at) FROM backup_runs ORDER BY id")
    assert sorted(created) == [r[0] for r in done]  # none lost, none extra
    assert {r[1] for r in done} == {"SUCCEEDED"}
    by_node: dict[str, list[tuple[float, float]]] = {}
    for _, _, node, start, end in done:
        by_node.setdefault(node, []).append((float(start), float(end)))
    assert set(by_node) == {r.name for r in trio}  # spread over every replica
    assert all(most_at_once(spans) <= PER_REPLICA for spans in by_node.values())
    assert most_at_once([s for spans in by_node.values() for s in spans]) <= PER_SERVER
    assert len(set(r[0] for r in done)) == 200
    assert rows(store, "SELECT count(*) FROM run_queue") == [(0,)]
