"""Metrics, notifications, alerts and health, wired to the service in one call.

``start_observability`` registers the listeners on ``service.events``, serves
``/metrics``, starts the alert checks and a health monitor that reports
through ``set_serving`` (app.py maps it to gRPC health) when the run store or
the backup directory becomes unusable, and again when it recovers.
"""

from __future__ import annotations

import os
import secrets
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from .alerts import AlertManager
from .config import Config
from .events import Listener
from .metrics import Metrics
from .notify import Channel, NotificationListener, Notifier, build_channels
from .service import BackupService, Clock, RunStore

log = structlog.get_logger("pgbackup")

HEALTH_INTERVAL_SECONDS = 5.0
STORE_TIMEOUT_SECONDS = 10.0
PROBE_PREFIX = ".backupd-health-"


@dataclass(frozen=True, slots=True)
class HealthReport:
    serving: bool
    problems: tuple[str, ...] = ()


def directory_problem(directory: Path) -> str | None:
    """Why backups cannot be written to ``directory`` now, or None. A directory
    that does not exist yet is fine if it can be created (probed in the nearest
    existing parent)."""
    target = directory
    while True:
        try:
            st = os.stat(target)
            break
        except FileNotFoundError:
            if target == target.parent:
                return f"backup directory {directory}: no existing parent"
            target = target.parent
        except OSError as exc:
            return f"backup directory {directory}: {exc.strerror or exc}"
    if not stat.S_ISDIR(st.st_mode):
        what = directory if target == directory else f"{target} (parent of {directory})"
        return f"backup directory {what} is not a directory"
    # Create, write and delete a file: the only test that covers permissions,
    # read-only mounts, immutable flags, full disks and quotas alike, even as root.
    probe = target / f"{PROBE_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except OSError as exc:
        return f"backup directory {target} is not writable: {exc.strerror or exc}"
    try:
        os.write(fd, b"x")
    except OSError as exc:
        return f"backup directory {target} cannot take data: {exc.strerror or exc}"
    finally:
        os.close(fd)
        try:
            os.unlink(probe)
        except OSError:
            pass
    return None


class HealthMonitor:
    """Checks the store and the backup directory; calls ``set_serving`` on changes."""

    def __init__(self, store: RunStore, directory: Path, set_serving: Callable[[bool], None],
                 *, interval: float = HEALTH_INTERVAL_SECONDS,
                 on_change: Callable[[bool], None] | None = None) -> None:
        self.store = store
        self.directory = directory
        self.set_serving = set_serving
        self.interval = interval
        self.on_change = on_change
        self.last: HealthReport | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._store_probe: threading.Thread | None = None

    def check(self) -> HealthReport:
        """Check now; report a change through ``set_serving``."""
        with self._lock:
            problems = [p for p in (self._store_problem(), directory_problem(self.directory))
                        if p]
            report = HealthReport(not problems, tuple(problems))
            changed = self.last is None or report.serving != self.last.serving
            previous, self.last = self.last, report
            if not changed:
                if report.serving is False and previous and previous.problems != report.problems:
                    log.error("Still not serving", problems=list(report.problems))
                return report
            if report.serving:
                log.info("Health: SERVING" + (" again" if previous else ""))
            else:
                log.error("Health: NOT_SERVING", problems=list(report.problems))
            for hook in (self.set_serving, self.on_change):
                if hook is None:
                    continue
                try:
                    hook(report.serving)
                except Exception:
                    log.exception("Health status hook failed")
            return report

    def _store_problem(self) -> str | None:
        if self._store_probe is not None and self._store_probe.is_alive():
            return "run store: an earlier query has not answered yet"
        error: list[str] = []

        def query() -> None:
            try:
                self.store.list_runs(page_size=1)
            except Exception as exc:
                error.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

        # In a thread: a hung database must report NOT_SERVING, not hang the monitor.
        self._store_probe = threading.Thread(target=query, daemon=True, name="health-store")
        self._store_probe.start()
        self._store_probe.join(STORE_TIMEOUT_SECONDS)
        if self._store_probe.is_alive():
            return f"run store: no answer within {STORE_TIMEOUT_SECONDS:g} s"
        return f"run store unusable: {error[0]}" if error else None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="health")
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:
                log.exception("Health check failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=STORE_TIMEOUT_SECONDS + 5)


class Observability:
    """What start_observability started; ``stop()`` undoes it."""

    def __init__(self, service: BackupService, metrics: Metrics, notifier: Notifier,
                 alerts: AlertManager, health: HealthMonitor,
                 listeners: list[Listener]) -> None:
        self.service = service
        self.metrics = metrics
        self.notifier = notifier
        self.alerts = alerts
        self.health = health
        self._listeners = listeners
        self._stopped = False

    @property
    def metrics_port(self) -> int:
        """The port ``/metrics`` is served on (0: metrics.enabled is false)."""
        return self.metrics.port

    def check_health(self) -> HealthReport:
        return self.health.check()

    def stop(self) -> None:
        """Stop checks and serving; deliver queued notifications for a few seconds."""
        if self._stopped:
            return
        self._stopped = True
        for listener in self._listeners:
            try:
                self.service.events.listeners.remove(listener)
            except ValueError:
                pass
        self.health.stop()
        self.alerts.stop()
        self.metrics.stop()
        self.notifier.stop()


def start_observability(config: Config, service: BackupService, store: RunStore,
                        set_serving: Callable[[bool], None], clock: Clock | None = None, *,
                        channels: list[Channel] | None = None,
                        notify_sleep: Callable[[float], None] | None = None,
                        health_interval: float = HEALTH_INTERVAL_SECONDS,
                        background: bool = True) -> Observability:
    """Start metrics, notifications, alerts and health for ``service``.

    Call it before the scheduler starts (missed fires are reported at its
    start). ``channels`` and ``notify_sleep`` replace the configured channels
    and the retry wait (tests); ``background=False`` starts no checking
    threads, for tests that call ``alerts.check(now)`` and ``check_health()``.
    """
    clock = clock or service.clock
    metrics = Metrics(config, store, clock, listener_errors=lambda: service.events.errors)
    notifier = Notifier(build_channels(config.notifications) if channels is None else channels,
                        on_result=metrics.notification_result, sleep=notify_sleep)
    alerts = AlertManager(config, store, clock, notifier.notify,
                          state_path=config.server.data_directory / "alerts.json")
    metrics.alerts_firing = alerts.firing_counts
    health = HealthMonitor(store, config.backup.directory, set_serving,
                           interval=health_interval, on_change=metrics.set_healthy)
    listeners: list[Listener] = [metrics, alerts, NotificationListener(notifier, clock)]
    obs = Observability(service, metrics, notifier, alerts, health, listeners)
    try:
        if config.metrics.enabled:
            metrics.serve(config.metrics.address)
        notifier.start()
        for listener in listeners:
            service.events.add(listener)
        health.check()  # the right status from the first moment
        if background:
            alerts.start()
            health.start()
    except BaseException:
        obs.stop()
        raise
    log.info("Observability started", metrics_port=metrics.port,
             notification_channels=len(notifier.channels),
             max_age_seconds=config.alerts.max_age_seconds)
    _warn_unset_secrets(config)
    return obs


def _warn_unset_secrets(config: Config) -> None:
    for i, n in enumerate(config.notifications):
        for variable in (n.secret_env, n.username_env, n.password_env):
            if variable and not os.environ.get(variable):
                log.warning("Notification channel names an unset environment variable",
                            channel=f"{n.type}[{i}]", variable=variable)
