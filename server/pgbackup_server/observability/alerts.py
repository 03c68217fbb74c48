"""Alerts: a backup that should exist and does not, or one that is not sound.

- ``stale``: a database has no usable successful backup (file still on disk)
  younger than its ``maxAge`` (``databases[i].maxAge``, else ``alerts.maxAge``),
  whether runs failed or no run happened. With no backup at all, the age counts
  from when tracking began (kept in the store), so a fresh install is not
  stale at once. Watched: each target's database; for an ``allDatabases``
  target, its globals and every database its latest request dumped.
- ``missed_schedule``: a schedule's fire did not happen because the service was
  down; resolved by the next successful run of that schedule.
- ``verification_failed``: a backup failed verification; resolved when a newer
  backup of the database verifies.
- ``copy_failed``: a copy of a database's backup at a destination failed (after
  retries); resolved when a copy of it at that destination succeeds.
- ``replica_silent``: a cluster replica stopped renewing its lease (reported by one
  replica, the cluster's monitor); resolved when it heartbeats again or leaves.

Each alert is sent once when it starts firing and once when it resolves. The
firing set is kept in the store (``alerts_firing``), so that a restart neither
repeats an alert nor forgets to resolve it. In a cluster (``shared``) every replica
checks, and the store decides who sends: the replica whose insert records the alert
sends "firing", the one whose delete removes it sends "resolved"; an alert fired by
another replica is looked up in the store before it is resolved here.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..domain.durations import human_duration as human_age
from ..domain.models import Alert, AlertKind, Copy, CopyState, FileState, Run, RunStatus
from ..domain.ports import AlertStore, Clock, Listener, RunStore
from ..notify.payloads import rfc3339
from ..settings import Settings as Config

log = structlog.get_logger("pgbackup")

STALE = AlertKind.STALE
MISSED_SCHEDULE = AlertKind.MISSED_SCHEDULE
VERIFICATION_FAILED = AlertKind.VERIFICATION_FAILED
COPY_FAILED = AlertKind.COPY_FAILED
REPLICA_SILENT = AlertKind.REPLICA_SILENT
# Successful runs examined for a usable backup; retention deletes the oldest,
# so a usable one, if any, is among the newest.
_SCAN = 50
# Runs of one allDatabases request are queued together; a database whose newest
# run is older than the target's newest request by more than this was not in
# it (dropped from the server) and is no longer watched.
_REQUEST_GAP_SECONDS = 60.0
_RECENT_RUNS = 1000
# (now) -> the alerts that should be firing, each with its message.
ExternalCheck = Callable[[datetime], list[tuple[Alert, str]]]


def subject_of(target: str, database: str) -> str:
    """What an alert is about: the run's database (the target's name, ``<target>.<db>``
    or ``<target>-globals``); a run recorded under the older naming (the PostgreSQL
    database name) is qualified by its target."""
    if (not target or database == target or database.startswith(f"{target}.")
            or database == f"{target}-globals"):
        return database
    return f"{target}/{database}"


@dataclass(frozen=True, slots=True)
class Watched:
    target: str
    database: str
    max_age: float | None

    @property
    def subject(self) -> str:
        return subject_of(self.target, self.database)


class AlertManager(Listener):
    """The alert state machine. ``sink`` receives the payloads (see notify.py)."""

    def __init__(self, config: Config, store: RunStore, clock: Clock,
                 sink: Callable[[Mapping[str, Any]], None], *, state: AlertStore,
                 host: str | None = None, shared: bool = False) -> None:
        """``shared``: the store's alert state is shared with other replicas."""
        self.config = config
        self.shared = shared
        self.store = store
        self.clock = clock
        self.sink = sink
        self.state = state
        self.host = host or socket.gethostname()
        self._lock = threading.RLock()
        self._active: dict[str, Alert] = {a.key: a for a in state.firing()}
        self._checks: list[tuple[AlertKind, ExternalCheck]] = []
        self._tracking_since: dict[str, datetime] = state.tracking()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._track([w.subject for w in self._configured()], clock())

    def _track(self, subjects: list[str], now: datetime) -> None:
        new = {s: now for s in subjects if s not in self._tracking_since}
        if new:
            self._tracking_since.update(new)
            self.state.track(new)

    def _configured(self) -> list[Watched]:
        """Watched databases known from the configuration alone."""
        out = []
        for t in self.config.targets:
            max_age = t.max_age_seconds or self.config.alerts.max_age_seconds
            name = f"{t.name}-globals" if t.all_databases else t.name
            out.append(Watched(t.name, name, max_age))
        if not self.config.targets:
            db = self.config.database.dbname
            out.append(Watched(db, db, self.config.alerts.max_age_seconds))
        return out

    def watched(self) -> list[Watched]:
        """Every database whose backups must stay fresh."""
        out = self._configured()
        spread = {t.name: t for t in self.config.targets if t.all_databases}
        if not spread:
            return out
        newest: dict[tuple[str, str], datetime] = {}
        for r in self.store.list_runs(page_size=_RECENT_RUNS).runs:  # newest first
            if r.target in spread:
                newest.setdefault((r.target, r.database), r.queued_at)
        for name, t in spread.items():
            latest = newest.get((name, f"{name}-globals"))
            max_age = t.max_age_seconds or self.config.alerts.max_age_seconds
            for (target, db), queued in sorted(newest.items()):
                if target != name or db == f"{name}-globals":
                    continue
                if latest and (latest - queued).total_seconds() > _REQUEST_GAP_SECONDS:
                    continue  # not in the latest request: no longer on the server
                out.append(Watched(name, db, max_age))
        return out

    # -- queries ------------------------------------------------------------

    def active(self) -> dict[str, Alert]:
        with self._lock:
            return dict(self._active)

    def firing_counts(self) -> dict[str, int]:
        with self._lock:
            counts = {kind.value: 0 for kind in AlertKind}
            for alert in self._active.values():
                counts[alert.kind] = counts.get(alert.kind, 0) + 1
            return counts

    # -- periodic check -------------------------------------------------------

    def start(self) -> None:
        """Check now, then every ``alerts.checkInterval``, on a background thread."""
        self._thread = threading.Thread(target=self._loop, daemon=True, name="alerts")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception:  # the store may be down: keep checking; health reports it
                log.exception("Alert check failed")
            self._stop.wait(self.config.alerts.check_interval_seconds)

    def add_check(self, kind: AlertKind, check: ExternalCheck) -> None:
        """Another feature's periodic check (WAL archiving): each time, the alerts of
        ``kind`` it returns fire, and those it no longer returns resolve."""
        self._checks.append((kind, check))

    def check(self, now: datetime | None = None) -> None:
        """Evaluate the alerts that depend on time and on the store."""
        now = now or self.clock()
        with self._lock:
            if self.shared:  # what the other replicas fired and resolved meanwhile
                self._active = {a.key: a for a in self.state.firing()}
            self._check_stale(now)
            self._check_missed(now)
            for kind, external in self._checks:
                wanted = {alert.key: (alert, message) for alert, message in external(now)}
                for alert in [a for a in self._active.values()
                              if a.kind == kind and a.key not in wanted]:
                    self._resolve(alert.key, now, f"{kind.value} alert for {alert.subject} "
                                  "resolved: the condition cleared")
                for alert, message in wanted.values():
                    self._fire(alert, now, message)

    def _check_stale(self, now: datetime) -> None:
        watched = [w for w in self.watched() if w.max_age is not None]
        self._track([w.subject for w in watched], now)
        subjects = {w.subject for w in watched}
        for alert in [a for a in self._active.values() if a.kind == STALE]:
            if alert.subject not in subjects:
                self._resolve(alert.key, now, f"Stale-backup alert withdrawn: {alert.subject} "
                              "is no longer backed up or has no maxAge")
        for w in watched:
            self._check_one(w, w.max_age or 0.0, now)

    def _check_one(self, w: Watched, max_age: float, now: datetime) -> None:
        db = w.database
        successes = [r for r in self.store.list_runs(database=db, status=RunStatus.SUCCEEDED,
                                                     page_size=_SCAN).runs
                     if r.target in (w.target, "")]
        usable = [r.finished_at for r in successes if r.finished_at is not None
                  and r.file_state is FileState.PRESENT and os.path.exists(r.file_path)]
        newest = max(usable) if usable else None
        last = successes[0].finished_at if successes else None
        # Without a usable backup, count from tracking start, or from the last
        # success if that is older: a deleted file gets no fresh-install grace.
        reference = newest or min(d for d in (self._tracking_since[w.subject], last) if d)
        age = (now - reference).total_seconds()
        key = f"{STALE}/{w.subject}"
        if age <= max_age:
            if newest is not None:
                self._resolve(key, now, f"Backups of {db} are fresh again: the newest "
                              f"finished {human_age(age)} ago", last_success_time=newest)
            return
        if newest is not None:
            detail = f"the newest finished at {rfc3339(newest)}, {human_age(age)} ago"
        elif last is not None:
            detail = f"the last success ({rfc3339(last)}) has no backup file any more"
        else:
            detail = f"none at all since tracking began at {rfc3339(reference)}"
        self._fire(Alert(STALE, w.subject, reference + timedelta(seconds=max_age), {
            "database": db, "target": w.target,
            "last_success_time": rfc3339(last) if last else None,
            "age_seconds": round(age), "max_age_seconds": max_age}), now,
            f"No successful backup of {db} in the last {human_age(max_age)} "
            f"(maxAge): {detail}")

    def _check_missed(self, now: datetime) -> None:
        names = {s.name for s in self.config.schedules}
        for alert in [a for a in self._active.values() if a.kind == MISSED_SCHEDULE]:
            if alert.subject not in names:
                self._resolve(alert.key, now, f"Schedule {alert.subject} no longer exists")
                continue
            last = self.store.last_scheduled_run(alert.subject)
            if (last is not None and last.status is RunStatus.SUCCEEDED
                    and last.queued_at >= alert.since):
                self._resolve_by_run(alert.key, last, now)

    # -- events ---------------------------------------------------------------

    def on_run_finished(self, run: Run) -> None:
        if run.status is not RunStatus.SUCCEEDED:
            return
        now = run.finished_at or self.clock()
        with self._lock:
            self._resolve(f"{STALE}/{subject_of(run.target, run.database)}", now,
                          f"Backup of {run.database} succeeded again (run {run.id})",
                          anywhere=True, run_id=run.id, file_path=run.file_path,
                          last_success_time=now)
            if run.schedule:
                self._resolve_by_run(f"{MISSED_SCHEDULE}/{run.schedule}", run, now)

    def on_missed_fire(self, schedule: str, fire_time: datetime) -> None:
        entry = next((s for s in self.config.schedules if s.name == schedule), None)
        target = next((t for t in self.config.targets if entry and t.name == entry.target),
                      None)
        db = self.config.database.dbname if target is None else target.name
        with self._lock:
            self._fire(Alert(MISSED_SCHEDULE, schedule, fire_time, {
                "schedule": schedule, "database": db,
                "target": target.name if target else db,
                "missed_fire_time": rfc3339(fire_time)}),
                self.clock(), f"Scheduled backup {schedule} of {db} did not run at "
                f"{rfc3339(fire_time)}: the service was down")

    def on_replica_silent(self, node: str, since: datetime) -> None:
        with self._lock:
            self._fire(Alert(REPLICA_SILENT, node, since, {
                "node": node, "last_heartbeat": rfc3339(since)}), self.clock(),
                f"Cluster replica {node} has not renewed its lease since {rfc3339(since)}; "
                "its runs are taken over by the other replicas")

    def on_replica_back(self, node: str) -> None:
        with self._lock:
            self._resolve(f"{REPLICA_SILENT}/{node}", self.clock(),
                          f"Cluster replica {node} heartbeats again, or left cleanly",
                          anywhere=True)

    def on_verification(self, run: Run, ok: bool, reason: str) -> None:
        subject = subject_of(run.target, run.database)
        key = f"{VERIFICATION_FAILED}/{subject}"
        now = run.verified_at or self.clock()
        with self._lock:
            if not ok:
                self._fire(Alert(VERIFICATION_FAILED, subject, now, {
                    "database": run.database, "target": run.target or run.database,
                    "run_id": run.id, "file_path": run.file_path, "error": reason}), now,
                    f"Backup {run.id} of {run.database} failed verification: {reason}")
                return
            alert = self._known(key)
            if alert is not None and run.id > int(alert.details.get("run_id", 0)):
                self._resolve(key, now, f"A newer backup of {run.database} (run {run.id}) "
                              "verified successfully", run_id=run.id,
                              file_path=run.file_path)

    def on_copy_finished(self, run: Run, copy: Copy) -> None:
        subject = f"{subject_of(run.target, run.database)}@{copy.destination}"
        key = f"{COPY_FAILED}/{subject}"
        now = copy.stored_at or self.clock()
        with self._lock:
            if copy.state is CopyState.FAILED:
                self._fire(Alert(COPY_FAILED, subject, now, {
                    "database": run.database, "target": run.target or run.database,
                    "destination": copy.destination, "run_id": run.id, "error": copy.error}),
                    now, f"Copy of backup {run.id} of {run.database} to {copy.destination} "
                    f"failed: {copy.error}")
            elif copy.state is CopyState.SUCCEEDED:
                self._resolve(key, now, f"Backup {run.id} of {run.database} was copied to "
                              f"{copy.destination}", anywhere=True, run_id=run.id,
                              destination=copy.destination)

    # -- state machine --------------------------------------------------------

    def _fire(self, alert: Alert, now: datetime, message: str) -> None:
        if alert.key in self._active:
            return  # already sent; it is not repeated until it resolves
        alert.details.setdefault("message", message)  # what the API shows later
        self._active[alert.key] = alert
        if not self.state.fire(alert):
            return  # fired, and sent, by another replica
        log.error("Alert firing", alert=alert.key, message=message)
        self._send(alert, "firing", now, message, {})

    def _known(self, key: str) -> Alert | None:
        """The alert ``key`` if it is firing: known here, or (shared) in the store."""
        alert = self._active.get(key)
        if alert is None and self.shared:
            alert = self.state.get(key)  # fired by another replica
            if alert is not None:
                self._active[key] = alert
        return alert

    def _resolve(self, key: str, now: datetime, message: str, *, anywhere: bool = False,
                 **extra: Any) -> None:
        """Resolve ``key`` if it is firing. ``anywhere``: also if another replica fired
        it (events; a periodic check reloads the firing set first)."""
        if (self._known(key) if anywhere else self._active.get(key)) is None:
            return
        alert = self._active.pop(key)
        if not self.state.resolve(key):
            return  # resolved, and sent, by another replica
        log.info("Alert resolved", alert=key, message=message)
        self._send(alert, "resolved", now, message, extra)

    def _resolve_by_run(self, key: str, run: Run, now: datetime) -> None:
        alert = self._known(key)
        if alert is None:
            return
        self._resolve(key, now, f"Schedule {alert.subject} ran again successfully "
                      f"(run {run.id})", run_id=run.id, file_path=run.file_path)

    def _send(self, alert: Alert, status: str, now: datetime, message: str,
              extra: Mapping[str, Any]) -> None:
        payload: dict[str, Any] = {**alert.details, **{
            k: rfc3339(v) if isinstance(v, datetime) else v for k, v in extra.items()}}
        payload.update(event=alert.kind.value, status=status, alert_key=alert.key,
                       since=rfc3339(alert.since), time=rfc3339(now), message=message,
                       host=self.host)
        try:
            self.sink(payload)
        except Exception:  # the notifier queues; this is a bug guard
            log.exception("Alert could not be queued for notification", alert=alert.key)

    def collector(self) -> Collector:
        """``backup_alerts_firing{alert}``: alerts firing now, read at scrape time."""
        return _Firing(self)


class _Firing(Collector):
    def __init__(self, alerts: AlertManager) -> None:
        self.alerts = alerts

    def collect(self) -> Iterator[Metric]:
        firing = GaugeMetricFamily("backup_alerts_firing", "Alerts currently firing.",
                                   labels=["alert"])
        for name, count in sorted(self.alerts.firing_counts().items()):
            firing.add_metric([name], count)
        yield firing
