"""Observability: nothing fails silently. Service events become Prometheus metrics,
alerts (a backup that should exist and does not) and notifications; health says
whether backups can be written at all.

``start_observability`` builds them, registers the listeners on the event hub,
starts the alert checks and the health monitor (which reports through
``set_serving``: gRPC health and ``backup_healthy``).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import structlog

from ..domain.ports import AlertStore, Clock, Listener, RunStore
from ..notify import Channel, NotificationListener, Notifier, build_channels
from ..settings import Settings
from .alerts import AlertManager
from .events import EventHub
from .health import HEALTH_INTERVAL_SECONDS, HealthMonitor, HealthReport
from .metrics import Metrics

__all__ = ["EventHub", "HealthMonitor", "HealthReport", "Observability", "start_observability"]

log = structlog.get_logger("pgbackup")


class Observability:
    """What start_observability started; ``stop()`` undoes it."""

    def __init__(self, events: EventHub, metrics: Metrics, notifier: Notifier,
                 alerts: AlertManager, health: HealthMonitor,
                 listeners: list[Listener]) -> None:
        self.events = events
        self.metrics = metrics
        self.notifier = notifier
        self.alerts = alerts
        self.health = health
        self._listeners = listeners
        self._stopped = False

    def check_health(self) -> HealthReport:
        return self.health.check()

    def stop(self) -> None:
        """Stop checks and serving; deliver queued notifications for a few seconds."""
        if self._stopped:
            return
        self._stopped = True
        for listener in self._listeners:
            try:
                self.events.listeners.remove(listener)
            except ValueError:
                pass
        self.health.stop()
        self.alerts.stop()
        self.notifier.stop()


def start_observability(config: Settings, events: EventHub, store: RunStore,
                        alert_state: AlertStore, set_serving: Callable[[bool], None],
                        clock: Clock, *, channels: list[Channel] | None = None,
                        notify_sleep: Callable[[float], None] | None = None,
                        health_interval: float = HEALTH_INTERVAL_SECONDS,
                        background: bool = True) -> Observability:
    """Start metrics, notifications, alerts and health, listening on ``events``.

    Call it before the scheduler starts (missed fires are reported at its
    start). ``channels`` and ``notify_sleep`` replace the configured channels
    and the retry wait (tests); ``background=False`` starts no checking
    threads, for tests that call ``alerts.check(now)`` and ``check_health()``.
    """
    metrics = Metrics(config, store, clock, listener_errors=lambda: events.errors)
    notifier = Notifier(build_channels(config.notifications) if channels is None else channels,
                        on_result=metrics.notification_result, sleep=notify_sleep)
    alerts = AlertManager(config, store, clock, notifier.notify, state=alert_state,
                          shared=config.cluster.enabled)
    metrics.registry.register(alerts.collector())
    health = HealthMonitor(store, config.backup.directory, set_serving,
                           interval=health_interval, on_change=metrics.set_healthy)
    listeners: list[Listener] = [metrics, alerts, NotificationListener(notifier, clock)]
    obs = Observability(events, metrics, notifier, alerts, health, listeners)
    try:
        notifier.start()
        for listener in listeners:
            events.add(listener)
        health.check()  # the right status from the first moment
        if background:
            alerts.start()
            health.start()
    except BaseException:
        obs.stop()
        raise
    log.info("Observability started",
             notification_channels=len(notifier.channels),
             max_age_seconds=config.alerts.max_age_seconds)
    _warn_unset_secrets(config)
    return obs


def _warn_unset_secrets(config: Settings) -> None:
    for i, n in enumerate(config.notifications):
        for variable in (n.secret_env, n.username_env, n.password_env):
            if variable and not os.environ.get(variable):
                log.warning("Notification channel names an unset environment variable",
                            channel=f"{n.type}[{i}]", variable=variable)
