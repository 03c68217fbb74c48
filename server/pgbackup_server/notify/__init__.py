"""Notifications: webhook, Slack-compatible webhook and e-mail channels, fed by
service events and alerts through a dispatcher that never blocks the caller."""

from __future__ import annotations

from .channels import (
    SIGNATURE_HEADER,
    Channel,
    EmailChannel,
    NotificationError,
    SlackChannel,
    WebhookChannel,
    build_channels,
)
from .dispatcher import Notifier, wants
from .payloads import NotificationListener, render_text, rfc3339, run_payload

__all__ = [
    "SIGNATURE_HEADER", "Channel", "EmailChannel", "NotificationError",
    "NotificationListener", "Notifier", "SlackChannel", "WebhookChannel", "build_channels",
    "render_text", "rfc3339", "run_payload", "wants",
]
