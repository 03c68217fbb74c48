"""Parsers for the optional and extended sections of ``config.yaml``.

``databases:`` (targets, each with its schedules), ``schedules:``,
``server.tls``, ``auth``, ``metrics``, ``alerts`` and ``notifications:``.
Each records its problems on the shared :class:`~.config_values.Reader`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config_model import (
    CHANNELS,
    EVENTS,
    JOB_NAMES,
    AlertsConfig,
    AuthConfig,
    MetricsConfig,
    NotificationConfig,
    ScheduleConfig,
    TargetConfig,
    TlsConfig,
)
from .config_values import (
    Reader,
    as_address,
    as_bool,
    as_text,
    choice,
    int_range,
    parse_database_url,
    parse_duration,
    resolve,
    show,
)
from .errors import ConfigError

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TARGET_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,63}$")


def parse_targets(r: Reader, raw: Any,
                  tz: str) -> list[tuple[TargetConfig, tuple[ScheduleConfig, ...]]]:
    """``databases:``: each target with its own schedules."""
    if not isinstance(raw, list) or not raw:
        r.errors.append(f"databases: expected a non-empty list of targets, got {show(raw)}")
        return []
    out = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        path = f"databases[{i}]"
        e = r.section(entry, path, {"name", "url", "allDatabases", "schedules",
                                    "retentionDays", "maxAge"})
        url = r.get(e, path, "url", "", as_text, "a libpq URI")
        if not url:
            r.errors.append(f"{path}.url: required (postgresql://user@host:5432/dbname)")
            continue
        try:
            database = parse_database_url(url, f"{path}.url")
        except ConfigError as exc:
            r.errors.append(exc.message)
            continue
        name = r.get(e, path, "name", database.dbname, as_text, "a name")
        if not _TARGET_NAME.match(name):
            r.errors.append(f'{path}.name: "{name}" must be 1-63 letters, digits, ".", "_" '
                            'or "-"')
        if name in seen:
            r.errors.append(f'{path}.name: "{name}" is used twice; give each target a '
                            "unique name")
        seen.add(name)
        target = TargetConfig(
            name=name, database=database,
            all_databases=r.get(e, path, "allDatabases", False, as_bool, "true or false"),
            retention_days=r.get(e, path, "retentionDays", None, int_range(1, 36500),
                                 "an integer >= 1"),
            max_age_seconds=r.get(e, path, "maxAge", None, parse_duration,
                                  'a duration such as "26h"'))
        out.append((target, parse_schedules(r, e.get("schedules"), tz, f"{path}.schedules",
                                            name)))
    return out


def parse_schedules(r: Reader, raw: Any, tz: str, where: str,
                    target: str) -> tuple[ScheduleConfig, ...]:
    """A list of schedules (top-level ``schedules:`` or ``databases[i].schedules``)."""
    from apscheduler.triggers.cron import CronTrigger

    if raw is None:
        return ()
    if not isinstance(raw, list):
        r.errors.append(f"{where}: expected a list of schedule entries, got {show(raw)}")
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
        name = r.get(e, path, "name", default_name, as_text, "a name")
        cron = r.get(e, path, "cron", "", as_text, 'a cron expression such as "0 2 * * *"')
        if not cron:
            r.errors.append(f'{path}.cron: required, for example "0 2 * * *"')
        else:
            try:
                CronTrigger.from_crontab(cron, timezone=tz)
            except ValueError as exc:
                r.errors.append(f'{path}.cron: invalid cron expression "{cron}" ({exc}); '
                                'use five fields: minute hour day month weekday')
        job = r.get(e, path, "job", "", as_text, "a job name")
        if job not in JOB_NAMES:
            r.errors.append(f'{path}.job: unknown job "{job}"; known jobs: {", ".join(JOB_NAMES)}')
        out.append(ScheduleConfig(name=name, cron=cron, job=job,
                                  enabled=r.get(e, path, "isEnabled", True, as_bool,
                                                "true or false"), target=target))
    return tuple(out)


def parse_tls(r: Reader, raw: Any, base: Path) -> TlsConfig | None:
    """``server.tls``: certificate, key and optional client CA (files must exist)."""
    if raw is None:
        return None
    t = r.section(raw, "server.tls", {"cert", "key", "clientCa"})
    cert = r.get(t, "server.tls", "cert", "", as_text, "a PEM certificate path")
    key = r.get(t, "server.tls", "key", "", as_text, "a PEM private key path")
    ca = r.get(t, "server.tls", "clientCa", None, as_text, "a PEM CA bundle path")
    paths = {"cert": cert, "key": key, "clientCa": ca}
    for name, value in paths.items():
        if name != "clientCa" and not value:
            r.errors.append(f"server.tls.{name}: required when server.tls is set")
        elif value and not resolve(base, value).is_file():
            r.errors.append(f"server.tls.{name}: file not found: {resolve(base, value)}")
    if not cert or not key:
        return None
    return TlsConfig(resolve(base, cert), resolve(base, key),
                     resolve(base, ca) if ca else None)


def parse_auth(r: Reader, raw: Any) -> AuthConfig:
    a = r.section(raw, "auth", {"tokenSha256", "allowUnauthenticated"})
    return AuthConfig(
        token_sha256=tuple(r.get(a, "auth", "tokenSha256", [], _digests,
                                 "a list of 64-character hex SHA-256 digests "
                                 "(backupctl token new prints one)")),
        allow_unauthenticated=r.get(a, "auth", "allowUnauthenticated", False, as_bool,
                                    "true or false"),
    )


def parse_metrics(r: Reader, raw: Any) -> MetricsConfig:
    m = r.section(raw, "metrics", {"enabled", "address"})
    return MetricsConfig(
        enabled=r.get(m, "metrics", "enabled", True, as_bool, "true or false"),
        address=r.get(m, "metrics", "address", "127.0.0.1:9090", as_address, "HOST:PORT"))


def parse_alerts(r: Reader, raw: Any) -> AlertsConfig:
    al = r.section(raw, "alerts", {"maxAge", "checkInterval"})
    return AlertsConfig(
        max_age_seconds=r.get(al, "alerts", "maxAge", None, parse_duration,
                              'a duration such as "26h"'),
        check_interval_seconds=r.get(al, "alerts", "checkInterval", 60.0, parse_duration,
                                     'a duration such as "1m"'))


def parse_notifications(r: Reader, raw: Any) -> tuple[NotificationConfig, ...]:
    """``notifications:``: webhook, Slack and e-mail channels."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        r.errors.append(f"notifications: expected a list of channels, got {show(raw)}")
        return ()
    out = []
    for i, entry in enumerate(raw):
        path = f"notifications[{i}]"
        e = r.section(entry, path, {"type", "events", "url", "secretEnv", "retries", "timeout",
                                    "host", "port", "security", "from", "to", "usernameEnv",
                                    "passwordEnv"})
        kind = r.get(e, path, "type", "", choice(CHANNELS), "webhook, slack or email")
        if not kind:
            r.errors.append(f"{path}.type: required (webhook, slack or email)")
            continue
        common: dict[str, Any] = dict(
            type=kind,
            events=r.get(e, path, "events", frozenset({"failure", "stale",
                                                       "verification_failed"}),
                         _event_set, f"a non-empty list of: {', '.join(EVENTS)}"),
            retries=r.get(e, path, "retries", 3, int_range(0, 20), "an integer from 0 to 20"),
            timeout_seconds=r.get(e, path, "timeout", 10.0, parse_duration,
                                  'a duration such as "10s"'),
        )
        if kind in ("webhook", "slack"):
            url = r.get(e, path, "url", "", _http_url, "an http:// or https:// URL")
            if not url:
                r.errors.append(f"{path}.url: required for a {kind} channel")
            out.append(NotificationConfig(
                url=url, secret_env=r.get(e, path, "secretEnv", "", as_text,
                                          "an environment variable name"), **common))
        else:
            host = r.get(e, path, "host", "", as_text, "an SMTP host name")
            no_one: tuple[str, ...] = ()
            to = r.get(e, path, "to", no_one, _emails, "a list of e-mail addresses")
            sender = r.get(e, path, "from", "", as_text, "an e-mail address")
            for key, value in (("host", host), ("to", to), ("from", sender)):
                if not value:
                    r.errors.append(f"{path}.{key}: required for an email channel")
            security = r.get(e, path, "security", "starttls",
                             choice(("starttls", "tls", "none")), "starttls, tls or none")
            out.append(NotificationConfig(
                smtp_host=host, smtp_port=r.get(e, path, "port", 0, int_range(0, 65535),
                                                "a port number"),
                smtp_security=security, mail_from=sender, mail_to=to,
                username_env=r.get(e, path, "usernameEnv", "", as_text, "a variable name"),
                password_env=r.get(e, path, "passwordEnv", "", as_text, "a variable name"),
                **common))
    return tuple(out)


def _digests(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise ValueError
    out = []
    for item in value:
        if not isinstance(item, str) or not _HEX64.match(item.strip().lower()):
            raise ValueError
        out.append(item.strip().lower())
    return out


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
    text = as_text(value)
    if not text.startswith(("http://", "https://")):
        raise ValueError
    return text
