"""Settings: ``config.yaml`` parsed once into frozen, validated models.

Every problem names the key's path and what was expected, e.g.
``backup.retentionDays: expected an integer >= 1, got "thirty"``; all problems
are collected and raised together as one :class:`ConfigError`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..domain.errors import ConfigError
from ..domain.models import DumpFormat
from .cluster import cluster_problems
from .destinations import DestinationConfig, destination_problems
from .errors import messages
from .fields import parse_duration
from .model import Settings
from .sections import BackupConfig, NotificationConfig
from .targets import ScheduleConfig, TargetConfig

__all__ = ["BackupConfig", "ConfigError", "DestinationConfig", "NotificationConfig",
           "ScheduleConfig", "Settings", "TargetConfig", "build_settings", "load_settings",
           "parse_duration"]


def load_settings(path: str | Path | None, env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate ``path`` (None: defaults only). Relative paths are resolved
    against the config file's directory."""
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
    return build_settings(raw, base=base, env=env, source=Path(path) if path else None)


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


def build_settings(raw: Any, *, base: Path, env: Mapping[str, str],
                   source: Path | None = None) -> Settings:
    """Validate the parsed YAML ``raw``; ConfigError listing every problem."""
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid configuration:\n  the file must hold a mapping of "
                          f"sections, got {type(raw).__name__}")
    raw = _with_environment(raw, env)
    problems = _shape_problems(raw)
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(raw, context={"base": base, "env": env},
                                           by_alias=True,
                                           by_name=False)
    except ValidationError as exc:
        problems = messages(exc, Settings) + problems
    if settings is not None and not problems:
        problems = _name_problems(settings) + cluster_problems(settings.cluster,
                                                               settings.store.url)
    if problems or settings is None:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    settings._source = source
    settings._env = env
    return settings


def _with_environment(raw: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """``DATABASE_URL`` overrides ``database.url`` (not a ``databases:`` list)."""
    url = env.get("DATABASE_URL")
    if not url or "databases" in raw:
        return raw
    section = raw.get("database")
    if section is None:
        return {**raw, "database": {"url": url}}
    if isinstance(section, dict):
        return {**raw, "database": {**section, "url": url}}
    return raw


def _shape_problems(raw: dict[str, Any]) -> list[str]:
    """Rules across sections, checked on the raw file so they are reported together
    with every other problem."""
    problems = []
    if "databases" in raw and "database" in raw:
        problems.append("database: use either database: (one) or databases: (a list), "
                        "not both")
    elif raw.get("databases") is None and raw.get("database") is None:
        problems.append("database.url: required; set it in config.yaml or the DATABASE_URL "
                        "environment variable (postgresql://user@host:5432/dbname), or list "
                        "databases:")
    if raw.get("databases") is not None and "schedules" in raw:
        problems.append("schedules: with databases:, put each schedule under "
                        "databases[i].schedules")
    return problems


def _name_problems(settings: Settings) -> list[str]:
    problems = []
    seen: set[str] = set()
    for i, target in enumerate(settings.databases or ()):
        if target.name in seen:
            problems.append(f'databases[{i}].name: "{target.name}" is used twice; give each '
                            "target a unique name")
        seen.add(target.name)
        if target.retention_days and target.retention and target.retention.days is not None:
            problems.append(f"databases[{i}].retentionDays: retention.days is set too; "
                            "keep retention.days only")
    if settings.databases is None and any(s.type != "BACKUP_TYPE_UNSPECIFIED"
                                          for s in settings.top_schedules or ()):
        problems.append("schedules: type (full or incremental) needs a physical target: list "
                        "it under databases: with kind: physical")
    names = [s.name for s in settings.schedules]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f'schedules: the name "{dup}" is used twice; names must be unique')
    problems += destination_problems(
        settings.destinations, tuple((t.name, t.destinations) for t in settings.databases or ()))
    if not problems:
        problems += _format_problems(settings)
    return problems


def _format_problems(settings: Settings) -> list[str]:
    """The directory format is a tree of files: stored only in local directories, and
    never encrypted."""
    if settings.backup.format is not DumpFormat.DIRECTORY:
        return []
    problems = []
    remote = sorted({d.name for t in settings.targets for d in settings.destinations_of(t)
                     if not d.is_local})
    if remote:
        problems.append(f"backup.format: directory backups can only be stored in local "
                        f"directories, but destination(s) {', '.join(remote)} are object "
                        "stores; use format: custom (parallel restore, selective restore) "
                        "or plain")
    if settings.encryption is not None:
        problems.append("backup.format: directory backups cannot be encrypted (age encrypts "
                        "one stream, a directory is many files); use format: custom "
                        "(parallel restore, selective restore) or plain")
    return problems
