"""The configuration model: frozen, validated objects and the values they allow.

Built by :mod:`pgbackup_server.config` from ``config.yaml``; everything else
imports these from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

JOB_NAMES = ("DatabaseBackup",)
EVENTS = ("failure", "success", "stale", "verification_failed", "cleanup")
CHANNELS = ("webhook", "slack", "email")
FORMATS = ("plain", "custom", "directory")
COMPRESSIONS = {"none": (0, 0), "gzip": (1, 9), "lz4": (1, 12), "zstd": (1, 19)}

@dataclass(frozen=True, slots=True)
class Compression:
    method: str  # none, gzip, lz4, zstd
    level: int

    def __str__(self) -> str:
        return "none" if self.method == "none" else f"{self.method}:{self.level}"


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    url: str  # may hold a password: never log it, use redacted_url
    dbname: str
    redacted_url: str


@dataclass(frozen=True, slots=True)
class TargetConfig:
    """One thing to back up: a database, or every database of a server."""

    name: str
    database: DatabaseConfig
    all_databases: bool = False
    retention_days: int | None = None  # overrides backup.retentionDays
    max_age_seconds: float | None = None  # overrides alerts.maxAge


@dataclass(frozen=True, slots=True)
class BackupConfig:
    enabled: bool
    directory: Path
    retention_days: int
    cleanup_old: bool
    compress_backup: bool
    allowed_directories: tuple[Path, ...]
    pg_dump_path: str | None
    format: str
    compression: Compression | None  # None: decided by compressBackup
    timeout_seconds: float
    max_concurrent: int
    max_queued: int
    retention_min_keep: int
    verify: str = "none"  # none, quick, deep: after each scheduled backup
    jobs: int = 2  # pg_dump -j for the directory format


@dataclass(frozen=True, slots=True)
class ScheduleConfig:
    name: str
    cron: str
    job: str
    enabled: bool
    target: str = ""  # name of the database target it backs up


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    timezone: str
    misfire_grace_seconds: float

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    grpc_address: str
    http_address: str
    envoy: bool
    envoy_admin_port: int
    shutdown_grace_seconds: float
    data_directory: Path
    tls: TlsConfig | None = None


@dataclass(frozen=True, slots=True)
class TlsConfig:
    cert: Path
    key: Path
    client_ca: Path | None


@dataclass(frozen=True, slots=True)
class AuthConfig:
    token_sha256: tuple[str, ...]
    allow_unauthenticated: bool


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    enabled: bool
    address: str


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    max_age_seconds: float | None  # None: no stale-backup alert
    check_interval_seconds: float


@dataclass(frozen=True, slots=True)
class NotificationConfig:
    """One channel. Secrets are named by environment variable, never stored here."""

    type: str  # webhook, slack, email
    events: frozenset[str]
    url: str = ""
    secret_env: str = ""
    retries: int = 3
    timeout_seconds: float = 10.0
    smtp_host: str = ""
    smtp_port: int = 0
    smtp_security: str = "starttls"  # starttls, tls, none
    mail_from: str = ""
    mail_to: tuple[str, ...] = ()
    username_env: str = ""
    password_env: str = ""


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str
    format: str


@dataclass(frozen=True, slots=True)
class Config:
    database: DatabaseConfig
    backup: BackupConfig
    scheduler: SchedulerConfig
    schedules: tuple[ScheduleConfig, ...]
    server: ServerConfig
    store_url: str
    log: LogConfig
    targets: tuple[TargetConfig, ...] = ()
    auth: AuthConfig = AuthConfig((), False)
    metrics: MetricsConfig = MetricsConfig(False, "127.0.0.1:9090")
    alerts: AlertsConfig = AlertsConfig(None, 60.0)
    notifications: tuple[NotificationConfig, ...] = ()
    source: Path | None = field(default=None, compare=False)
