"""Typed configuration, parsed once from ``config.yaml`` into frozen objects.

Every problem names the key's path and what was expected, e.g.
``backup.retentionDays: expected an integer >= 1, got "thirty"``. All
problems are collected and raised together as one :class:`ConfigError`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from .errors import ConfigError

JOB_NAMES = ("DatabaseBackup",)
EVENTS = ("failure", "success", "stale", "verification_failed", "cleanup")
CHANNELS = ("webhook", "slack", "email")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
FORMATS = ("plain", "custom", "directory")
COMPRESSIONS = {"none": (0, 0), "gzip": (1, 9), "lz4": (1, 12), "zstd": (1, 19)}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}

T = TypeVar("T")


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


class _Reader:
    """Walks the raw mapping, collecting one message per bad key."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def section(self, raw: Any, path: str, known: set[str]) -> Mapping[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            self.errors.append(f"{path}: expected a mapping, got {_show(raw)}")
            return {}
        for key in raw:
            if key not in known:
                hint = ", ".join(sorted(known))
                self.errors.append(f"{path}.{key}: unknown key (known keys: {hint})".lstrip("."))
        return raw

    def get(self, raw: Mapping[str, Any], path: str, key: str, default: T,
            parse: Callable[[Any], T], expected: str) -> T:
        if key not in raw or raw[key] is None:
            return default
        try:
            return parse(raw[key])
        except (TypeError, ValueError):
            self.errors.append(f"{path}.{key}: expected {expected}, got {_show(raw[key])}")
            return default


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else f'"{value}"'
    return text if len(text) <= 80 else text[:77] + "..."


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError


def _int_range(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError
        return value

    return parse


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise ValueError
    return value


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in options:
            raise ValueError
        return str(value)

    return parse


def parse_duration(value: Any) -> float:
    """``90`` (seconds), ``"30s"``, ``"15m"``, ``"6h"``, ``"2d"`` -> seconds (> 0)."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError
    if not 0 < seconds <= 366 * 86400:
        raise ValueError
    return seconds


def parse_compression(value: Any) -> Compression:
    """``"zstd"``, ``"zstd:3"``, ``"gzip:6"``, ``"none"``."""
    if not isinstance(value, str):
        raise ValueError
    method, _, level_text = value.strip().partition(":")
    if method not in COMPRESSIONS:
        raise ValueError
    low, high = COMPRESSIONS[method]
    if method == "none":
        if level_text:
            raise ValueError
        return Compression("none", 0)
    default = {"gzip": 6, "lz4": 1, "zstd": 1}[method]
    level = int(level_text) if level_text else default
    if not low <= level <= high:
        raise ValueError
    return Compression(method, level)


def _address(value: Any) -> str:
    host, sep, port = _text(value).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError
    return value


def parse_database_url(url: str, field: str = "database.url") -> DatabaseConfig:
    """Validate a libpq URI or key=value string; keep a redacted copy for logs."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(url)
    except Exception:  # psycopg's reason may quote the password: not repeated here
        raise ConfigError(f"{field}: not a valid libpq connection string; write "
                          "postgresql://user:password@host:5432/dbname and percent-encode "
                          "special characters in the password (@ as %40, : as %3A, "
                          "space as %20)") from None
    if "@" in str(params.get("host") or ""):
        raise ConfigError(f"{field}: the host contains '@'; percent-encode '@' in the "
                          "password as %40")
    for port in str(params.get("port") or "5432").split(","):
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f'{field}: port "{port}" is not a port number (1-65535)')
    dbname = str(params.get("dbname") or params.get("user") or "")
    if not dbname:
        raise ConfigError(f"{field}: no database name; write "
                          "postgresql://user@host:5432/dbname")
    shown = {k: v for k, v in params.items() if k != "password"}
    if "password" in params:
        shown["password"] = "***"
    return DatabaseConfig(url=url, dbname=dbname, redacted_url=make_conninfo("", **shown))


def _resolve(base: Path, value: str) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else base / path


