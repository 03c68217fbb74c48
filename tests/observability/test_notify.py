"""Notification channels against a real local HTTP server and a real SMTP server."""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pgbackup_server.notify import (
    SIGNATURE_HEADER,
    EmailChannel,
    NotificationError,
    Notifier,
    SlackChannel,
    WebhookChannel,
    wants,
)
from pgbackup_server.postgres.embedded import free_port
from pgbackup_server.settings import NotificationConfig

EVENTS = frozenset({"failure", "success", "stale", "verification_failed", "cleanup"})
FAILURE = {"event": "failure", "database": "shop", "run_id": 7, "error": "pg_dump exited 1",
           "time": "2024-01-15T02:00:45Z", "message": "Backup of shop failed (run 7): boom"}


class Receiver:
    """A local HTTP server that records POSTs; answers with ``codes`` in turn, then 200."""

    def __init__(self, codes: list[int] | None = None) -> None:
        self.codes = list(codes or [])
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.cond:
                    receiver.requests.append(({k.lower(): v for k, v in self.headers.items()},
                                              body))
                    code = receiver.codes.pop(0) if receiver.codes else 200
                    receiver.cond.notify_all()
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       kwargs={"poll_interval": 0.05})
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook/SECRET-TOKEN"

    def json(self) -> list[dict[str, Any]]:
        with self.cond:
            return [json.loads(body) for _, body in self.requests]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.requests) < count and time.monotonic() < deadline:
                self.cond.wait(0.1)
        return self.json()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Inbox:
    """aiosmtpd handler keeping what arrives (and who logged in)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], Message]] = []
        self.logins: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if session.authenticated:
            self.logins.append(str(session.auth_data.login.decode()))
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                              message_from_bytes(envelope.original_content)))
        return "250 Message accepted"


def smtp_server(inbox: Inbox, **kwargs: Any) -> tuple[Any, int]:
    from aiosmtpd.controller import Controller

    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return controller, port


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def webhook(url: str, **kwargs: Any) -> NotificationConfig:
    return NotificationConfig(type="webhook", events=kwargs.pop("events", EVENTS), url=url,
                              **kwargs)


def email(port: int, **kwargs: Any) -> NotificationConfig:
    return NotificationConfig(type="email", events=EVENTS, smtp_host="127.0.0.1", smtp_port=port,
                              mail_from="backupd@example.com", mail_to=("ops@example.com",),
                              **kwargs)


def run_notifier(channels: list[Any], payloads: list[dict[str, Any]],
                 **kwargs: Any) -> Notifier:
    notifier = Notifier(channels, **kwargs)
    notifier.start()
    try:
        for p in payloads:
            notifier.notify(p)
        assert notifier.flush(15)
    finally:
        notifier.stop()
    return notifier


# -- webhook ------------------------------------------------------------------


def test_webhook_posts_the_payload_signed_with_hmac(receiver):
    secret = "hook-secret-1"
    channel = WebhookChannel(webhook(receiver.url, secret_env="HOOK_SECRET"), 0,
                             env={"HOOK_SECRET": secret})
    notifier = run_notifier([channel], [FAILURE])
    ((headers, body),) = receiver.requests
    assert json.loads(body) == FAILURE
    assert headers["content-type"] == "application/json"
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER.lower()] == f"sha256={expected}"
    assert notifier.sent == {"webhook[0]": 1} and notifier.errors == {"webhook[0]": 0}


def test_webhook_without_its_secret_variable_is_sent_unsigned(receiver):
    channel = WebhookChannel(webhook(receiver.url, secret_env="UNSET_SECRET"), 0, env={})
    run_notifier([channel], [FAILURE])
    ((headers, _),) = receiver.requests
    assert SIGNATURE_HEADER.lower() not in headers


def test_webhook_retries_with_exponential_backoff():
    receiver = Receiver(codes=[500, 503, 429])
    sleeps: list[float] = []
    try:
        channel = WebhookChannel(webhook(receiver.url, retries=3), 0, env={})
        notifier = run_notifier([channel], [FAILURE], sleep=sleeps.append)
    finally:
        receiver.close()
    assert len(receiver.requests) == 4
    assert sleeps == [1.0, 2.0, 4.0]
    assert notifier.sent["webhook[0]"] == 1 and notifier.errors["webhook[0]"] == 0


def test_webhook_gives_up_after_retries_and_counts_the_error():
    receiver = Receiver(codes=[500] * 10)
    results: list[tuple[str, bool]] = []
    try:
        channel = WebhookChannel(webhook(receiver.url, retries=2), 0, env={})
        notifier = run_notifier([channel], [FAILURE], sleep=lambda s: None,
                                on_result=lambda name, ok: results.append((name, ok)))
    finally:
        receiver.close()
    assert len(receiver.requests) == 3
    assert notifier.errors["webhook[0]"] == 1 and results == [("webhook[0]", False)]


def test_webhook_client_error_is_not_retried():
    receiver = Receiver(codes=[404])
    try:
        channel = WebhookChannel(webhook(receiver.url, retries=5), 0, env={})
        notifier = run_notifier([channel], [FAILURE], sleep=lambda s: None)
    finally:
        receiver.close()
    assert len(receiver.requests) == 1 and notifier.errors["webhook[0]"] == 1


def test_unreachable_webhook_is_an_error_that_hides_its_url_path():
    port = free_port()  # nothing listens there
    channel = WebhookChannel(webhook(f"http://127.0.0.1:{port}/T0/SECRET-PATH", retries=1,
                                     timeout_seconds=2), 0, env={})
    with pytest.raises(NotificationError) as err:
        channel.deliver(FAILURE)
    assert "SECRET-PATH" not in str(err.value) and f"127.0.0.1:{port}" in str(err.value)
    notifier = run_notifier([channel], [FAILURE], sleep=lambda s: None)
    assert notifier.errors["webhook[0]"] == 1


def test_slack_posts_text(receiver):
    channel = SlackChannel(NotificationConfig(type="slack", events=EVENTS, url=receiver.url), 1)
    run_notifier([channel], [FAILURE])
    ((_, body),) = receiver.requests
    text = json.loads(body)["text"]
    assert text.startswith("Backup of shop failed (run 7): boom")
    assert "database: shop" in text and "error: pg_dump exited 1" in text


# -- dispatch -----------------------------------------------------------------


class BlockingChannel:
    """A channel that hangs until released: a dead SMTP server, a black-holed URL."""

    def __init__(self, events: frozenset[str] = EVENTS) -> None:
        self.name = "blocking[0]"
        self.events = events
        self.retries = 0
        self.release = threading.Event()
        self.entered = threading.Event()
        self.delivered: list[Any] = []

    def deliver(self, payload: Any) -> None:
        self.entered.set()
        self.release.wait(30)
        self.delivered.append(payload)


def test_a_hanging_channel_never_blocks_the_caller_nor_other_channels(receiver):
    stuck = BlockingChannel()
    notifier = Notifier([stuck, WebhookChannel(webhook(receiver.url), 1, env={})])
    notifier.start()
    try:
        caller = threading.Thread(target=lambda: [notifier.notify(FAILURE) for _ in range(3)])
        caller.start()
        caller.join(5)
        assert not caller.is_alive(), "notify() blocked on a hanging channel"
        assert len(receiver.wait_for(3)) == 3  # the webhook is not held up by the other
        assert stuck.entered.wait(5)
    finally:
        stuck.release.set()
        notifier.stop()
    assert len(stuck.delivered) == 3


def test_a_full_queue_drops_and_counts():
    stuck = BlockingChannel()
    notifier = Notifier([stuck], queue_size=2)
    notifier.start()
    try:
        notifier.notify(FAILURE)
        assert stuck.entered.wait(5)  # one in delivery, then two fit in the queue
        for _ in range(4):
            notifier.notify(FAILURE)
        assert notifier.errors["blocking[0]"] == 2
    finally:
        stuck.release.set()
        notifier.stop()
    assert len(stuck.delivered) == 3


def test_channels_get_only_the_events_they_want():
    only_failures = BlockingChannel(frozenset({"failure"}))
    stale = BlockingChannel(frozenset({"stale"}))
    assert wants(only_failures, FAILURE) and not wants(stale, FAILURE)
    assert not wants(only_failures, {"event": "success"})
    assert wants(stale, {"event": "stale", "status": "resolved"})
    # A missed fire is both a missing backup and a run that did not succeed.
    assert wants(stale, {"event": "missed_schedule"})
    assert wants(only_failures, {"event": "missed_schedule"})
    assert not wants(stale, {"event": "cleanup"})


# -- email --------------------------------------------------------------------


def test_email_arrives_with_database_error_and_time():
    inbox = Inbox()
    controller, port = smtp_server(inbox)
    try:
        run_notifier([EmailChannel(email(port, smtp_security="none"), 2, env={})], [FAILURE])
    finally:
        controller.stop()
    ((sender, rcpts, msg),) = inbox.messages
    assert sender == "backupd@example.com" and rcpts == ["ops@example.com"]
    assert msg["Subject"] == "[backupd] failure: shop"
    body = msg.get_payload(decode=True).decode()
    for text in ("Backup of shop failed", "database: shop", "error: pg_dump exited 1",
                 "time: 2024-01-15T02:00:45Z"):
        assert text in body


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_email_over_tls_with_login_from_the_environment(tmp_path: Path, security: str):
    from aiosmtpd.smtp import AuthResult
    from certs import make_pki

    pki = make_pki(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(pki.server_cert, pki.server_key)
    client_ctx = ssl.create_default_context(cafile=str(pki.ca))

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        ok = auth_data.login == b"mailer" and auth_data.password == b"p4ss word"
        # handled=False: aiosmtpd then answers a refusal with 535 itself.
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    inbox = Inbox()
    tls = ({"tls_context": server_ctx, "require_starttls": True} if security == "starttls"
           else {"ssl_context": server_ctx})
    # aiosmtpd only knows STARTTLS as TLS; over implicit TLS it must be told AUTH is fine.
    controller, port = smtp_server(inbox, authenticator=authenticator,
                                   auth_require_tls=security == "starttls", **tls)
    env = {"SMTP_USER": "mailer", "SMTP_PASSWORD": "p4ss word"}
    try:
        channel = EmailChannel(email(port, smtp_security=security, username_env="SMTP_USER",
                                     password_env="SMTP_PASSWORD"), 0, env=env,
                               ssl_context=client_ctx)
        run_notifier([channel], [FAILURE])
        wrong = EmailChannel(email(port, smtp_security=security, username_env="SMTP_USER",
                                   password_env="SMTP_PASSWORD"), 1,
                             env={**env, "SMTP_PASSWORD": "nope"}, ssl_context=client_ctx)
        with pytest.raises(NotificationError, match="login refused") as err:
            wrong.deliver(FAILURE)
        assert not err.value.retryable
    finally:
        controller.stop()
    assert len(inbox.messages) == 1 and inbox.logins == ["mailer"]


def test_email_with_unset_credential_variables_fails_without_sending():
    channel = EmailChannel(email(free_port(), smtp_security="none", username_env="SMTP_USER",
                                 password_env="SMTP_PASSWORD"), 0, env={"SMTP_USER": "u"})
    with pytest.raises(NotificationError, match="SMTP_PASSWORD") as err:
        channel.deliver(FAILURE)
    assert not err.value.retryable
