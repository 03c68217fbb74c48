"""The settings: ``config.yaml`` as frozen, validated pydantic models.

Keys are camelCase in YAML and snake_case in code. Each default is written
once, here. Unknown keys, wrong types and values out of range are refused with
the key's path (see :mod:`.errors`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    PrivateAttr,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

from ..domain.models import ChannelType, DumpFormat, NotifyEvent, VerifyMode
from ..postgres.conninfo import ConnInfo, ConnInfoError
from .fields import (
    Address,
    CompressionSetting,
    ConfigPath,
    Duration,
    Text,
    problem,
    setting,
    text,
)

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TARGET_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,63}$")
JOB_NAMES = ("DatabaseBackup",)
DEFAULT_EVENTS = frozenset({NotifyEvent.FAILURE, NotifyEvent.STALE,
                            NotifyEvent.VERIFICATION_FAILED})


class Section(BaseModel):
    """Base of every section: unknown keys refused, immutable, camelCase keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True,
                              validate_by_alias=True, arbitrary_types_allowed=True)


# -- databases ----------------------------------------------------------------


class DatabaseConfig(Section):
    """``database:``, one database to back up."""

    url: Text = setting(alias="url", expected="a libpq URI", repr=False)

    @field_validator("url")
    @classmethod
    def _parse(cls, url: str) -> str:
        try:
            ConnInfo.parse(url)
        except ConnInfoError as exc:
            raise problem(str(exc)) from None
        return url

    @cached_property
    def conninfo(self) -> ConnInfo:
        """libpq parameters, password included: pass on only through postgres.client_env."""
        return ConnInfo.parse(self.url)

    @property
    def dbname(self) -> str:
        return self.conninfo.dbname

    @property
    def redacted_url(self) -> str:
        return self.conninfo.redacted


class ScheduleSection(Section):
    """One entry of ``schedules:`` (or ``databases[i].schedules``)."""

    name: Text | None = setting(None, expected="a name")
    cron: Text = setting(expected='a cron expression such as "0 2 * * *"')
    job: Text = setting(expected="a job name")
    enabled: StrictBool = setting(True, alias="isEnabled", expected="true or false")

    @field_validator("cron")
    @classmethod
    def _cron(cls, cron: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(cron, timezone="UTC")
        except ValueError as exc:
            raise problem(f'invalid cron expression "{cron}" ({exc}); use five fields: '
                          "minute hour day month weekday") from None
        return cron

    @field_validator("job")
    @classmethod
    def _job(cls, job: str) -> str:
        if job not in JOB_NAMES:
            raise problem(f'unknown job "{job}"; known jobs: {", ".join(JOB_NAMES)}')
        return job


@dataclass(frozen=True, slots=True)
class ScheduleConfig:
    """A schedule with its resolved name and the target it backs up."""

    name: str
    cron: str
    job: str
    enabled: bool
    target: str = ""


class TargetConfig(Section):
    """One thing to back up: a database, or every database of a server."""

    name: str = setting("", expected="a name")
    url: Text = setting(alias="url", expected="a libpq URI", repr=False)
    all_databases: StrictBool = setting(False, alias="allDatabases",
                                        expected="true or false")
    schedules: list[ScheduleSection] = setting(
        [], expected="a list of schedule entries")
    retention_days: StrictInt | None = setting(None, alias="retentionDays",
                                               expected="an integer >= 1", ge=1, le=36500)
    max_age_seconds: Duration | None = setting(None, alias="maxAge",
                                               expected='a duration such as "26h"')

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, raw: Any) -> Any:
        """The name defaults to the database name in the URL."""
        if isinstance(raw, dict) and not raw.get("name") and isinstance(raw.get("url"), str):
            try:
                return {**raw, "name": ConnInfo.parse(raw["url"]).dbname}
            except ConnInfoError:
                return raw  # the url's own error says what is wrong
        return raw

    @field_validator("name")
    @classmethod
    def _name(cls, name: Any) -> str:
        if not isinstance(name, str):
            raise ValueError("not a name")
        if name and not _TARGET_NAME.match(name):
            raise problem(f'"{name}" must be 1-63 letters, digits, ".", "_" or "-"')
        return name

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        return DatabaseConfig._parse(url)

    @cached_property
    def database(self) -> DatabaseConfig:
        return DatabaseConfig(url=self.url)


# -- backup, scheduling, server ----------------------------------------------------


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
    jobs: StrictInt = setting(2, expected="an integer from 1 to 64", ge=1, le=64)
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
        if not isinstance(value, list | tuple | set | frozenset) or not value:
            raise ValueError("not a non-empty list")
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


# -- the whole file ---------------------------------------------------------------


class Settings(Section):
    """Everything ``config.yaml`` says, validated; built by :func:`build_settings`."""

    database_section: DatabaseConfig | None = setting(None, alias="database",
                                                      expected="a mapping")
    databases: list[TargetConfig] | None = setting(
        None, expected="a non-empty list of targets", min_length=1)
    backup: BackupConfig = setting({}, expected="a mapping", validate_default=True)
    scheduler: SchedulerConfig = setting({}, expected="a mapping", validate_default=True)
    top_schedules: list[ScheduleSection] | None = setting(
        None, alias="schedules", expected="a list of schedule entries")
    server: ServerConfig = setting({}, expected="a mapping", validate_default=True)
    store: StoreConfig = setting({}, expected="a mapping", validate_default=True)
    log: LogConfig = setting({}, expected="a mapping", validate_default=True)
    auth: AuthConfig = setting({}, expected="a mapping", validate_default=True)
    metrics: MetricsConfig = setting({}, expected="a mapping", validate_default=True)
    alerts: AlertsConfig = setting({}, expected="a mapping", validate_default=True)
    notifications: tuple[NotificationConfig, ...] = setting(
        (), expected="a list of channels")
    _source: Path | None = PrivateAttr(None)

    @cached_property
    def targets(self) -> tuple[TargetConfig, ...]:
        """What to back up: ``databases:``, or the one ``database:`` as a target named
        after its database."""
        if self.databases is not None:
            return tuple(self.databases)
        assert self.database_section is not None
        url = self.database_section.url
        return (TargetConfig(name=ConnInfo.parse(url).dbname, url=url),)

    @property
    def database(self) -> DatabaseConfig:
        """The first target's database."""
        return self.targets[0].database

    @cached_property
    def schedules(self) -> tuple[ScheduleConfig, ...]:
        """Every schedule, named (``schedule-N`` or ``<target>-N`` by default), with its
        target."""
        out: list[ScheduleConfig] = []
        if self.databases is None:
            for i, s in enumerate(self.top_schedules or ()):
                out.append(ScheduleConfig(s.name or f"schedule-{i}", s.cron, s.job, s.enabled,
                                          self.targets[0].name))
        for t in self.databases or ():
            for i, s in enumerate(t.schedules):
                out.append(ScheduleConfig(s.name or f"{t.name}-{i}", s.cron, s.job, s.enabled,
                                          t.name))
        return tuple(out)

    @property
    def store_url(self) -> str:
        return self.store.url or f"sqlite:///{self.server.data_directory / 'backupd.sqlite3'}"

    @property
    def source(self) -> Path | None:
        """The config file these settings came from (None: defaults only)."""
        return self._source
