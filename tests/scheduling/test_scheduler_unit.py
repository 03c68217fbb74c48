"""Catch-up of fires missed while the service was down, with an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from pgbackup_server.scheduling.catchup import last_fire_between, missed_fire

JAKARTA = ZoneInfo("Asia/Jakarta")
DAILY_2AM = CronTrigger.from_crontab("0 2 * * *", timezone=JAKARTA)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=JAKARTA)


def test_last_fire_between():
    assert last_fire_between(DAILY_2AM, at(1, 3), at(3, 5)) == at(3, 2)
    assert last_fire_between(DAILY_2AM, at(1, 3), at(2, 1)) is None
    every_5 = CronTrigger.from_crontab("*/5 * * * *", timezone=UTC)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert last_fire_between(every_5, start, start + timedelta(minutes=12)) == \
        start + timedelta(minutes=10)


def test_missed_fire_within_grace_is_caught_up_once():
    # Last run two days ago; down over this morning's 2 AM; back at 2:30.
    fire = missed_fire(DAILY_2AM, last_run=at(1, 2), now=at(3, 2, 30), grace_seconds=3600)
    assert fire == at(3, 2)


def test_missed_fire_outside_grace_is_not_run():
    assert missed_fire(DAILY_2AM, last_run=at(1, 2), now=at(3, 4), grace_seconds=3600) is None


def test_fire_already_run_is_not_repeated():
    assert missed_fire(DAILY_2AM, last_run=at(3, 2), now=at(3, 2, 30),
                       grace_seconds=3600) is None


def test_first_start_is_not_an_outage():
    assert missed_fire(DAILY_2AM, last_run=None, now=at(3, 2, 30), grace_seconds=3600) is None
