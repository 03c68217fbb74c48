"""Prometheus metrics: service events and store readings in a registry, which
:mod:`.http` serves at ``/metrics`` (through Envoy, and on ``metrics.address``).

Each :class:`Metrics` has its own registry (several services can live in one
process, as in the tests). Event-driven values (counters, last success) are
updated by service events and seeded from the store at start, so they are
right after a restart; values that age or live on disk (age of the last
success, storage per directory, runs in progress) are computed at scrape time.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from ..domain.models import CleanupResult, Copy, CopyState, Run, RunStatus, Trigger
from ..domain.ports import Clock, Listener, RunStore
from ..settings import Settings as Config

log = structlog.get_logger("pgbackup")

# Backups take seconds to hours.
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 21600,
                    43200, float("inf"))


class Metrics(Listener):
    """Service events -> Prometheus metrics."""

    def __init__(self, config: Config, store: RunStore, clock: Clock, *,
                 listener_errors: Callable[[], int] | None = None) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.listener_errors = listener_errors
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        self._last_success: dict[str, float] = {}  # database -> finished_at (epoch seconds)
        self._last_failure: dict[str, float] = {}
        self._running: set[int] = set()
        r = self.registry
        self.runs = Counter("backup_runs", "Finished backup runs.",
                            ["database", "status", "trigger"], registry=r)
        self.duration = Histogram("backup_duration_seconds", "Duration of finished backup runs.",
                                  ["database", "status"], buckets=DURATION_BUCKETS, registry=r)
        self.size = Gauge("backup_size_bytes", "Size of the newest successful backup.",
                          ["database"], registry=r)
        self.last_success = Gauge("backup_last_success_timestamp_seconds",
                                  "When the newest successful backup finished (Unix time).",
                                  ["database"], registry=r)
        self.last_failure = Gauge("backup_last_failure_timestamp_seconds",
                                  "When the newest failed backup finished (Unix time).",
                                  ["database"], registry=r)
        self.retention_deleted = Counter("backup_retention_deleted",
                                         "Backup files deleted by retention.", registry=r)
        self.retention_freed = Counter("backup_retention_freed_bytes",
                                       "Bytes freed by retention.", registry=r)
        self.verifications = Counter("backup_verifications", "Backup verifications.",
                                     ["database", "result"], registry=r)
        self.verification_failures = Counter("backup_verification_failures",
                                             "Backup verifications that failed.",
                                             ["database"], registry=r)
        self.misfires = Counter("backup_scheduler_misfires",
                                "Schedule fires missed while the service was down.",
                                ["schedule"], registry=r)
        self.notifications = Counter("backup_notifications_sent",
                                     "Notifications delivered.", ["channel"], registry=r)
        self.notification_errors = Counter("backup_notification_errors",
                                           "Notifications not delivered (after retries).",
                                           ["channel"], registry=r)
        self.copy_failures = Counter("backup_copy_failures",
                                     "Copies of backups that failed at a destination (after "
                                     "retries).", ["destination"], registry=r)
        self.healthy = Gauge("backup_healthy",
                             "1 when the store and the backup directory are usable.",
                             registry=r)
        self.healthy.set(1)
        ProcessCollector(registry=r)
        r.register(_ScrapeTime(self))
        self._zeroes()
        self._seed()

    def _databases(self) -> list[str]:
        """The ``database`` labels known from the configuration: each single-database
        target's name, each allDatabases target's globals (its databases are found at
        run time, as ``<target>.<db>``)."""
        if not self.config.targets:
            return [self.config.database.dbname]
        return [f"{t.name}-globals" if t.all_databases else t.name
                for t in self.config.targets]

    def _zeroes(self) -> None:
        # Series exist from the start at 0, so rate() and increase() see the first event.
        for db in self._databases():
            for status in ("succeeded", "failed"):
                for trigger in Trigger:
                    self.runs.labels(db, status, trigger.value.lower())
            self.verification_failures.labels(db)
        for s in self.config.schedules:
            self.misfires.labels(s.name)
        for d in self.config.destinations:
            self.copy_failures.labels(d.name)
        for i, n in enumerate(self.config.notifications):
            self.notifications.labels(f"{n.type}[{i}]")
            self.notification_errors.labels(f"{n.type}[{i}]")

    def _seed(self) -> None:
        """Newest success and failure per database from the store: right after a restart."""
        try:
            stats = self.store.stats(str(self.config.backup.directory))
            for db in sorted({*self._databases(), *(d.database for d in stats.databases)}):
                for status in (RunStatus.SUCCEEDED, RunStatus.FAILED):
                    # Newest by id is not always the last to finish (runs overlap): a few.
                    for run in self.store.list_runs(database=db, status=status,
                                                    page_size=20).runs:
                        if self._configured(run):
                            self._finished(run)
        except Exception:  # metrics must not stop the service; health reports the store
            log.exception("Could not read the last backups for metrics")

    def _configured(self, run: Run) -> bool:
        """Still backed up, under the name it has now: a removed database, or one
        recorded under an older naming, must not show an age growing forever."""
        if not self.config.targets:
            return run.database == self.config.database.dbname
        target = next((t for t in self.config.targets if t.name == (run.target or run.database)),
                      None)
        if target is None:
            return False
        if target.all_databases:
            return (run.database == f"{target.name}-globals"
                    or run.database.startswith(f"{target.name}."))
        return run.database == target.name

    # -- events -------------------------------------------------------------

    def on_run_started(self, run: Run) -> None:
        with self._lock:
            self._running.add(run.id)

    def on_run_finished(self, run: Run) -> None:
        with self._lock:
            self._running.discard(run.id)
        status = "succeeded" if run.status is RunStatus.SUCCEEDED else "failed"
        self.runs.labels(run.database, status, run.trigger.value.lower()).inc()
        if run.started_at is not None and run.finished_at is not None:
            self.duration.labels(run.database, status).observe(run.duration_seconds)
        self._finished(run)

    def _finished(self, run: Run) -> None:
        if run.finished_at is None:
            return
        when = run.finished_at.timestamp()
        ok = run.status is RunStatus.SUCCEEDED
        newest = self._last_success if ok else self._last_failure
        with self._lock:
            # With maxConcurrent > 1 runs can finish out of order: keep the newest.
            if when < newest.get(run.database, float("-inf")):
                return
            newest[run.database] = when
        if ok:
            self.last_success.labels(run.database).set(when)
            self.size.labels(run.database).set(run.size_bytes)
        else:
            self.last_failure.labels(run.database).set(when)

    def on_cleanup(self, result: CleanupResult, directory: str) -> None:
        self.retention_deleted.inc(result.deleted_files)
        self.retention_freed.inc(result.freed_bytes)

    def on_verification(self, run: Run, ok: bool, reason: str) -> None:
        self.verifications.labels(run.database, "ok" if ok else "failed").inc()
        if not ok:
            self.verification_failures.labels(run.database).inc()

    def on_missed_fire(self, schedule: str, fire_time: datetime) -> None:
        self.misfires.labels(schedule).inc()

    def on_copy_finished(self, run: Run, copy: Copy) -> None:
        if copy.state is CopyState.FAILED:
            self.copy_failures.labels(copy.destination).inc()

    def notification_result(self, channel: str, ok: bool) -> None:
        (self.notifications if ok else self.notification_errors).labels(channel).inc()

    def set_healthy(self, ok: bool) -> None:
        self.healthy.set(1 if ok else 0)

    # -- scrape-time values -------------------------------------------------

    def last_success_times(self) -> dict[str, float]:
        with self._lock:
            return dict(self._last_success)

    def in_progress(self) -> int:
        with self._lock:
            return len(self._running)


class _ScrapeTime(Collector):
    """Values computed when Prometheus scrapes."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.m
        now = m.clock().timestamp()
        age = GaugeMetricFamily("backup_last_success_age_seconds",
                                "Seconds since the newest successful backup finished.",
                                labels=["database"])
        for db, when in sorted(m.last_success_times().items()):
            age.add_metric([db], max(0.0, now - when))
        yield age
        yield GaugeMetricFamily("backup_in_progress", "Backup runs in progress.",
                                value=m.in_progress())
        yield from self._storage()
        if m.listener_errors is not None:
            yield CounterMetricFamily("backup_event_listener_errors",
                                      "Errors raised by event listeners (metrics, alerts, "
                                      "notifications).", value=m.listener_errors())

    def _storage(self) -> Iterator[Metric]:
        configured = str(self.m.config.backup.directory)
        size: dict[str, int] = {configured: 0}
        count: dict[str, int] = {configured: 0}
        try:
            runs = self.m.store.present_runs()
        except Exception as exc:  # a scrape must still answer; health reports the store
            log.warning("Metrics: cannot read backups from the store", error=str(exc))
            return
        for run in runs:
            size[run.backup_dir] = size.get(run.backup_dir, 0) + run.size_bytes
            count[run.backup_dir] = count.get(run.backup_dir, 0) + 1
        storage = GaugeMetricFamily("backup_storage_bytes",
                                    "Bytes of backups kept, per directory.", labels=["directory"])
        files = GaugeMetricFamily("backup_storage_files", "Backups kept, per directory.",
                                  labels=["directory"])
        for directory in sorted(size):
            storage.add_metric([directory], size[directory])
            files.add_metric([directory], count[directory])
        yield storage
        yield files
        free = GaugeMetricFamily("backup_directory_free_bytes",
                                 "Free bytes on the file system of the backup directory.",
                                 labels=["directory"])
        path = Path(configured)
        while not path.exists() and path != path.parent:
            path = path.parent  # not created yet: its file system is the parent's
        try:
            free.add_metric([configured], shutil.disk_usage(path).free)
        except OSError:
            pass
        yield free