def load_config(path: str | Path | None, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate ``path`` (None: defaults only). Relative paths are
    resolved against the config file's directory."""
    env = os.environ if env is None else env
    raw: Any = {}
    base = Path.cwd()
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {p}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {p}: {exc}") from None
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: invalid YAML: {exc}") from None
        base = p.resolve().parent
    return build_config(raw, base=base, env=env, source=Path(path) if path else None)


def build_config(raw: Any, *, base: Path, env: Mapping[str, str],
                 source: Path | None = None) -> Config:
    r = _Reader()
    top = r.section(raw, "", {"database", "databases", "backup", "scheduler", "schedules",
                              "server",
                              "store", "log", "auth", "metrics", "alerts", "notifications"})

    many = top.get("databases")
    database: DatabaseConfig | None = None
    if many is None:
        db = r.section(top.get("database"), "database", {"url"})
        url = env.get("DATABASE_URL") or r.get(db, "database", "url", "", _text,
                                                "a libpq URI")
        if not url:
            r.errors.append("database.url: required; set it in config.yaml or the "
                            "DATABASE_URL environment variable "
                            "(postgresql://user@host:5432/dbname), or list databases:")
        else:
            try:
                database = parse_database_url(url)
            except ConfigError as exc:
                r.errors.append(exc.message)
    elif "database" in top:
        r.errors.append("database: use either database: (one) or databases: (a list), "
                        "not both")

    b = r.section(top.get("backup"), "backup", {
        "enabled", "directory", "retentionDays", "cleanupOld", "compressBackup",
        "allowedDirectories", "pgDumpPath", "format", "compression", "timeout",
        "maxConcurrent", "maxQueued", "retentionMinKeep", "verify", "jobs"})
    directory = _resolve(base, r.get(b, "backup", "directory", "backups", _text, "a path"))
    allowed_raw: list[str] = r.get(b, "backup", "allowedDirectories", [], _path_list,
                                   "a list of paths")
    allowed = tuple(dict.fromkeys([directory, *(_resolve(base, a) for a in allowed_raw)]))
    pg_dump_path = r.get(b, "backup", "pgDumpPath", None, _text, "a path to pg_dump")
    backup = BackupConfig(
        enabled=r.get(b, "backup", "enabled", False, _bool, "true or false"),
        directory=directory,
        retention_days=r.get(b, "backup", "retentionDays", 30, _int_range(1, 36500),
                             "an integer >= 1"),
        cleanup_old=r.get(b, "backup", "cleanupOld", True, _bool, "true or false"),
        compress_backup=r.get(b, "backup", "compressBackup", False, _bool, "true or false"),
        allowed_directories=allowed,
        pg_dump_path=str(_resolve(base, pg_dump_path)) if pg_dump_path else None,
        format=r.get(b, "backup", "format", "plain", _choice(FORMATS),
                     "plain, custom or directory"),
        jobs=r.get(b, "backup", "jobs", 2, _int_range(1, 64), "an integer from 1 to 64"),
        compression=r.get(b, "backup", "compression", None, parse_compression,
                          "none, gzip[:1-9], lz4[:1-12] or zstd[:1-19]"),
        timeout_seconds=r.get(b, "backup", "timeout", 6 * 3600.0, parse_duration,
                              'a duration such as "6h" or "90m"'),
        max_concurrent=r.get(b, "backup", "maxConcurrent", 1, _int_range(1, 64),
                             "an integer from 1 to 64"),
        max_queued=r.get(b, "backup", "maxQueued", 10, _int_range(0, 10000),
                         "an integer from 0 to 10000"),
        retention_min_keep=r.get(b, "backup", "retentionMinKeep", 1, _int_range(1, 100000),
                                 "an integer >= 1"),
        verify=r.get(b, "backup", "verify", "none", _choice(("none", "quick", "deep")),
                     "none, quick or deep"),
    )

    s = r.section(top.get("scheduler"), "scheduler", {"timezone", "misfireGraceTime"})
    tz = r.get(s, "scheduler", "timezone", "UTC", _text, "an IANA timezone such as Europe/Paris")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        r.errors.append(f'scheduler.timezone: unknown timezone "{tz}"; use an IANA name '
                        'such as "UTC" or "Asia/Jakarta"')
        tz = "UTC"
    scheduler = SchedulerConfig(
        timezone=tz,
        misfire_grace_seconds=r.get(s, "scheduler", "misfireGraceTime", 3600.0, parse_duration,
                                    'a duration such as "1h"'),
    )

    targets: list[TargetConfig] = []
    schedules: list[ScheduleConfig] = []
    if many is None:
        if database is not None:
            targets.append(TargetConfig(name=database.dbname, database=database))
        schedules.extend(_schedules(r, top.get("schedules"), tz, "schedules",
                                    database.dbname if database else ""))
    else:
        if "schedules" in top:
            r.errors.append("schedules: with databases:, put each schedule under "
                            "databases[i].schedules")
        for target, target_schedules in _targets(r, many, tz):
            targets.append(target)
            schedules.extend(target_schedules)
        if targets:
            database = targets[0].database
    names = [s.name for s in schedules]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        r.errors.append(f'schedules: the name "{dup}" is used twice; names must be unique')

    sv = r.section(top.get("server"), "server", {"grpcAddress", "httpAddress", "envoy",
                                                  "envoyAdminPort", "shutdownGrace",
                                                  "dataDirectory", "tls"})
    data_dir = _resolve(base, r.get(sv, "server", "dataDirectory", "data", _text, "a path"))
    server = ServerConfig(
        grpc_address=r.get(sv, "server", "grpcAddress", "127.0.0.1:50051", _address, "HOST:PORT"),
        http_address=r.get(sv, "server", "httpAddress", "127.0.0.1:8000", _address, "HOST:PORT"),
        envoy=r.get(sv, "server", "envoy", True, _bool, "true or false"),
        envoy_admin_port=r.get(sv, "server", "envoyAdminPort", 0, _int_range(0, 65535),
                               "a port number (0 picks a free one)"),
        shutdown_grace_seconds=r.get(sv, "server", "shutdownGrace", 30.0, parse_duration,
                                     'a duration such as "30s"'),
        data_directory=data_dir,
        tls=_tls(r, sv.get("tls"), base),
    )

    st = r.section(top.get("store"), "store", {"url"})
    store_url = r.get(st, "store", "url", f"sqlite:///{data_dir / 'backupd.sqlite3'}", _text,
                      "a SQLAlchemy URL such as sqlite:///data/backupd.sqlite3")

    lg = r.section(top.get("log"), "log", {"level", "format"})
    log = LogConfig(
        level=r.get(lg, "log", "level", "info",
                    _choice(("debug", "info", "warning", "error")),
                    "debug, info, warning or error"),
        format=r.get(lg, "log", "format", "console", _choice(("console", "json")),
                     "console or json"),
    )

    a = r.section(top.get("auth"), "auth", {"tokenSha256", "allowUnauthenticated"})
    auth = AuthConfig(
        token_sha256=tuple(r.get(a, "auth", "tokenSha256", [], _digests,
                                 "a list of 64-character hex SHA-256 digests "
                                 "(backupctl token new prints one)")),
        allow_unauthenticated=r.get(a, "auth", "allowUnauthenticated", False, _bool,
                                    "true or false"),
    )
    m = r.section(top.get("metrics"), "metrics", {"enabled", "address"})
    metrics = MetricsConfig(
        enabled=r.get(m, "metrics", "enabled", True, _bool, "true or false"),
        address=r.get(m, "metrics", "address", "127.0.0.1:9090", _address, "HOST:PORT"))
    al = r.section(top.get("alerts"), "alerts", {"maxAge", "checkInterval"})
    alerts = AlertsConfig(
        max_age_seconds=r.get(al, "alerts", "maxAge", None, parse_duration,
                              'a duration such as "26h"'),
        check_interval_seconds=r.get(al, "alerts", "checkInterval", 60.0, parse_duration,
                                     'a duration such as "1m"'))
    notifications = _notifications(r, top.get("notifications"))

    if r.errors or database is None:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(r.errors))
    return Config(database=database, backup=backup, scheduler=scheduler,
                  schedules=tuple(schedules), server=server, store_url=store_url, log=log,
                  targets=tuple(targets), auth=auth, metrics=metrics, alerts=alerts,
                  notifications=notifications, source=source)


