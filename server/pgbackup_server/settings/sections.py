"""The service's sections of ``config.yaml``: backup, scheduler, server (with TLS),
store, log, auth, metrics, alerts and notifications."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import StrictBool, StrictInt, field_validator, model_validator

from ..domain.models import ChannelType, DumpFormat, NotifyEvent, VerifyMode
from .fields import (
    Address,
    CompressionSetting,
    ConfigPath,
    Duration,
    Jobs,
    Section,
    Text,
    problem,
    setting,
    text,
)

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
DEFAULT_EVENTS = frozenset({NotifyEvent.FAILURE, NotifyEvent.STALE,
                            NotifyEvent.VERIFICATION_FAILED})


class BackupConfig(Section):
    enabled: StrictBool = setting(False, expected="true or false")
    directory: ConfigPath = setting("backups", expected="a path", validate_default=True)
    retention_days: StrictInt = setting(30, alias="retentionDays", expected="an integer >= 1",
                                        ge=1, le=36500)
    cleanup_old: StrictBool = setting(True, alias="cleanupOld", expected="true or false")
    compress_backup: StrictBool = setting(False, alias="compressBackup",
                                          expected="true or false")
    extra_directories: tuple[ConfigPath, ...] = setting(
        (), alias="allowedDirectories", expected="a list of paths")
    pg_dump_path: ConfigPath | None = setting(None, alias="pgDumpPath",
                                              expected="a path to pg_dump")
    format: DumpFormat = setting(DumpFormat.PLAIN, expected="plain, custom or directory")
    jobs: Jobs = setting("auto", expected="auto or an integer from 1 to 64")
    compression: CompressionSetting | None = setting(
        None, expected="none, gzip[:1-9], lz4[:1-12] or zstd[:1-19]")
    timeout_seconds: Duration = setting(6 * 3600.0, alias="timeout",
                                        expected='a duration such as "6h" or "90m"')
    max_concurrent: StrictInt = setting(1, alias="maxConcurrent",
                                        expected="an integer from 1 to 64", ge=1, le=64)
    max_queued: StrictInt = setting(10, alias="maxQueued",
                                    expected="an integer from 0 to 10000", ge=0, le=10000)
    retention_min_keep: StrictInt = setting(1, alias="retentionMinKeep",
                                            expected="an integer >= 1", ge=1, le=100000)
    verify: VerifyMode = setting(VerifyMode.NONE, expected="none, quick or deep")

    @field_validator("extra_directories", mode="before")
    @classmethod
    def _list(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise ValueError("not a list")
        return value

    @property
    def allowed_directories(self) -> tuple[Path, ...]:
        """Where backups may be written: ``directory`` and ``allowedDirectories``."""
        return tuple(dict.fromkeys([self.directory, *self.extra_directories]))


class SchedulerConfig(Section):
    timezone: Text = setting("UTC", expected="an IANA timezone such as Europe/Paris")
    misfire_grace_seconds: Duration = setting(3600.0, alias="misfireGraceTime",
                                              expected='a duration such as "1h"')

    @field_validator("timezone")
    @classmethod
    def _zone(cls, tz: str) -> str:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise problem(f'unknown timezone "{tz}"; use an IANA name such as "UTC" or '
                          '"Asia/Jakarta"') from None
        return tz

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class TlsConfig(Section):
    cert: ConfigPath = setting(expected="a PEM certificate path")
    key: ConfigPath = setting(expected="a PEM private key path")
    client_ca: ConfigPath | None = setting(None, alias="clientCa",
                                           expected="a PEM CA bundle path")

    @field_validator("cert", "key", "client_ca")
    @classmethod
    def _exists(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise problem(f"file not found: {path}")
        return path


class ServerConfig(Section):
    grpc_address: Address = setting("127.0.0.1:50051", alias="grpcAddress",
                                    expected="HOST:PORT")
    http_address: Address = setting("127.0.0.1:8000", alias="httpAddress",
                                    expected="HOST:PORT")
    envoy: StrictBool = setting(True, expected="true or false")
    envoy_admin_port: StrictInt = setting(0, alias="envoyAdminPort", ge=0, le=65535,
                                          expected="a port number (0 picks a free one)")
    shutdown_grace_seconds: Duration = setting(30.0, alias="shutdownGrace",
                                               expected='a duration such as "30s"')
    data_directory: ConfigPath = setting("data", alias="dataDirectory", expected="a path",
                                         validate_default=True)
    tls: TlsConfig | None = setting(None, expected="a mapping")


class StoreConfig(Section):
    url: Text | None = setting(None, expected="a SQLAlchemy URL such as "
                                              "sqlite:///data/backupd.sqlite3")


class LogConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = setting(
        "info", expected="debug, info, warning or error")
    format: Literal["console", "json"] = setting("console", expected="console or json")


class AuthConfig(Section):
    token_sha256: tuple[str, ...] = setting(
        (), alias="tokenSha256",
        expected="a list of 64-character hex SHA-256 digests (backupctl token new prints one)")
    allow_unauthenticated: StrictBool = setting(False, alias="allowUnauthenticated",
                                                expected="true or false")

    @field_validator("token_sha256", mode="before")
    @classmethod
    def _digests(cls, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list | tuple):
            raise ValueError("not a list")
        out = []
        for item in value:
            if not isinstance(item, str) or not _HEX64.match(item.strip().lower()):
                raise ValueError("not a digest")
            out.append(item.strip().lower())
        return tuple(out)


class MetricsConfig(Section):
    """Metrics are served at ``/metrics`` on the REST listener; ``address`` adds a
    listener of their own (off by default)."""

    enabled: StrictBool = setting(True, expected="true or false")
    address: Address | None = setting(None, expected="HOST:PORT")


class AlertsConfig(Section):
    max_age_seconds: Duration | None = setting(None, alias="maxAge",
                                               expected='a duration such as "26h"')
    check_interval_seconds: Duration = setting(60.0, alias="checkInterval",
                                               expected='a duration such as "1m"')


class NotificationConfig(Section):
    """One channel. Secrets are named by environment variable, never stored here."""

    type: ChannelType = setting(expected="webhook, slack or email")
    events: frozenset[NotifyEvent] = setting(
        DEFAULT_EVENTS, expected=f"a non-empty list of: {', '.join(NotifyEvent)}")
    url: str = setting("", expected="an http:// or https:// URL")
    secret_env: str = setting("", alias="secretEnv", expected="an environment variable name")
    retries: StrictInt = setting(3, expected="an integer from 0 to 20", ge=0, le=20)
    timeout_seconds: Duration = setting(10.0, alias="timeout",
                                        expected='a duration such as "10s"')
    smtp_host: str = setting("", alias="host", expected="an SMTP host name")
    smtp_port: StrictInt = setting(0, alias="port", expected="a port number", ge=0, le=65535)
    smtp_security: Literal["starttls", "tls", "none"] = setting(
        "starttls", alias="security", expected="starttls, tls or none")
    mail_from: str = setting("", alias="from", expected="an e-mail address")
    mail_to: tuple[str, ...] = setting((), alias="to", expected="a list of e-mail addresses")
    username_env: str = setting("", alias="usernameEnv", expected="a variable name")
    password_env: str = setting("", alias="passwordEnv", expected="a variable name")

    @field_validator("events", mode="before")
    @classmethod
    def _events(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple | set | frozenset) or not value or not all(
                isinstance(item, str) for item in value):
            raise ValueError("not a non-empty list of names")
        return frozenset(value)

    @field_validator("url", "secret_env", "smtp_host", "mail_from", "username_env",
                     "password_env", mode="before")
    @classmethod
    def _text(cls, value: Any) -> str:
        return text(value)

    @field_validator("url")
    @classmethod
    def _http(cls, url: str) -> str:
        if url and not url.startswith(("http://", "https://")):
            raise ValueError("not an http URL")
        return url

    @field_validator("mail_to", mode="before")
    @classmethod
    def _emails(cls, value: Any) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not items:
            raise ValueError("not a list")
        for item in items:
            if not isinstance(item, str) or "@" not in item or "\n" in item or "\r" in item:
                raise ValueError("not an address")
        return tuple(items)

    @model_validator(mode="after")
    def _required(self) -> NotificationConfig:
        needed = (("url",) if self.type in (ChannelType.WEBHOOK, ChannelType.SLACK)
                  else ("host", "to", "from"))
        values = {"url": self.url, "host": self.smtp_host, "to": self.mail_to,
                  "from": self.mail_from}
        missing = [key for key in needed if not values[key]]
        if missing:
            raise problem("; ".join(f"{key}: required for a{'n' if self.type == 'email' else ''}"
                                    f" {self.type} channel" for key in missing))
        return self
