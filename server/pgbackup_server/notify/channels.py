"""Notification channels: one delivery attempt each; the dispatcher retries.

A webhook POSTs the payload as JSON, signed with ``X-Backup-Signature:
sha256=<hex HMAC-SHA256 of the body>`` when ``secretEnv`` names a set variable.
Slack (and Mattermost, Rocket.Chat) gets ``{"text": ...}``. E-mail goes over SMTP
with STARTTLS, implicit TLS or neither, with a login from environment variables.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import smtplib
import ssl
from collections.abc import Collection, Mapping, Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Protocol
from urllib.parse import urlsplit

import httpx
import structlog

from .. import __version__
from ..domain.models import ChannelType
from ..settings import NotificationConfig
from .payloads import Payload, render_text

log = structlog.get_logger("pgbackup")

SIGNATURE_HEADER = "X-Backup-Signature"
_DEFAULT_PORTS = {"tls": 465, "starttls": 587, "none": 25}


class NotificationError(Exception):
    """A delivery failed. ``retryable`` is False for answers that will not change."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class Channel(Protocol):
    name: str  # e.g. "webhook[0]": the type and its index in ``notifications``
    retries: int

    @property
    def events(self) -> Collection[str]:
        """The events it receives (``notifications[i].events``)."""

    def deliver(self, payload: Payload) -> None:
        """One attempt; raises NotificationError."""


def _host(url: str) -> str:
    # Webhook URLs often hold their secret in the path (Slack's do): show the host only.
    return urlsplit(url).netloc.rpartition("@")[2] or "?"


def post_json(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> None:
    """One POST; redirects are failures (a redirected POST would lose its body)."""
    try:
        with httpx.Client(follow_redirects=False, timeout=timeout, trust_env=False) as client:
            response = client.post(url, content=body, headers={
                "Content-Type": "application/json",
                "User-Agent": f"backupd/{__version__}", **headers})
    except httpx.TimeoutException:
        raise NotificationError(f"{_host(url)}: timed out after {timeout:g} s") from None
    except httpx.HTTPError as exc:
        reason = str(exc).replace(url, _host(url)) or type(exc).__name__
        raise NotificationError(f"cannot reach {_host(url)}: {reason}") from None
    if response.status_code >= 300:
        detail = response.text[:300].strip()
        # 4xx (but 408/429) and redirects will answer the same next time: no retry.
        retryable = response.status_code >= 500 or response.status_code in (408, 429)
        raise NotificationError(f"HTTP {response.status_code}" + (f": {detail}" if detail
                                                                   else ""),
                                retryable=retryable)


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
        post_json(self.config.url, body, headers, self.config.timeout_seconds)


class SlackChannel:
    """A Slack-compatible incoming webhook: ``{"text": ...}``."""

    def __init__(self, config: NotificationConfig, index: int) -> None:
        self.name = f"slack[{index}]"
        self.events = config.events
        self.retries = config.retries
        self.config = config

    def deliver(self, payload: Payload) -> None:
        body = json.dumps({"text": render_text(payload)}).encode()
        post_json(self.config.url, body, {}, self.config.timeout_seconds)


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
        if c.type is ChannelType.WEBHOOK:
            out.append(WebhookChannel(c, i, env))
        elif c.type is ChannelType.SLACK:
            out.append(SlackChannel(c, i))
        else:
            out.append(EmailChannel(c, i, env=env))
    return out
