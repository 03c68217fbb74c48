"""Notification payloads: one JSON-able mapping per event. A webhook receives it as
the POST body; Slack and e-mail render it as text (:func:`render_text`). Fields
(absent when they do not apply)::

    {
      "event": "failure" | "success" | "cleanup"            # run events
             | "stale" | "missed_schedule" | "verification_failed"  # alerts
             | "copy_failed",
      "destination": "offsite",            # copy_failed only
      "status": "firing" | "resolved",     # alerts only
      "alert_key": "stale/shop",           # alerts only: same key when it resolves
      "since": "2024-01-15T02:00:00Z",     # alerts only: when the alert started
      "database": "shop", "schedule": "nightly", "run_id": 12,
      "trigger": "schedule" | "manual", "error": "pg_dump exited with code 1: ...",
      "file_path": "...", "size_bytes": 1048576, "duration_seconds": 45.2,
      "time": "2024-01-15T02:00:45Z",      # RFC 3339, UTC: when it happened
      "message": "Backup of shop failed (run 12): ...", "host": "db-backup-1",
      ...                                  # event-specific extras, e.g. age_seconds
    }
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from ..domain.models import CleanupResult, Run, RunStatus
from ..domain.ports import Listener

Payload = Mapping[str, Any]


class Sink(Protocol):
    def notify(self, payload: Payload) -> None: ...


def rfc3339(value: datetime) -> str:
    """UTC, second precision, with a ``Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_text(payload: Payload) -> str:
    """The human form (Slack, e-mail body): the message, then the details."""
    lines = [str(payload.get("message") or payload.get("event", ""))]
    for key in ("database", "schedule", "status", "run_id", "error", "time", "since",
                "file_path", "size_bytes", "host"):
        value = payload.get(key)
        if value not in (None, ""):
            lines.append(f"{key}: {value}")
    return "\n".join(lines)


def run_payload(run: Run, host: str) -> dict[str, Any]:
    ok = run.status is RunStatus.SUCCEEDED
    when = run.finished_at or run.queued_at
    if ok:
        message = (f"Backup of {run.database} succeeded (run {run.id}): {run.file_path}, "
                   f"{run.size_bytes} bytes")
    else:
        message = f"Backup of {run.database} failed (run {run.id}): {run.error}"
    payload: dict[str, Any] = {
        "event": "success" if ok else "failure", "database": run.database, "run_id": run.id,
        "trigger": run.trigger.value.lower(), "schedule": run.schedule, "error": run.error,
        "time": rfc3339(when), "backup_dir": run.backup_dir,
        "duration_seconds": round(run.duration_seconds, 3), "message": message, "host": host,
    }
    if ok:
        payload.update(file_path=run.file_path, size_bytes=run.size_bytes, sha256=run.sha256)
    return payload


class NotificationListener(Listener):
    """Turns run and cleanup events into notifications (alerts send their own)."""

    def __init__(self, sink: Sink, clock: Callable[[], datetime],
                 host: str | None = None) -> None:
        self.sink = sink
        self.clock = clock
        self.host = host or socket.gethostname()

    def on_run_finished(self, run: Run) -> None:
        self.sink.notify(run_payload(run, self.host))

    def on_cleanup(self, result: CleanupResult, directory: str) -> None:
        if not result.deleted_files:
            return  # nothing happened: not worth a message after every backup
        self.sink.notify({
            "event": "cleanup", "backup_dir": directory, "deleted_files": result.deleted_files,
            "freed_bytes": result.freed_bytes, "files": list(result.files),
            "time": rfc3339(self.clock()), "host": self.host,
            "message": f"Retention deleted {result.deleted_files} backup(s) in {directory}, "
                       f"freeing {result.freed_bytes} bytes"})
