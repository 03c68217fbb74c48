"""Cron schedules on APScheduler, in the configured timezone.

Runs of one schedule never overlap: a fire that comes while the previous run
is still going is skipped and logged (APScheduler's ``max_instances=1``).
Fires missed while the service was down are coalesced into one run at start,
if the newest missed fire is within ``scheduler.misfireGraceTime``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from ..domain.models import ScheduleInfo
from ..domain.ports import Clock, Listener, RunStore
from ..settings import ScheduleConfig, Settings
from .catchup import last_fire_between, missed_fire

# What a fire calls: (schedule name, target name); it returns when the run ended.
Fire = Callable[[str, str], None]

log = structlog.get_logger("pgbackup")


class Scheduler:
    """The configured schedules, calling ``fire`` at their times. It reads the last
    scheduled runs from ``store`` and reports missed fires to ``events``."""

    def __init__(self, config: Settings, *, fire: Fire, store: RunStore, events: Listener,
                 clock: Clock) -> None:
        self.config = config
        self.fire = fire
        self.store = store
        self.events = events
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
                self.fire, self._triggers[entry.name], args=[entry.name, entry.target],
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
            last = self.store.last_scheduled_run(entry.name)
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
            self.events.on_missed_fire(entry.name, missed)
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
                next_run_time=job.next_run_time if job is not None else None,
                target=entry.target or self.config.targets[0].name,
                last_run=self.store.last_scheduled_run(entry.name),
                type=entry.type))
        return out
