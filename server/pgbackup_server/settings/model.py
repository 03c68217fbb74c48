"""The settings: ``config.yaml`` as frozen, validated pydantic models.

Keys are camelCase in YAML and snake_case in code. Each default is written once,
in the section's model (:mod:`.targets`, :mod:`.sections`). Unknown keys, wrong
types and values out of range are refused with the key's path (:mod:`.errors`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import PrivateAttr, field_validator

from ..postgres.conninfo import ConnInfo
from .cluster import ClusterConfig
from .destinations import DestinationConfig, local_destination
from .encryption import EncryptionConfig
from .fields import Section, problem, setting
from .sections import (
    AlertsConfig,
    AuthConfig,
    BackupConfig,
    LogConfig,
    MetricsConfig,
    NotificationConfig,
    SchedulerConfig,
    ServerConfig,
    StoreConfig,
)
from .targets import DatabaseConfig, ScheduleConfig, ScheduleSection, TargetConfig

__all__ = ["Settings"]


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
    cluster: ClusterConfig = setting({}, expected="a mapping", validate_default=True)
    notifications: tuple[NotificationConfig, ...] = setting(
        (), expected="a list of channels")
    encryption: EncryptionConfig | None = setting(
        None, expected="a mapping with recipients (age1… public keys)")
    # Not Optional: a union would echo the raw entries (secrets misplaced in the
    # file included) in its error for the None branch.
    destination_list: tuple[DestinationConfig, ...] = setting(
        (), alias="destinations", expected="a non-empty list of destinations")
    _source: Path | None = PrivateAttr(None)
    _env: Mapping[str, str] | None = PrivateAttr(None)

    @field_validator("destination_list", mode="before")
    @classmethod
    def _destinations(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple) or not value:
            raise problem("expected a non-empty list of destinations, each with a name and "
                          "a url; leave destinations: out to store in backup.directory")
        return value

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
    def destinations(self) -> tuple[DestinationConfig, ...]:
        """Where backups are stored: ``destinations:``, or ``backup.directory`` as the
        single destination named ``local``."""
        if self.destination_list:
            return self.destination_list
        return (local_destination(self.backup.directory),)

    def destinations_of(self, target: TargetConfig) -> tuple[DestinationConfig, ...]:
        """The destinations ``target`` stores its backups in (all when it names none)."""
        if target.destinations is None:
            return self.destinations
        return tuple(d for d in self.destinations if d.name in target.destinations)

    @cached_property
    def schedules(self) -> tuple[ScheduleConfig, ...]:
        """Every schedule, named (``schedule-N`` or ``<target>-N`` by default), with its
        target."""
        out: list[ScheduleConfig] = []
        if self.databases is None:
            for i, s in enumerate(self.top_schedules or ()):
                out.append(ScheduleConfig(s.name or f"schedule-{i}", s.cron, s.job, s.enabled,
                                          self.targets[0].name, s.type))
        for t in self.databases or ():
            for i, s in enumerate(t.schedules):
                out.append(ScheduleConfig(s.name or f"{t.name}-{i}", s.cron, s.job, s.enabled,
                                          t.name, s.type))
        return tuple(out)

    @property
    def store_url(self) -> str:
        return self.store.url or f"sqlite:///{self.server.data_directory / 'backupd.sqlite3'}"

    @property
    def environment(self) -> Mapping[str, str]:
        """The environment the settings were read with (the credentials that
        ``destinations[].credentials`` names are read from it)."""
        return os.environ if self._env is None else self._env

    @property
    def source(self) -> Path | None:
        """The config file these settings came from (None: defaults only)."""
        return self._source
