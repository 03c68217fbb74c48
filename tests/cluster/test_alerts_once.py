"""Every replica checks the alerts; the store decides which one sends: a stale backup
is notified once per cluster when it starts firing and once when it resolves, not
once per replica."""

from __future__ import annotations

import time

from replicas import cluster, receiver, store_database, tiny, wait_for  # noqa: F401


def test_a_stale_alert_is_sent_once_by_three_replicas(pg, tiny, cluster,  # noqa: F811
                                                     receiver):  # noqa: F811
    url, _ = store_database(pg)
    trio = cluster(3, store=url, alerts={"maxAge": "2s", "checkInterval": "0.5s"},
                   notifications=[{"type": "webhook", "url": receiver.url,
                                   "events": ["stale"], "retries": 0}])
    # No backup yet: stale once maxAge has passed since tracking began.
    wait_for(lambda: receiver.events("stale"), timeout=30)
    time.sleep(2.0)  # four more checks on each replica
    assert receiver.events("stale") == ["firing"]
    with trio[1].client() as client:  # a backup, wherever it runs, resolves it
        client.create_backup()
    wait_for(lambda: len(receiver.events("stale")) > 1, timeout=30)
    time.sleep(1.0)  # a fresh backup for 2 s: no check fires it again meanwhile
    assert receiver.events("stale") == ["firing", "resolved"]
