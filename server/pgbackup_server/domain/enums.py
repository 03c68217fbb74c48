"""The explicit types of the domain: run kinds and states, formats, triggers,
verification results, alert and notification kinds. ``domain.models`` re-exports them."""

from __future__ import annotations

import enum


class RunStatus(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    @property
    def finished(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.FAILED)


class RunKind(enum.StrEnum):
    """What a run backs up."""

    DATABASE = "DATABASE"  # one database, with pg_dump
    GLOBALS = "GLOBALS"  # a server's roles and tablespaces, with pg_dumpall --globals-only
    PHYSICAL_FULL = "PHYSICAL_FULL"  # the whole cluster, with pg_basebackup
    PHYSICAL_INCREMENTAL = "PHYSICAL_INCREMENTAL"  # pg_basebackup --incremental=<parent>

    @property
    def physical(self) -> bool:
        return self in (RunKind.PHYSICAL_FULL, RunKind.PHYSICAL_INCREMENTAL)


class TargetKind(enum.StrEnum):
    """``databases[].kind``: how a target is backed up."""

    LOGICAL = "logical"  # pg_dump of a database
    PHYSICAL = "physical"  # pg_basebackup of the whole cluster (replication connection)


class BackupType(enum.StrEnum):
    """What a physical backup request asks for (schedules' and the API's ``type``)."""

    UNSPECIFIED = "BACKUP_TYPE_UNSPECIFIED"  # the proto's name; full for a physical target
    FULL = "FULL"
    INCREMENTAL = "INCREMENTAL"


class Trigger(enum.StrEnum):
    SCHEDULE = "SCHEDULE"
    MANUAL = "MANUAL"


class FileState(enum.StrEnum):
    """What became of a run's file after the run."""

    NONE = "NONE"  # the run produced no file (not finished, or failed)
    PRESENT = "PRESENT"
    DELETED = "DELETED"  # removed by retention
    MISSING = "MISSING"  # gone from disk without the service removing it


class Verification(enum.StrEnum):
    """Outcome of the last verification of a backup."""

    NONE = ""  # never verified
    OK = "OK"
    FAILED = "FAILED"


class DumpFormat(enum.StrEnum):
    PLAIN = "plain"  # SQL, .sql (.sql.zst, .sql.gz)
    CUSTOM = "custom"  # pg_restore archive, .dump
    DIRECTORY = "directory"  # pg_restore archive as a folder, .dir


class CompressionMethod(enum.StrEnum):
    NONE = "none"
    GZIP = "gzip"
    LZ4 = "lz4"
    ZSTD = "zstd"

    @property
    def levels(self) -> tuple[int, int]:
        """The levels this method takes (none: only 0)."""
        return {"none": (0, 0), "gzip": (1, 9), "lz4": (1, 12), "zstd": (1, 19)}[self.value]

    @property
    def default_level(self) -> int:
        return {"none": 0, "gzip": 6, "lz4": 1, "zstd": 1}[self.value]


class ChannelType(enum.StrEnum):
    """A notification channel."""

    WEBHOOK = "webhook"
    SLACK = "slack"
    EMAIL = "email"


class NotifyEvent(enum.StrEnum):
    """What a notification channel can subscribe to."""

    FAILURE = "failure"
    SUCCESS = "success"
    STALE = "stale"
    VERIFICATION_FAILED = "verification_failed"
    CLEANUP = "cleanup"


class AlertKind(enum.StrEnum):
    STALE = "stale"
    MISSED_SCHEDULE = "missed_schedule"
    VERIFICATION_FAILED = "verification_failed"
    COPY_FAILED = "copy_failed"  # a backup's copy at a destination failed
    WAL_ARCHIVING = "wal_archiving"  # a physical target's WAL archiving stopped or lags
    REPLICA_SILENT = "replica_silent"  # a cluster replica stopped heartbeating


class VerifyMode(enum.StrEnum):
    """``backup.verify``: what is checked after each scheduled backup."""

    NONE = "none"
    QUICK = "quick"
    DEEP = "deep"


class CopyState(enum.StrEnum):
    """Where one copy of a backup stands at one destination."""

    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
