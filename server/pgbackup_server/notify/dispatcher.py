"""The dispatcher: queues payloads for the channels that want them and never
blocks the caller. Each channel has a worker thread and a bounded queue, so a
slow or dead channel holds up neither a backup nor the other channels. Failed
deliveries are retried with exponential backoff (tenacity); what still fails, or
does not fit in the queue, is logged and counted.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence

import structlog
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from .channels import Channel, NotificationError
from .payloads import Payload

log = structlog.get_logger("pgbackup")

# A notification event -> the channel ``events`` entries that receive it. The
# config has no entry for missed fires: a fire that did not happen is a backup
# that is missing (stale) and a run that did not succeed (failure); a copy that
# failed at a destination is a failure. Stopped or lagging WAL archiving means
# point-in-time recovery is going stale.
SUBSCRIPTIONS: dict[str, tuple[str, ...]] = {"missed_schedule": ("stale", "failure"),
                                             "copy_failed": ("failure",),
                                             "wal_archiving": ("stale", "failure"),
                                             # a silent replica's schedules may not run
                                             "replica_silent": ("stale", "failure")}
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
STOP_GRACE_SECONDS = 5.0
_STOP = object()  # tells a worker to end


def wants(channel: Channel, payload: Payload) -> bool:
    event = str(payload.get("event", ""))
    return any(e in channel.events for e in SUBSCRIPTIONS.get(event, (event,)))


class Notifier:
    """``on_result(channel_name, ok)`` is called after each final outcome (for metrics).
    ``sleep`` waits between retries (tests inject one)."""

    def __init__(self, channels: Sequence[Channel], *, queue_size: int = 100,
                 on_result: Callable[[str, bool], None] | None = None,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.channels = list(channels)
        self.on_result = on_result
        self.errors: dict[str, int] = {ch.name: 0 for ch in self.channels}
        self.sent: dict[str, int] = {ch.name: 0 for ch in self.channels}
        self._stopping = threading.Event()
        self._sleep = sleep or self._pause
        self._queues: dict[str, queue.Queue[object]] = {
            ch.name: queue.Queue(maxsize=queue_size) for ch in self.channels}
        self._threads: list[threading.Thread] = []
        self._counts = threading.Lock()

    def _pause(self, seconds: float) -> None:
        """Wait between retries; a stop ends the wait at once."""
        self._stopping.wait(seconds)

    def start(self) -> None:
        for ch in self.channels:
            t = threading.Thread(target=self._work, args=(ch,), daemon=True,
                                 name=f"notify-{ch.name}")
            t.start()
            self._threads.append(t)

    def notify(self, payload: Payload) -> None:
        """Queue ``payload`` for every channel that wants its event."""
        for ch in self.channels:
            if not wants(ch, payload):
                continue
            if self._stopping.is_set():
                self._record(ch, False, "notifier stopped; dropped", payload)
                continue
            try:
                self._queues[ch.name].put_nowait(payload)
            except queue.Full:
                self._record(ch, False, "queue full; dropped", payload)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued payload was delivered or given up on."""
        deadline = time.monotonic() + timeout
        for q in self._queues.values():
            with q.all_tasks_done:
                while q.unfinished_tasks:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    q.all_tasks_done.wait(remaining)
        return True

    def stop(self, grace_seconds: float = STOP_GRACE_SECONDS) -> None:
        """Deliver what is queued within ``grace_seconds`` (retries stop waiting), then
        stop; what is left is counted as not delivered."""
        if not self._stopping.is_set():
            self.flush(grace_seconds)
        self._stopping.set()
        for ch in self.channels:
            q = self._queues[ch.name]
            while True:
                try:
                    left = q.get_nowait()
                except queue.Empty:
                    break
                q.task_done()
                if left is not _STOP:
                    self._record(ch, False, "not delivered before shutdown", left)  # type: ignore[arg-type]
            q.put(_STOP)
        for t in self._threads:
            t.join(timeout=grace_seconds)

    def _work(self, channel: Channel) -> None:
        q = self._queues[channel.name]
        while True:
            payload = q.get()
            try:
                if payload is _STOP:
                    return
                self._deliver(channel, payload)  # type: ignore[arg-type]
            finally:
                q.task_done()

    def _deliver(self, channel: Channel, payload: Payload) -> None:
        def retryable(exc: BaseException) -> bool:
            return (isinstance(exc, NotificationError) and exc.retryable
                    and not self._stopping.is_set())

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning("Notification failed; retrying", channel=channel.name,
                        notification=payload.get("event"), attempt=state.attempt_number,
                        error=str(exc), retry_in_seconds=state.upcoming_sleep)

        attempts = 1 + max(0, channel.retries)
        retrying = Retrying(
            stop=stop_after_attempt(attempts), reraise=True, sleep=self._sleep,
            wait=wait_exponential(multiplier=BACKOFF_FIRST_SECONDS, max=BACKOFF_MAX_SECONDS),
            retry=retry_if_exception(retryable), before_sleep=before_sleep)
        try:
            retrying(channel.deliver, payload)
        except NotificationError as exc:
            self._record(channel, False, str(exc), payload,
                         attempts=retrying.statistics.get("attempt_number", 1))
        except Exception as exc:  # a bug in a channel must not kill its worker
            log.exception("Notification channel crashed", channel=channel.name)
            self._record(channel, False, f"internal error: {exc}", payload)
        else:
            self._record(channel, True, "", payload,
                         attempts=retrying.statistics.get("attempt_number", 1))

    def _record(self, channel: Channel, ok: bool, error: str, payload: Payload,
                attempts: int = 0) -> None:
        with self._counts:
            (self.sent if ok else self.errors)[channel.name] += 1
        if ok:
            log.debug("Notification sent", channel=channel.name,
                      notification=payload.get("event"), status=payload.get("status", ""),
                      attempts=attempts)
        else:
            log.error("Notification not delivered", channel=channel.name,
                      notification=payload.get("event"), status=payload.get("status", ""),
                      error=error, attempts=attempts)
        if self.on_result is not None:
            try:
                self.on_result(channel.name, ok)
            except Exception:
                log.exception("Notification result hook failed", channel=channel.name)
