"""What to back up: ``database:`` or ``databases:`` targets, with their schedules."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pydantic import StrictBool, StrictInt, field_validator, model_validator

from ..domain.models import BackupType, TargetKind
from ..postgres.conninfo import ConnInfo, ConnInfoError
from .fields import Duration, Section, Text, problem, setting
from .retention import RetentionConfig

_TARGET_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,63}$")
JOB_NAMES = ("DatabaseBackup",)


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
    type: BackupType = setting(BackupType.UNSPECIFIED, expected="full or incremental")

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lower() in ("full", "incremental"):
            return BackupType(value.upper())
        raise ValueError("not a backup type")

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
    type: BackupType = BackupType.UNSPECIFIED


class WalConfig(Section):
    """``databases[].wal``: continuous WAL archiving of a physical target."""

    stream: StrictBool = setting(False, expected="true or false")
    max_lag_seconds: Duration = setting(300.0, alias="maxLag",
                                        expected='a duration such as "5m"')
    # What a point-in-time restore's restore_command runs (then "wal-fetch ..."):
    # the restored server's OS user must be able to run it. Default: this Python.
    fetch_command: Text | None = setting(None, alias="fetchCommand",
                                         expected='a command such as "backupctl"')


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
    destinations: tuple[Text, ...] | None = setting(
        None, expected="a list of destination names", min_length=1)
    retention: RetentionConfig | None = setting(None, expected="a mapping of retention "
                                                "rules (days, keepDaily, ...)")

    kind: TargetKind = setting(TargetKind.LOGICAL, expected="logical or physical")
    wal: WalConfig | None = setting(None, expected="a mapping such as {stream: true}")

    @model_validator(mode="after")
    def _physical(self) -> TargetConfig:
        """Physical-only keys on a logical target, and allDatabases on a physical one
        (it is the whole cluster already), are refused with the fix."""
        if self.kind is TargetKind.PHYSICAL and self.all_databases:
            raise problem("allDatabases: a physical target backs up the whole cluster "
                          "already; remove allDatabases or set kind: logical")
        if self.kind is TargetKind.LOGICAL:
            if self.wal is not None:
                raise problem("wal: WAL archiving needs kind: physical on this target")
            typed = [s.name or str(i) for i, s in enumerate(self.schedules)
                     if s.type is not BackupType.UNSPECIFIED]
            if typed:
                raise problem(f"schedules: type (full or incremental) needs kind: physical "
                              f"on this target (schedule {typed[0]})")
        return self

    @property
    def physical(self) -> bool:
        return self.kind is TargetKind.PHYSICAL

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
