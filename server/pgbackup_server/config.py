"""Typed configuration, parsed once from ``config.yaml`` into frozen objects.

Every problem names the key's path and what was expected, e.g.
``backup.retentionDays: expected an integer >= 1, got "thirty"``. All
problems are collected and raised together as one :class:`ConfigError`.

The objects live in :mod:`.config_model`, the value parsers in
:mod:`.config_values` and the optional sections' parsers in
:mod:`.config_sections`; import them all from here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from .config_model import (
    CHANNELS,
    COMPRESSIONS,
    EVENTS,
    FORMATS,
    JOB_NAMES,
    AlertsConfig,
    AuthConfig,
    BackupConfig,
    Compression,
    Config,
    DatabaseConfig,
    LogConfig,
    MetricsConfig,
    NotificationConfig,
    ScheduleConfig,
    SchedulerConfig,
    ServerConfig,
    TargetConfig,
    TlsConfig,
)
from .config_sections import (
    parse_alerts,
    parse_auth,
    parse_metrics,
    parse_notifications,
    parse_schedules,
    parse_targets,
    parse_tls,
)
from .config_values import (
    Reader,
    as_address,
    as_bool,
    as_path_list,
    as_text,
    choice,
    int_range,
    parse_compression,
    parse_database_url,
    parse_duration,
    resolve,
)
from .errors import ConfigError

__all__ = [
    "CHANNELS", "COMPRESSIONS", "EVENTS", "FORMATS", "JOB_NAMES",
    "AlertsConfig", "AuthConfig", "BackupConfig", "Compression", "Config", "ConfigError",
    "DatabaseConfig", "LogConfig", "MetricsConfig", "NotificationConfig", "ScheduleConfig",
    "SchedulerConfig", "ServerConfig", "TargetConfig", "TlsConfig",
    "build_config", "load_config", "parse_compression", "parse_database_url",
    "parse_duration",
]


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
            raise ConfigError(_yaml_error(p, exc)) from None
        base = p.resolve().parent
    return build_config(raw, base=base, env=env, source=Path(path) if path else None)


def _yaml_error(path: Path, exc: yaml.YAMLError) -> str:
    """``config.yaml, line 9, column 3: invalid YAML: ...`` with the offending line,
    rather than PyYAML's ``in "<unicode string>"``."""
    if isinstance(exc, yaml.reader.ReaderError):  # a control character: named by position
        exc.name = str(path)
    mark = getattr(exc, "problem_mark", None)
    if not isinstance(exc, yaml.MarkedYAMLError) or mark is None or not exc.problem:
        return f"{path}: invalid YAML: {exc}"
    message = f"{path}, line {mark.line + 1}, column {mark.column + 1}: invalid YAML: " \
              f"{exc.problem}"
    context = exc.context_mark
    if exc.context and context is not None and (context.line, context.column) != (
            mark.line, mark.column):
        message += (f" ({exc.context} started at line {context.line + 1}, "
                    f"column {context.column + 1})")
    elif exc.context:
        message += f" ({exc.context})"
    snippet = mark.get_snippet()
    return f"{message}\n{snippet}" if snippet else message


