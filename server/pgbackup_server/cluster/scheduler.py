"""Scheduled fires in a cluster: every replica watches every schedule, and the first
to insert ``(schedule, fire time)`` into ``schedule_fires`` (a unique key) fires it.
The others' inserts do nothing, so each fire runs once whatever the number of
replicas; its run(s) go to the cluster queue, where any replica takes them. The
fires of one instant are claimed, recorded and queued in batches, one transaction
each (:mod:`.fires`).

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

from ..backup.jobs import Job
from ..domain.errors import BackupError
from ..domain.models import BackupType, ScheduleInfo
from ..domain.ports import Clock, Listener, RunStore
from ..scheduling.catchup import last_fire_between, missed_fire
from ..settings import ScheduleConfig, Settings
from .fires import FireClaims, PlannedFire
from .retry import on_store

log = structlog.get_logger("pgbackup")
CLAIM_CHUNK = 50  # fires claimed, recorded and queued per transaction
# A claimed fire whose jobs could not be planned: (schedule, target) -> the ids of the
# runs it queued (the service records the failure on a FAILED run).
Fire = Callable[[str, str], list[int]]
# The jobs of a fire, recording nothing: (target, type) -> jobs; BackupError if none.
Plan = Callable[[str, BackupType], list[Job]]
# Which database server a target's runs go to (the queue's server name).
ServerOf = Callable[[str], str]


class ClusterScheduler:
    """The schedules of one replica, fired through claims. Same face as
    :class:`~..scheduling.scheduler.Scheduler` (start, shutdown, schedules)."""

    def __init__(self, config: Settings, claims: FireClaims, *, fire: Fire, plan: Plan,
                 server_of: ServerOf, queued: Callable[[], None], store: RunStore,
                 events: Listener, clock: Clock, tick_seconds: float = 0.1) -> None:
        """``queued``: called when this replica queued runs (wakes its queue)."""
        self.config = config
        self.claims = claims
        self.fire = fire
        self.plan = plan
        self.server_of = server_of
        self.queued = queued
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
        due = []
        for entry in self._entries:
            if self._stop.is_set():
                return
            try:
                fire = self._catch_up(entry, now, last.get(entry.name))
            except Exception:
                log.exception("Catch-up of a missed fire failed", schedule=entry.name)
                continue
            if fire is not None:
                due.append((entry, fire))
        # Claimed and queued together, in batches, like the fires of one instant.
        for name, fire in sorted(self._fire_due(due, now)):
            self.events.on_missed_fire(name, fire)
            log.warning("Running a backup missed while every replica was down",
                        schedule=name, missed_fire=fire.isoformat())

    def _catch_up(self, entry: ScheduleConfig, now: datetime,
                  last: datetime | None) -> datetime | None:
        """The missed fire of ``entry`` to run now, if any (one past the grace is
        claimed and reported here, once)."""
        trigger = self._triggers[entry.name]
        if last is None:
            previous = self.store.last_scheduled_run(entry.name)
            if previous is None:
                return None  # a first start is not an outage
            last = previous.queued_at
        missed = last_fire_between(trigger, last, now)
        if missed is None:
            return None
        grace = self.config.scheduler.misfire_grace_seconds
        fire = missed_fire(trigger, last_run=last, now=now, grace_seconds=grace)
        # One past the grace is claimed too, so that one replica alone reports it.
        if fire is None and on_store(self.claims.claim, entry.name, missed, now):
            on_store(self.claims.record, entry.name, missed,
                     "not run: past scheduler.misfireGraceTime")
            self.events.on_missed_fire(entry.name, missed)
            log.error("A scheduled backup was missed while every replica was down and "
                      "is past scheduler.misfireGraceTime; not run", schedule=entry.name,
                      missed_fire=missed.isoformat())
        return fire

    def _loop(self) -> None:
        while not self._stop.wait(self.tick_seconds):
            now = self.clock()
            due = []
            for entry in self._entries:
                at = self._due(entry.name, now)
                if at is not None:
                    due.append((entry, at))
            if due:
                self._fire_due(due, now)

    def _fire_due(self, due: list[tuple[ScheduleConfig, datetime]],
                  now: datetime) -> set[tuple[str, datetime]]:
        """Claim the fires ``due`` and queue their runs; those this replica won."""
        planned = self._plan(due)
        planned_keys = {f.key for f in planned}
        won: set[tuple[str, datetime]] = set()
        for entry, at in due:  # no jobs: claimed one by one, the service records why
            if (entry.name, at) not in planned_keys:
                try:
                    if on_store(self.claims.claim, entry.name, at, now):
                        won.add((entry.name, at))
                        self._pool.submit(self._fire, entry, at)
                except Exception:
                    log.exception("Could not claim a scheduled fire", schedule=entry.name)
        # Fixed chunks of the fires in key order (the same on every replica), visited
        # in a random order; a chunk another replica is claiming is skipped, then
        # visited again at the end (by then its fires are taken). With many fires at
        # once, replicas queue different chunks in parallel, never waiting for each
        # other, and the first runs are queued after one transaction.
        planned.sort(key=lambda f: f.key)
        chunks = [planned[i:i + CLAIM_CHUNK] for i in range(0, len(planned), CLAIM_CHUNK)]
        random.shuffle(chunks)
        busy = []
        for chunk in chunks:
            got = self._claim_and_queue(chunk, wait=False)
            if got is None:
                busy.append(chunk)
            else:
                won |= got
        for chunk in busy:
            won |= self._claim_and_queue(chunk) or set()
        return won

    def _plan(self, due: list[tuple[ScheduleConfig, datetime]]) -> list[PlannedFire]:
        """The jobs of each fire, asked once per (target, type) of the fires due; a fire
        whose jobs cannot be found is left out. An allDatabases target asks its server
        for its databases: several targets are asked in parallel."""
        kinds = sorted({(entry.target, entry.type) for entry, _ in due})

        def jobs(kind: tuple[str, BackupType]) -> tuple[str, tuple[Job, ...]] | None:
            try:
                return self.server_of(kind[0]), tuple(self.plan(*kind))
            except BackupError:
                return None

        planned = dict(zip(kinds, map(jobs, kinds) if len(kinds) == 1 else
                           self._pool.map(jobs, kinds), strict=True))
        return [PlannedFire(entry.name, at, *found) for entry, at in due
                if (found := planned[(entry.target, entry.type)]) is not None]

    def _claim_and_queue(self, fires: list[PlannedFire], *,
                         wait: bool = True) -> set[tuple[str, datetime]] | None:
        """Claim ``fires``, queueing the runs of those won; those won (None: skipped,
        another replica is claiming them; see FireClaims.claim_and_queue)."""
        try:
            won = on_store(self.claims.claim_and_queue, fires, self.clock(), wait=wait)
        except Exception:
            log.exception("Could not claim scheduled fires", fires=len(fires))
            return set()
        if won is None:
            return None
        for fire, run_ids in won:
            log.info("Scheduled fire claimed", schedule=fire.schedule,
                     fire_time=fire.fire_time.isoformat(), node=self.claims.node,
                     run_ids=run_ids)
        self.fired += len(won)
        if won:
            self.queued()
        return {fire.key for fire, _ in won}

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
