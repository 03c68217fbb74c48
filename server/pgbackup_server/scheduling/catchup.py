"""Which fire to catch up at start: pure functions over a cron trigger's times."""

from __future__ import annotations

from datetime import datetime, timedelta

from apscheduler.triggers.cron import CronTrigger


def last_fire_between(trigger: CronTrigger, start: datetime, end: datetime) -> datetime | None:
    """The newest fire time of ``trigger`` in ``(start, end]``, if any."""
    last = None
    fire = trigger.get_next_fire_time(None, start + timedelta(microseconds=1))
    while fire is not None and fire <= end:
        last = fire
        fire = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
    return last


def missed_fire(trigger: CronTrigger, *, last_run: datetime | None, now: datetime,
                grace_seconds: float) -> datetime | None:
    """The fire to catch up at start: the newest one within the grace time that
    came after the schedule's last recorded run. A schedule that never ran has
    nothing to catch up (a first start is not an outage)."""
    if last_run is None:
        return None
    window_start = max(last_run, now - timedelta(seconds=grace_seconds))
    return last_fire_between(trigger, window_start, now)