def build_config(raw: Any, *, base: Path, env: Mapping[str, str],
                 source: Path | None = None) -> Config:
    r = Reader()
    top = r.section(raw, "", {"database", "databases", "backup", "scheduler", "schedules",
                              "server",
                              "store", "log", "auth", "metrics", "alerts", "notifications"})

    many = top.get("databases")
    database: DatabaseConfig | None = None
    if many is None:
        db = r.section(top.get("database"), "database", {"url"})
        url = env.get("DATABASE_URL") or r.get(db, "database", "url", "", as_text,
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
    directory = resolve(base, r.get(b, "backup", "directory", "backups", as_text, "a path"))
    allowed_raw: list[str] = r.get(b, "backup", "allowedDirectories", [], as_path_list,
                                   "a list of paths")
    allowed = tuple(dict.fromkeys([directory, *(resolve(base, a) for a in allowed_raw)]))
    pg_dump_path = r.get(b, "backup", "pgDumpPath", None, as_text, "a path to pg_dump")
    backup = BackupConfig(
        enabled=r.get(b, "backup", "enabled", False, as_bool, "true or false"),
        directory=directory,
        retention_days=r.get(b, "backup", "retentionDays", 30, int_range(1, 36500),
                             "an integer >= 1"),
        cleanup_old=r.get(b, "backup", "cleanupOld", True, as_bool, "true or false"),
        compress_backup=r.get(b, "backup", "compressBackup", False, as_bool, "true or false"),
        allowed_directories=allowed,
        pg_dump_path=str(resolve(base, pg_dump_path)) if pg_dump_path else None,
        format=r.get(b, "backup", "format", "plain", choice(FORMATS),
                     "plain, custom or directory"),
        jobs=r.get(b, "backup", "jobs", 2, int_range(1, 64), "an integer from 1 to 64"),
        compression=r.get(b, "backup", "compression", None, parse_compression,
                          "none, gzip[:1-9], lz4[:1-12] or zstd[:1-19]"),
        timeout_seconds=r.get(b, "backup", "timeout", 6 * 3600.0, parse_duration,
                              'a duration such as "6h" or "90m"'),
        max_concurrent=r.get(b, "backup", "maxConcurrent", 1, int_range(1, 64),
                             "an integer from 1 to 64"),
        max_queued=r.get(b, "backup", "maxQueued", 10, int_range(0, 10000),
                         "an integer from 0 to 10000"),
        retention_min_keep=r.get(b, "backup", "retentionMinKeep", 1, int_range(1, 100000),
                                 "an integer >= 1"),
        verify=r.get(b, "backup", "verify", "none", choice(("none", "quick", "deep")),
                     "none, quick or deep"),
    )

    s = r.section(top.get("scheduler"), "scheduler", {"timezone", "misfireGraceTime"})
    tz = r.get(s, "scheduler", "timezone", "UTC", as_text, "an IANA timezone such as Europe/Paris")
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
        schedules.extend(parse_schedules(r, top.get("schedules"), tz, "schedules",
                                    database.dbname if database else ""))
    else:
        if "schedules" in top:
            r.errors.append("schedules: with databases:, put each schedule under "
                            "databases[i].schedules")
        for target, target_schedules in parse_targets(r, many, tz):
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
    data_dir = resolve(base, r.get(sv, "server", "dataDirectory", "data", as_text, "a path"))
    server = ServerConfig(
        grpc_address=r.get(sv, "server", "grpcAddress", "127.0.0.1:50051", as_address, "HOST:PORT"),
        http_address=r.get(sv, "server", "httpAddress", "127.0.0.1:8000", as_address, "HOST:PORT"),
        envoy=r.get(sv, "server", "envoy", True, as_bool, "true or false"),
        envoy_admin_port=r.get(sv, "server", "envoyAdminPort", 0, int_range(0, 65535),
                               "a port number (0 picks a free one)"),
        shutdown_grace_seconds=r.get(sv, "server", "shutdownGrace", 30.0, parse_duration,
                                     'a duration such as "30s"'),
        data_directory=data_dir,
        tls=parse_tls(r, sv.get("tls"), base),
    )

    st = r.section(top.get("store"), "store", {"url"})
    store_url = r.get(st, "store", "url", f"sqlite:///{data_dir / 'backupd.sqlite3'}", as_text,
                      "a SQLAlchemy URL such as sqlite:///data/backupd.sqlite3")

    lg = r.section(top.get("log"), "log", {"level", "format"})
    log = LogConfig(
        level=r.get(lg, "log", "level", "info",
                    choice(("debug", "info", "warning", "error")),
                    "debug, info, warning or error"),
        format=r.get(lg, "log", "format", "console", choice(("console", "json")),
                     "console or json"),
    )

    auth = parse_auth(r, top.get("auth"))
    metrics = parse_metrics(r, top.get("metrics"))
    alerts = parse_alerts(r, top.get("alerts"))
    notifications = parse_notifications(r, top.get("notifications"))

    if r.errors or database is None:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(r.errors))
    return Config(database=database, backup=backup, scheduler=scheduler,
                  schedules=tuple(schedules), server=server, store_url=store_url, log=log,
                  targets=tuple(targets), auth=auth, metrics=metrics, alerts=alerts,
                  notifications=notifications, source=source)
