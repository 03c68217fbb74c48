"""Scheduled fires in a cluster: every replica watches every schedule, and the first
to insert ``(schedule, fire time)`` into ``schedule_fires`` (a unique key) fires it.
The others' inserts do nothing, so each fire runs once whatever the number of
replicas; its run(s) go to the cluster queue, where any replica takes them.

Fire times follow the service's clock (injectable); a fire missed while every
replica was down is caught up once at start, within ``scheduler.misfireGraceTime``,
by the same unique key. Like the single scheduler, fires that pass while a tick is
late are coalesced into the newest.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import structlog
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import Engine, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from ..domain.models import ScheduleInfo
from ..domain.ports import Clock, Listener, RunStore
from ..persistence.codec import aware
from ..persistence.schema import schedule_fires
from ..scheduling.catchup import last_fire_between, missed_fire
from ..settings import ScheduleConfig, Settings
from .retry import on_store

log = structlog.get_logger("pgbackup")
CLAIM_CHUNK = 50  # fires claimed per statement
# What a claimed fire calls: (schedule, target) -> the ids of the runs it queued.
Fire = Callable[[str, str], list[int]]


class FireClaims:
    """``schedule_fires``: one row per fire, inserted by the replica that fires it."""

    def __init__(self, engine: Engine, node: str) -> None:
        self.engine = engine
        self.node = node

    def claim(self, schedule: str, fire_time: datetime, now: datetime) -> bool:
        return bool(self.claim_many([(schedule, fire_time)], now))

    def claim_many(self, fires: list[tuple[str, datetime]],
                   now: datetime) -> set[tuple[str, datetime]]:
        """Claim ``fires`` in one statement; return those this replica won."""
        if not fires:
            return set()
        with self.engine.begin() as conn:
            won = conn.execute(pg_insert(schedule_fires).values([
                {"schedule": name, "fire_time": at, "node": self.node, "claimed_at": now,
                 "run_ids": ""} for name, at in fires]).on_conflict_do_nothing()
                .returning(schedule_fires.c.schedule, schedule_fires.c.fire_time)).all()
        return {(name, aware(at) or at) for name, at in won}

    def record(self, schedule: str, fire_time: datetime, outcome: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(schedule_fires).where(schedule_fires.c.schedule == schedule,
                                                      schedule_fires.c.fire_time == fire_time)
                         .values(run_ids=outcome[:2000]))

    def last_fires(self) -> dict[str, datetime]:
        """The newest claimed fire of each schedule."""
        with self.engine.connect() as conn:
            return {name: aware(at) or at for name, at in conn.execute(
                select(schedule_fires.c.schedule, func.max(schedule_fires.c.fire_time))
                .group_by(schedule_fires.c.schedule))}


class ClusterScheduler:
    """The schedules of one replica, fired through claims. Same face as
    :class:`~..scheduling.scheduler.Scheduler` (start, shutdown, schedules)."""

    def __init__(self, config: Settings, claims: FireClaims, *, fire: Fire, store: RunStore,
                 events: Listener, clock: Clock, tick_seconds: float = 0.1) -> None:
        self.config = config
        self.claims = claims
        self.fire = fire
        self.store = store
        self.events = events
        self.clock = clock
        self.tick_seconds = tick_seconds
        tz = config.scheduler.tz
        self._entries = [s for s in config.schedules
                         if s.enabled and config.backup.enabled]
        self._triggers = {s.name: CronTrigger.from_crontab(s.cron, timezone=tz)
                          for s in config.schedules}
        self._next: dict[str, datetime | None] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="cluster-fire")
        self.fired = 0

    def start(self) -> None:
        if not self.config.backup.enabled and self.config.schedules:
            log.warning("backup.enabled is false: schedules are listed but will not run",
                        schedules=len(self.config.schedules))
        now = self.clock()
        for entry in self._entries:
            self._next[entry.name] = self._triggers[entry.name].get_next_fire_time(None, now)
            log.info("Schedule registered", schedule=entry.name, cron=entry.cron,
                     timezone=self.config.scheduler.timezone,
                     next_run_time=str(self._next[entry.name]), cluster=True)
        self._thread = threading.Thread(target=self._loop, name="cluster-scheduler",
                                        daemon=True)
        self._thread.start()
        # Beside the fires to come: with many schedules, looking back takes a while.
        threading.Thread(target=self._catch_up_all, args=(now,), name="cluster-catch-up",
                         daemon=True).start()

    def _catch_up_all(self, now: datetime) -> None:
        try:
            last = on_store(self.claims.last_fires)
        except Exception:
            log.exception("Catch-up of missed fires failed")
            return
        for entry in self._entries:
            if self._stop.is_set():
                return
            try:
                self._catch_up(entry, now, last.get(entry.name))
            except Exception:
                log.exception("Catch-up of a missed fire failed", schedule=entry.name)

    def _catch_up(self, entry: ScheduleConfig, now: datetime, last: datetime | None) -> None:
        trigger = self._triggers[entry.name]
        if last is None:
            previous = self.store.last_scheduled_run(entry.name)
            if previous is None:
                return  # a first start is not an outage
            last = previous.queued_at
        missed = last_fire_between(trigger, last, now)
        if missed is None:
            return
        grace = self.config.scheduler.misfire_grace_seconds
        fire = missed_fire(trigger, last_run=last, now=now, grace_seconds=grace)
        if fire is None:
            log.error("A scheduled backup was missed while every replica was down and is "
                      "past scheduler.misfireGraceTime; not run", schedule=entry.name,
                      missed_fire=missed.isoformat())
            return
        if self.claims.claim(entry.name, fire, now):
            self.events.on_missed_fire(entry.name, fire)
            log.warning("Running a backup missed while every replica was down",
                        schedule=entry.name, missed_fire=fire.isoformat())
            self._pool.submit(self._fire, entry, fire)

    def _loop(self) -> None:
        while not self._stop.wait(self.tick_seconds):
            now = self.clock()
            due = {}
            for entry in self._entries:
                at = self._due(entry.name, now)
                if at is not None:
                    due[entry.name] = (entry, at)
            if not due:
                continue
            # In chunks, in a random order: with many fires at once, replicas win a
            # share each and queue their runs in parallel (a run is queued by its
            # claimer), and firing starts after the first chunk.
            items = list(due.items())
            random.shuffle(items)
            for start in range(0, len(items), CLAIM_CHUNK):
                chunk = items[start:start + CLAIM_CHUNK]
                try:
                    won = on_store(self.claims.claim_many,
                                   [(name, at) for name, (_, at) in chunk], now)
                except Exception:
                    log.exception("Could not claim scheduled fires", fires=len(chunk))
                    continue
                for name, (entry, at) in chunk:
                    if (name, at) in won:
                        self._pool.submit(self._fire, entry, at)

    def _due(self, name: str, now: datetime) -> datetime | None:
        """The newest fire time of ``name`` that has come, if one has; moves on."""
        due = None
        trigger = self._triggers[name]
        upcoming = self._next.get(name)
        while upcoming is not None and upcoming <= now:
            due = upcoming
            upcoming = trigger.get_next_fire_time(due, due + timedelta(microseconds=1))
        self._next[name] = upcoming
        return due

    def _fire(self, entry: ScheduleConfig, fire_time: datetime) -> None:
        log.info("Scheduled fire claimed", schedule=entry.name, fire_time=fire_time.isoformat(),
                 node=self.claims.node)
        self.fired += 1
        try:
            ids = self.fire(entry.name, entry.target)
            outcome = ",".join(map(str, ids))
        except Exception as exc:  # recorded on a FAILED run by the service, or here
            outcome = f"error: {exc}"
        try:
            on_store(self.claims.record, entry.name, fire_time, outcome)
        except Exception:
            log.warning("Could not record a fire's runs", schedule=entry.name)

    def run_now(self, name: str) -> None:
        """Not offered in a cluster: fires go through claims only."""

    def shutdown(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=True)

    def schedules(self) -> list[ScheduleInfo]:
        return [ScheduleInfo(name=e.name, cron=e.cron, timezone=self.config.scheduler.timezone,
                             enabled=e.enabled and self.config.backup.enabled, job=e.job,
                             next_run_time=self._next.get(e.name))
                for e in self.config.schedules]
