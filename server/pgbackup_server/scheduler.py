"""Cron schedules on APScheduler, in the configured timezone.

Runs of one schedule never overlap: a fire that comes while the previous run
is still going is skipped and logged (APScheduler's ``max_instances=1``).
Fires missed while the service was down are coalesced into one run at start,
if the newest missed fire is within ``scheduler.misfireGraceTime``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from .config import Config, ScheduleConfig
from .models import ScheduleInfo
from .service import BackupService, Clock

log = structlog.get_logger("pgbackup")


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


class Scheduler:
    """The configured schedules, firing ``service.run_scheduled``."""

    def __init__(self, config: Config, service: BackupService, clock: Clock) -> None:
        self.config = config
        self.service = service
        self.clock = clock
        self._scheduler = BackgroundScheduler(timezone=config.scheduler.tz)
        self._entries: dict[str, ScheduleConfig] = {s.name: s for s in config.schedules}
        self._triggers = {s.name: CronTrigger.from_crontab(s.cron, timezone=config.scheduler.tz)
                          for s in config.schedules}

    def start(self) -> None:
        if not self.config.backup.enabled and self.config.schedules:
            log.warning("backup.enabled is false: schedules are listed but will not run",
                        schedules=len(self.config.schedules))
        for entry in self.config.schedules:
            active = entry.enabled and self.config.backup.enabled
            self._scheduler.add_job(
                self.service.run_scheduled, self._triggers[entry.name], args=[entry.name],
                id=entry.name, name=entry.name, max_instances=1, coalesce=True,
                misfire_grace_time=int(self.config.scheduler.misfire_grace_seconds),
                next_run_time=None if not active else self._triggers[entry.name]
                .get_next_fire_time(None, self.clock()))
        self._scheduler.start()
        for name, job in ((j.id, j) for j in self._scheduler.get_jobs()):
            log.info("Schedule registered", schedule=name, cron=self._entries[name].cron,
                     timezone=self.config.scheduler.timezone, next_run_time=str(job.next_run_time))
        self._catch_up()

    def _catch_up(self) -> None:
        now = self.clock()
        for entry in self.config.schedules:
            if not (entry.enabled and self.config.backup.enabled):
                continue
            last = self.service.store.last_scheduled_run(entry.name)
            if last is None:
                continue  # a first start is not an outage
            trigger = self._triggers[entry.name]
            last_at = last.queued_at
            if last.error.startswith(("interrupted", "cancelled")):
                # The fire that started the cut-short run did not produce a backup:
                # it counts as missed (its run was queued just after the fire).
                last_at -= timedelta(seconds=self.config.scheduler.misfire_grace_seconds)
            missed = last_fire_between(trigger, last_at, now)
            if missed is None:
                continue
            self.service.events.on_missed_fire(entry.name, missed)
            fire = missed_fire(trigger, last_run=last_at, now=now,
                               grace_seconds=self.config.scheduler.misfire_grace_seconds)
            if fire is not None:
                log.warning("Running a backup missed while the service was down",
                            schedule=entry.name, missed_fire=fire.isoformat())
                self.run_now(entry.name)
            else:
                log.error("A scheduled backup was missed while the service was down and is "
                          "past scheduler.misfireGraceTime; not run", schedule=entry.name,
                          missed_fire=missed.isoformat())

    def run_now(self, name: str) -> None:
        """Make the scheduler fire ``name`` now, through its normal path."""
        job = self._scheduler.get_job(name)
        if job is not None:
            job.modify(next_run_time=self.clock())

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def schedules(self) -> list[ScheduleInfo]:
        out = []
        for entry in self.config.schedules:
            job = self._scheduler.get_job(entry.name) if self._scheduler.running else None
            out.append(ScheduleInfo(
                name=entry.name, cron=entry.cron, timezone=self.config.scheduler.timezone,
                enabled=entry.enabled and self.config.backup.enabled, job=entry.job,
                next_run_time=job.next_run_time if job is not None else None))
        return out
