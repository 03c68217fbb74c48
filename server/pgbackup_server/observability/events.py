"""Service events, for metrics, alerts and notifications.

Listeners are called synchronously but shielded: a failing listener is logged
and counted, and never fails or delays a backup beyond its own call.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog

from ..domain.models import CleanupResult, Copy, Run
from ..domain.ports import Listener

log = structlog.get_logger("pgbackup")


class EventHub(Listener):
    """Fans events out to listeners, isolating their failures."""

    def __init__(self) -> None:
        self.listeners: list[Listener] = []
        self.errors = 0

    def add(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def _emit(self, name: str, *args: Any) -> None:
        for listener in self.listeners:
            method: Callable[..., None] = getattr(listener, name)
            try:
                method(*args)
            except Exception:
                self.errors += 1
                log.exception("Event listener failed", listener=type(listener).__name__,
                              hook=name)

    def on_run_started(self, run: Run) -> None:
        self._emit("on_run_started", run)

    def on_run_finished(self, run: Run) -> None:
        self._emit("on_run_finished", run)

    def on_cleanup(self, result: CleanupResult, directory: str) -> None:
        self._emit("on_cleanup", result, directory)

    def on_verification(self, run: Run, ok: bool, reason: str) -> None:
        self._emit("on_verification", run, ok, reason)

    def on_missed_fire(self, schedule: str, fire_time: datetime) -> None:
        self._emit("on_missed_fire", schedule, fire_time)

    def on_copy_finished(self, run: Run, copy: Copy) -> None:
        self._emit("on_copy_finished", run, copy)

    def on_replica_silent(self, node: str, since: datetime) -> None:
        self._emit("on_replica_silent", node, since)

    def on_replica_back(self, node: str) -> None:
        self._emit("on_replica_back", node)