_TARGET_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,63}$")


def _targets(r: _Reader, raw: Any,
             tz: str) -> list[tuple[TargetConfig, tuple[ScheduleConfig, ...]]]:
    if not isinstance(raw, list) or not raw:
        r.errors.append(f"databases: expected a non-empty list of targets, got {_show(raw)}")
        return []
    out = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        path = f"databases[{i}]"
        e = r.section(entry, path, {"name", "url", "allDatabases", "schedules",
                                    "retentionDays", "maxAge"})
        url = r.get(e, path, "url", "", _text, "a libpq URI")
        if not url:
            r.errors.append(f"{path}.url: required (postgresql://user@host:5432/dbname)")
            continue
        try:
            database = parse_database_url(url, f"{path}.url")
        except ConfigError as exc:
            r.errors.append(exc.message)
            continue
        name = r.get(e, path, "name", database.dbname, _text, "a name")
        if not _TARGET_NAME.match(name):
            r.errors.append(f'{path}.name: "{name}" must be 1-63 letters, digits, ".", "_" '
                            'or "-"')
        if name in seen:
            r.errors.append(f'{path}.name: "{name}" is used twice; give each target a '
                            "unique name")
        seen.add(name)
        target = TargetConfig(
            name=name, database=database,
            all_databases=r.get(e, path, "allDatabases", False, _bool, "true or false"),
            retention_days=r.get(e, path, "retentionDays", None, _int_range(1, 36500),
                                 "an integer >= 1"),
            max_age_seconds=r.get(e, path, "maxAge", None, parse_duration,
                                  'a duration such as "26h"'))
        out.append((target, _schedules(r, e.get("schedules"), tz, f"{path}.schedules",
                                       name)))
    return out


