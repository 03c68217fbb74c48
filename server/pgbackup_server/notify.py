"""Notifications: webhook, Slack-compatible webhook and e-mail channels.

Every notification is one JSON-able payload. A webhook receives it as the
POST body (``Content-Type: application/json``); Slack and e-mail render it
as text. Fields (absent when they do not apply)::

    {
      "event": "failure" | "success" | "cleanup"            # run events
             | "stale" | "missed_schedule" | "verification_failed",  # alerts
      "status": "firing" | "resolved",     # alerts only
      "alert_key": "stale/shop",           # alerts only: same key when it resolves
      "since": "2024-01-15T02:00:00Z",     # alerts only: when the alert started
      "database": "shop",
      "schedule": "nightly",
      "run_id": 12,
      "trigger": "schedule" | "manual",
      "error": "pg_dump exited with code 1: ...",
      "file_path": "/srv/backups/backup_shop_2024-01-15_02-00-00.sql",
      "size_bytes": 1048576,
      "duration_seconds": 45.2,
      "time": "2024-01-15T02:00:45Z",      # RFC 3339, UTC: when it happened
      "message": "Backup of shop failed (run 12): ...",
      "host": "db-backup-1",
      ...                                  # event-specific extras, e.g. age_seconds
    }

With ``secretEnv`` set (and that variable present), a webhook carries
``X-Backup-Signature: sha256=<hex HMAC-SHA256 of the raw body>``.

Delivery never touches the caller's thread: each channel has a worker thread
and a bounded queue. Failed deliveries are retried with exponential backoff;
what still fails (or does not fit in the queue) is logged and counted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import smtplib
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Protocol
from urllib.parse import urlsplit

import structlog

from . import __version__
from .config import NotificationConfig
from .events import Listener
from .models import CleanupResult, Run, RunStatus

log = structlog.get_logger("pgbackup")

Payload = Mapping[str, Any]
SIGNATURE_HEADER = "X-Backup-Signature"
# A notification event -> the channel ``events`` entries that receive it. The
# config has no entry for missed fires: a fire that did not happen is a backup
# that is missing (stale) and a run that did not succeed (failure).
SUBSCRIPTIONS: dict[str, tuple[str, ...]] = {"missed_schedule": ("stale", "failure")}
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
STOP_GRACE_SECONDS = 5.0


def rfc3339(value: datetime) -> str:
    """UTC, second precision, with a ``Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class NotificationError(Exception):
    """A delivery failed. ``retryable`` is False for answers that will not change."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class Channel(Protocol):
    name: str  # e.g. "webhook[0]": the type and its index in ``notifications``
    events: frozenset[str]
    retries: int

    def deliver(self, payload: Payload) -> None:
        """One attempt; raises NotificationError."""


def wants(channel: Channel, payload: Payload) -> bool:
    event = str(payload.get("event", ""))
    return any(e in channel.events for e in SUBSCRIPTIONS.get(event, (event,)))


def render_text(payload: Payload) -> str:
    """The human form (Slack, e-mail body): the message, then the details."""
    lines = [str(payload.get("message") or payload.get("event", ""))]
    for key in ("database", "schedule", "status", "run_id", "error", "time", "since",
                "file_path", "size_bytes", "host"):
        value = payload.get(key)
        if value not in (None, ""):
            lines.append(f"{key}: {value}")
    return "\n".join(lines)


# -- HTTP channels ------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirected POST becomes a GET without the body: that is a lost
    # notification reported as delivered. Treat redirects as errors instead.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def _post_json(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> None:
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": f"backupd/{__version__}", **headers})
    try:
        with _opener.open(request, timeout=timeout) as response:
            response.read(65536)
    except urllib.error.HTTPError as err:
        detail = err.read(300).decode(errors="replace").strip()
        err.close()
        # 4xx (but 408/429) will answer the same next time: do not retry.
        retryable = err.code >= 500 or err.code in (408, 429)
        raise NotificationError(f"HTTP {err.code}" + (f": {detail}" if detail else ""),
                                retryable=retryable) from None
    except urllib.error.URLError as err:
        raise NotificationError(f"cannot reach {_host(url)}: {err.reason}") from None
    except (OSError, ValueError) as err:  # timeouts, resets, bad URLs
        raise NotificationError(f"{_host(url)}: {err}") from None


def _host(url: str) -> str:
    # Webhook URLs often hold their secret in the path (Slack does): show the host only.
    return urlsplit(url).netloc.rpartition("@")[2] or "?"


class WebhookChannel:
    """A JSON POST of the payload, signed when a secret is configured."""

    def __init__(self, config: NotificationConfig, index: int,
                 env: Mapping[str, str] | None = None) -> None:
        self.name = f"webhook[{index}]"
        self.events = config.events
        self.retries = config.retries
        self.config = config
        self._env = os.environ if env is None else env

    def deliver(self, payload: Payload) -> None:
        body = json.dumps(payload, separators=(",", ":"), default=str).encode()
        headers: dict[str, str] = {}
        if self.config.secret_env:
            secret = self._env.get(self.config.secret_env)
            if secret:
                digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
                headers[SIGNATURE_HEADER] = f"sha256={digest}"
            else:
                log.warning("Webhook secret variable is not set; sending unsigned",
                            channel=self.name, variable=self.config.secret_env)
        _post_json(self.config.url, body, headers, self.config.timeout_seconds)


class SlackChannel:
    """A Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat): ``{"text"}``."""

    def __init__(self, config: NotificationConfig, index: int) -> None:
        self.name = f"slack[{index}]"
        self.events = config.events
        self.retries = config.retries
        self.config = config

    def deliver(self, payload: Payload) -> None:
        body = json.dumps({"text": render_text(payload)}).encode()
        _post_json(self.config.url, body, {}, self.config.timeout_seconds)


# -- e-mail -----------------------------------------------------------------

_DEFAULT_PORTS = {"tls": 465, "starttls": 587, "none": 25}


class EmailChannel:
    """SMTP with STARTTLS, implicit TLS or neither; login from environment variables."""

    def __init__(self, config: NotificationConfig, index: int, *,
                 env: Mapping[str, str] | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.name = f"email[{index}]"
        self.events = config.events
        self.retries = config.retries
        self.config = config
        self._env = os.environ if env is None else env
        self._ssl = ssl_context

    def message(self, payload: Payload) -> EmailMessage:
        c = self.config
        msg = EmailMessage()
        title = str(payload.get("event", "event"))
        if payload.get("status"):
            title += f" {payload['status']}"
        subject = f"[backupd] {title}: {payload.get('database') or payload.get('schedule', '')}"
        msg["Subject"] = " ".join(subject.split())  # no line breaks in a header
        msg["From"] = c.mail_from
        msg["To"] = ", ".join(c.mail_to)
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = make_msgid(domain=c.mail_from.rpartition("@")[2] or None)
        msg.set_content(render_text(payload) + "\n")
        return msg

    def deliver(self, payload: Payload) -> None:
        c = self.config
        port = c.smtp_port or _DEFAULT_PORTS[c.smtp_security]
        context = self._ssl or ssl.create_default_context()
        credentials = self._credentials()
        try:
            smtp: smtplib.SMTP
            if c.smtp_security == "tls":
                smtp = smtplib.SMTP_SSL(c.smtp_host, port, timeout=c.timeout_seconds,
                                        context=context)
            else:
                smtp = smtplib.SMTP(c.smtp_host, port, timeout=c.timeout_seconds)
            with smtp:
                if c.smtp_security == "starttls":
                    smtp.starttls(context=context)
                if credentials:
                    smtp.login(*credentials)
                smtp.send_message(self.message(payload))
        except smtplib.SMTPAuthenticationError as exc:
            raise NotificationError(f"SMTP login refused: {exc.smtp_code} "
                                    f"{_smtp_text(exc.smtp_error)}", retryable=False) from None
        except smtplib.SMTPResponseException as exc:
            raise NotificationError(f"SMTP {exc.smtp_code} {_smtp_text(exc.smtp_error)}",
                                    retryable=exc.smtp_code < 500) from None
        except (smtplib.SMTPException, OSError) as exc:  # includes ssl.SSLError, timeouts
            raise NotificationError(f"SMTP {c.smtp_host}:{port}: {exc}") from None

    def _credentials(self) -> tuple[str, str] | None:
        c = self.config
        if not c.username_env and not c.password_env:
            return None
        missing = [v for v in (c.username_env, c.password_env) if v and not self._env.get(v)]
        if missing or not (c.username_env and c.password_env):
            names = ", ".join(missing) or "usernameEnv and passwordEnv (both are needed)"
            raise NotificationError(f"SMTP credentials not set: {names}", retryable=False)
        return self._env[c.username_env], self._env[c.password_env]


def _smtp_text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def build_channels(configs: Sequence[NotificationConfig],
                   env: Mapping[str, str] | None = None) -> list[Channel]:
    out: list[Channel] = []
    for i, c in enumerate(configs):
        if c.type == "webhook":
            out.append(WebhookChannel(c, i, env))
        elif c.type == "slack":
            out.append(SlackChannel(c, i))
        else:
            out.append(EmailChannel(c, i, env=env))
    return out


# -- dispatch ---------------------------------------------------------------


class Notifier:
    """Queues payloads for the channels that want them; never blocks the caller.

    ``on_result(channel_name, ok)`` is called after each final outcome (for
    metrics). ``sleep`` waits between retries (tests inject one).
    """

    def __init__(self, channels: Sequence[Channel], *, queue_size: int = 100,
                 on_result: Callable[[str, bool], None] | None = None,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.channels = list(channels)
        self.queue_size = queue_size
        self.on_result = on_result
        self.errors: dict[str, int] = {ch.name: 0 for ch in self.channels}
        self.sent: dict[str, int] = {ch.name: 0 for ch in self.channels}
        self._stopping = threading.Event()
        self._sleep = sleep or self._interruptible_sleep
        self._cond = threading.Condition()
        self._queues: dict[str, list[Payload]] = {ch.name: [] for ch in self.channels}
        self._busy: dict[str, bool] = {ch.name: False for ch in self.channels}
        self._threads: list[threading.Thread] = []

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
            with self._cond:
                queue = self._queues[ch.name]
                if self._stopping.is_set() or len(queue) >= self.queue_size:
                    dropped = True
                else:
                    queue.append(payload)
                    dropped = False
                    self._cond.notify_all()
            if dropped:
                self._record(ch, False, "queue full or notifier stopped; dropped",
                             payload)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued payload was delivered or given up on."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while any(self._queues.values()) or any(self._busy.values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def stop(self, grace_seconds: float = STOP_GRACE_SECONDS) -> None:
        """Deliver what is queued within ``grace_seconds`` (retries stop waiting), then stop."""
        if not self._stopping.is_set():
            self.flush(grace_seconds)
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=grace_seconds)
        with self._cond:
            for ch in self.channels:
                for payload in self._queues[ch.name]:
                    self._record(ch, False, "not delivered before shutdown", payload)
                self._queues[ch.name].clear()

    def _interruptible_sleep(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def _work(self, channel: Channel) -> None:
        while True:
            with self._cond:
                queue = self._queues[channel.name]
                while not queue and not self._stopping.is_set():
                    self._cond.wait()
                if not queue:
                    return
                payload = queue.pop(0)
                self._busy[channel.name] = True
            try:
                self._deliver(channel, payload)
            finally:
                with self._cond:
                    self._busy[channel.name] = False
                    self._cond.notify_all()

    def _deliver(self, channel: Channel, payload: Payload) -> None:
        attempts = 1 + max(0, channel.retries)
        delay = BACKOFF_FIRST_SECONDS
        for attempt in range(1, attempts + 1):
            try:
                channel.deliver(payload)
            except NotificationError as exc:
                last_try = attempt == attempts or not exc.retryable or self._stopping.is_set()
                if last_try:
                    self._record(channel, False, str(exc), payload, attempts=attempt)
                    return
                log.warning("Notification failed; retrying", channel=channel.name,
                            notification=payload.get("event"), attempt=attempt, error=str(exc),
                            retry_in_seconds=delay)
                self._sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_SECONDS)
            except Exception as exc:  # a bug in a channel must not kill its worker
                log.exception("Notification channel crashed", channel=channel.name)
                self._record(channel, False, f"internal error: {exc}", payload, attempts=attempt)
                return
            else:
                self._record(channel, True, "", payload, attempts=attempt)
                return

    def _record(self, channel: Channel, ok: bool, error: str, payload: Payload,
                attempts: int = 0) -> None:
        with self._cond:  # an RLock: some callers already hold it
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


# -- service events -> payloads ---------------------------------------------


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
    """Turns run and cleanup events into notifications (alerts come from alerts.py)."""

    def __init__(self, notifier: Notifier, clock: Callable[[], datetime],
                 host: str | None = None) -> None:
        self.notifier = notifier
        self.clock = clock
        self.host = host or socket.gethostname()

    def on_run_finished(self, run: Run) -> None:
        self.notifier.notify(run_payload(run, self.host))

    def on_cleanup(self, result: CleanupResult, directory: str) -> None:
        if not result.deleted_files:
            return  # nothing happened: not worth a message after every backup
        self.notifier.notify({
            "event": "cleanup", "backup_dir": directory, "deleted_files": result.deleted_files,
            "freed_bytes": result.freed_bytes, "files": list(result.files),
            "time": rfc3339(self.clock()), "host": self.host,
            "message": f"Retention deleted {result.deleted_files} backup(s) in {directory}, "
                       f"freeing {result.freed_bytes} bytes"})
