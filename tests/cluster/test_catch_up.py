"""Every replica down while a schedule should have fired: when they come back,
together, the newest missed fire runs once (not once per replica, not once per
missed fire), and the missed_schedule alert is sent once, then resolved once."""

from __future__ import annotations

from datetime import timedelta

from replicas import cluster, receiver, rows, store_database, tiny, wait_for  # noqa: F401

EVERY_MINUTE = [{"name": "every-minute", "cron": "* * * * *", "job": "DatabaseBackup"}]


def test_a_fire_missed_by_every_replica_is_caught_up_once(pg, tiny, cluster,  # noqa: F811
                                                          receiver):  # noqa: F811
    url, store = store_database(pg)
    first = cluster(3, store=url, speed=60, schedules=EVERY_MINUTE)
    wait_for(lambda: rows(store, "SELECT count(*) FROM backup_runs WHERE status = "
                                 "'SUCCEEDED'")[0][0] >= 2, timeout=90)
    for r in first:
        r.stop()
    (last,) = rows(store, "SELECT max(fire_time) FROM schedule_fires")[0]
    # Five and a half minutes pass with no replica up (scheduler.misfireGraceTime: 1h).
    back = (last + timedelta(minutes=5, seconds=30)).replace(tzinfo=None)
    epoch = (back - back.replace(year=1970, month=1, day=1, hour=0, minute=0, second=0,
                                 microsecond=0)).total_seconds()
    again = cluster(3, store=url, speed=1, schedules=EVERY_MINUTE, virtual_start=epoch,
                    generation=1, notifications=[{"type": "webhook", "url": receiver.url,
                                                  "events": ["stale"], "retries": 0}])
    newest_missed = last + timedelta(minutes=5)
    claims = wait_for(lambda: rows(store, "SELECT fire_time, run_ids FROM schedule_fires "
                                          "WHERE fire_time > %s AND fire_time < %s",
                                   last, back), timeout=30)
    caught = [r for r in again
              if "Running a backup missed while every replica was down" in r.log()]
    assert [c[0] for c in claims] == [newest_missed] and len(caught) == 1
    run_id = int(claims[0][1] or wait_for(lambda: rows(
        store, "SELECT run_ids FROM schedule_fires WHERE fire_time = %s",
        newest_missed)[0][0]))
    wait_for(lambda: rows(store, "SELECT status FROM backup_runs WHERE id = %s",
                          run_id)[0][0] == "SUCCEEDED", timeout=60)
    # Sent by the replica that claimed the fire; resolved by the one that ran it.
    wait_for(lambda: len(receiver.events("missed_schedule")) >= 2, timeout=30)
    assert receiver.events("missed_schedule") == ["firing", "resolved"]