def _digests(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise ValueError
    out = []
    for item in value:
        if not isinstance(item, str) or not _HEX64.match(item.strip().lower()):
            raise ValueError
        out.append(item.strip().lower())
    return out


def _tls(r: _Reader, raw: Any, base: Path) -> TlsConfig | None:
    if raw is None:
        return None
    t = r.section(raw, "server.tls", {"cert", "key", "clientCa"})
    cert = r.get(t, "server.tls", "cert", "", _text, "a PEM certificate path")
    key = r.get(t, "server.tls", "key", "", _text, "a PEM private key path")
    ca = r.get(t, "server.tls", "clientCa", None, _text, "a PEM CA bundle path")
    paths = {"cert": cert, "key": key, "clientCa": ca}
    for name, value in paths.items():
        if name != "clientCa" and not value:
            r.errors.append(f"server.tls.{name}: required when server.tls is set")
        elif value and not _resolve(base, value).is_file():
            r.errors.append(f"server.tls.{name}: file not found: {_resolve(base, value)}")
    if not cert or not key:
        return None
    return TlsConfig(_resolve(base, cert), _resolve(base, key),
                     _resolve(base, ca) if ca else None)


def _emails(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ValueError
    for item in items:
        if not isinstance(item, str) or "@" not in item or "\n" in item or "\r" in item:
            raise ValueError
    return tuple(items)


def _event_set(value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not value or any(v not in EVENTS for v in value):
        raise ValueError
    return frozenset(value)


def _http_url(value: Any) -> str:
    text = _text(value)
    if not text.startswith(("http://", "https://")):
        raise ValueError
    return text


def _notifications(r: _Reader, raw: Any) -> tuple[NotificationConfig, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        r.errors.append(f"notifications: expected a list of channels, got {_show(raw)}")
        return ()
    out = []
    for i, entry in enumerate(raw):
        path = f"notifications[{i}]"
        e = r.section(entry, path, {"type", "events", "url", "secretEnv", "retries", "timeout",
                                    "host", "port", "security", "from", "to", "usernameEnv",
                                    "passwordEnv"})
        kind = r.get(e, path, "type", "", _choice(CHANNELS), "webhook, slack or email")
        if not kind:
            r.errors.append(f"{path}.type: required (webhook, slack or email)")
            continue
        common: dict[str, Any] = dict(
            type=kind,
            events=r.get(e, path, "events", frozenset({"failure", "stale",
                                                       "verification_failed"}),
                         _event_set, f"a non-empty list of: {', '.join(EVENTS)}"),
            retries=r.get(e, path, "retries", 3, _int_range(0, 20), "an integer from 0 to 20"),
            timeout_seconds=r.get(e, path, "timeout", 10.0, parse_duration,
                                  'a duration such as "10s"'),
        )
        if kind in ("webhook", "slack"):
            url = r.get(e, path, "url", "", _http_url, "an http:// or https:// URL")
            if not url:
                r.errors.append(f"{path}.url: required for a {kind} channel")
            out.append(NotificationConfig(
                url=url, secret_env=r.get(e, path, "secretEnv", "", _text,
                                          "an environment variable name"), **common))
        else:
            host = r.get(e, path, "host", "", _text, "an SMTP host name")
            no_one: tuple[str, ...] = ()
            to = r.get(e, path, "to", no_one, _emails, "a list of e-mail addresses")
            sender = r.get(e, path, "from", "", _text, "an e-mail address")
            for key, value in (("host", host), ("to", to), ("from", sender)):
                if not value:
                    r.errors.append(f"{path}.{key}: required for an email channel")
            security = r.get(e, path, "security", "starttls",
                             _choice(("starttls", "tls", "none")), "starttls, tls or none")
            out.append(NotificationConfig(
                smtp_host=host, smtp_port=r.get(e, path, "port", 0, _int_range(0, 65535),
                                                "a port number"),
                smtp_security=security, mail_from=sender, mail_to=to,
                username_env=r.get(e, path, "usernameEnv", "", _text, "a variable name"),
                password_env=r.get(e, path, "passwordEnv", "", _text, "a variable name"),
                **common))
    return tuple(out)


def _path_list(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise ValueError
    return [_text(x) for x in value]


def _schedules(r: _Reader, raw: Any, tz: str, where: str,
               target: str) -> tuple[ScheduleConfig, ...]:
    from apscheduler.triggers.cron import CronTrigger

    if raw is None:
        return ()
    if not isinstance(raw, list):
        r.errors.append(f"{where}: expected a list of schedule entries, got {_show(raw)}")
        return ()
    out: list[ScheduleConfig] = []
    for i, entry in enumerate(raw):
        path = f"{where}[{i}]"
        e = r.section(entry, path, {"name", "cron", "job", "isEnabled"})
        if not e:
            if isinstance(entry, Mapping):
                r.errors.append(f"{path}: empty entry; give at least cron and job")
            continue
        default_name = f"schedule-{i}" if where == "schedules" else f"{target}-{i}"
        name = r.get(e, path, "name", default_name, _text, "a name")
        cron = r.get(e, path, "cron", "", _text, 'a cron expression such as "0 2 * * *"')
        if not cron:
            r.errors.append(f'{path}.cron: required, for example "0 2 * * *"')
        else:
            try:
                CronTrigger.from_crontab(cron, timezone=tz)
            except ValueError as exc:
                r.errors.append(f'{path}.cron: invalid cron expression "{cron}" ({exc}); '
                                'use five fields: minute hour day month weekday')
        job = r.get(e, path, "job", "", _text, "a job name")
        if job not in JOB_NAMES:
            r.errors.append(f'{path}.job: unknown job "{job}"; known jobs: {", ".join(JOB_NAMES)}')
        out.append(ScheduleConfig(name=name, cron=cron, job=job,
                                  enabled=r.get(e, path, "isEnabled", True, _bool,
                                                "true or false"), target=target))
    return tuple(out)
