import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BackupStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BACKUP_STATUS_UNSPECIFIED: _ClassVar[BackupStatus]
    PENDING: _ClassVar[BackupStatus]
    RUNNING: _ClassVar[BackupStatus]
    SUCCEEDED: _ClassVar[BackupStatus]
    FAILED: _ClassVar[BackupStatus]

class RunKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_KIND_UNSPECIFIED: _ClassVar[RunKind]
    DATABASE: _ClassVar[RunKind]
    GLOBALS: _ClassVar[RunKind]
    PHYSICAL_FULL: _ClassVar[RunKind]
    PHYSICAL_INCREMENTAL: _ClassVar[RunKind]

class Trigger(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRIGGER_UNSPECIFIED: _ClassVar[Trigger]
    SCHEDULE: _ClassVar[Trigger]
    MANUAL: _ClassVar[Trigger]

class AlertKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALERT_KIND_UNSPECIFIED: _ClassVar[AlertKind]
    STALE: _ClassVar[AlertKind]
    MISSED_SCHEDULE: _ClassVar[AlertKind]
    VERIFICATION_FAILED: _ClassVar[AlertKind]
    COPY_FAILED: _ClassVar[AlertKind]

class BackupType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BACKUP_TYPE_UNSPECIFIED: _ClassVar[BackupType]
    FULL: _ClassVar[BackupType]
    INCREMENTAL: _ClassVar[BackupType]
BACKUP_STATUS_UNSPECIFIED: BackupStatus
PENDING: BackupStatus
RUNNING: BackupStatus
SUCCEEDED: BackupStatus
FAILED: BackupStatus
RUN_KIND_UNSPECIFIED: RunKind
DATABASE: RunKind
GLOBALS: RunKind
PHYSICAL_FULL: RunKind
PHYSICAL_INCREMENTAL: RunKind
TRIGGER_UNSPECIFIED: Trigger
SCHEDULE: Trigger
MANUAL: Trigger
ALERT_KIND_UNSPECIFIED: AlertKind
STALE: AlertKind
MISSED_SCHEDULE: AlertKind
VERIFICATION_FAILED: AlertKind
COPY_FAILED: AlertKind
BACKUP_TYPE_UNSPECIFIED: BackupType
FULL: BackupType
INCREMENTAL: BackupType

class Backup(_message.Message):
    __slots__ = ("id", "database", "status", "trigger", "file_path", "size_bytes", "sha256", "started_at", "finished_at", "duration_seconds", "error", "schedule", "backup_dir", "format", "compression", "pg_dump_version", "server_version", "file_deleted", "file_missing", "queued_at", "bytes_written", "estimated_total_bytes", "verification", "verification_reason", "verified_at", "kind", "target", "parent_id", "type_reason", "start_lsn", "end_lsn", "timeline", "chain", "copies", "plaintext_sha256", "encryption", "node")
    ID_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    BACKUP_DIR_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    PG_DUMP_VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    FILE_DELETED_FIELD_NUMBER: _ClassVar[int]
    FILE_MISSING_FIELD_NUMBER: _ClassVar[int]
    QUEUED_AT_FIELD_NUMBER: _ClassVar[int]
    BYTES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_REASON_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_AT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_REASON_FIELD_NUMBER: _ClassVar[int]
    START_LSN_FIELD_NUMBER: _ClassVar[int]
    END_LSN_FIELD_NUMBER: _ClassVar[int]
    TIMELINE_FIELD_NUMBER: _ClassVar[int]
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    COPIES_FIELD_NUMBER: _ClassVar[int]
    PLAINTEXT_SHA256_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    id: int
    database: str
    status: BackupStatus
    trigger: Trigger
    file_path: str
    size_bytes: int
    sha256: str
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    duration_seconds: float
    error: str
    schedule: str
    backup_dir: str
    format: str
    compression: str
    pg_dump_version: str
    server_version: str
    file_deleted: bool
    file_missing: bool
    queued_at: _timestamp_pb2.Timestamp
    bytes_written: int
    estimated_total_bytes: int
    verification: str
    verification_reason: str
    verified_at: _timestamp_pb2.Timestamp
    kind: RunKind
    target: str
    parent_id: int
    type_reason: str
    start_lsn: str
    end_lsn: str
    timeline: int
    chain: str
    copies: _containers.RepeatedCompositeFieldContainer[BackupCopy]
    plaintext_sha256: str
    encryption: _containers.RepeatedScalarFieldContainer[str]
    node: str
    def __init__(self, id: _Optional[int] = ..., database: _Optional[str] = ..., status: _Optional[_Union[BackupStatus, str]] = ..., trigger: _Optional[_Union[Trigger, str]] = ..., file_path: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration_seconds: _Optional[float] = ..., error: _Optional[str] = ..., schedule: _Optional[str] = ..., backup_dir: _Optional[str] = ..., format: _Optional[str] = ..., compression: _Optional[str] = ..., pg_dump_version: _Optional[str] = ..., server_version: _Optional[str] = ..., file_deleted: _Optional[bool] = ..., file_missing: _Optional[bool] = ..., queued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., bytes_written: _Optional[int] = ..., estimated_total_bytes: _Optional[int] = ..., verification: _Optional[str] = ..., verification_reason: _Optional[str] = ..., verified_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[_Union[RunKind, str]] = ..., target: _Optional[str] = ..., parent_id: _Optional[int] = ..., type_reason: _Optional[str] = ..., start_lsn: _Optional[str] = ..., end_lsn: _Optional[str] = ..., timeline: _Optional[int] = ..., chain: _Optional[str] = ..., copies: _Optional[_Iterable[_Union[BackupCopy, _Mapping]]] = ..., plaintext_sha256: _Optional[str] = ..., encryption: _Optional[_Iterable[str]] = ..., node: _Optional[str] = ...) -> None: ...

class CreateBackupRequest(_message.Message):
    __slots__ = ("background", "database", "type")
    BACKGROUND_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    background: bool
    database: str
    type: BackupType
    def __init__(self, background: _Optional[bool] = ..., database: _Optional[str] = ..., type: _Optional[_Union[BackupType, str]] = ...) -> None: ...

class CreateCustomBackupRequest(_message.Message):
    __slots__ = ("backup_dir", "retention_days", "cleanup_old", "background", "database")
    BACKUP_DIR_FIELD_NUMBER: _ClassVar[int]
    RETENTION_DAYS_FIELD_NUMBER: _ClassVar[int]
    CLEANUP_OLD_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    backup_dir: str
    retention_days: int
    cleanup_old: bool
    background: bool
    database: str
    def __init__(self, backup_dir: _Optional[str] = ..., retention_days: _Optional[int] = ..., cleanup_old: _Optional[bool] = ..., background: _Optional[bool] = ..., database: _Optional[str] = ...) -> None: ...

class CreateBackupResponse(_message.Message):
    __slots__ = ("backup", "deleted_files", "backups")
    BACKUP_FIELD_NUMBER: _ClassVar[int]
    DELETED_FILES_FIELD_NUMBER: _ClassVar[int]
    BACKUPS_FIELD_NUMBER: _ClassVar[int]
    backup: Backup
    deleted_files: int
    backups: _containers.RepeatedCompositeFieldContainer[Backup]
    def __init__(self, backup: _Optional[_Union[Backup, _Mapping]] = ..., deleted_files: _Optional[int] = ..., backups: _Optional[_Iterable[_Union[Backup, _Mapping]]] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ("database",)
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    database: str
    def __init__(self, database: _Optional[str] = ...) -> None: ...

class DatabaseStats(_message.Message):
    __slots__ = ("database", "total_backups", "total_size_bytes", "newest_backup", "last_success", "last_failure")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BACKUPS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    NEWEST_BACKUP_FIELD_NUMBER: _ClassVar[int]
    LAST_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    LAST_FAILURE_FIELD_NUMBER: _ClassVar[int]
    database: str
    total_backups: int
    total_size_bytes: int
    newest_backup: _timestamp_pb2.Timestamp
    last_success: RunSummary
    last_failure: RunSummary
    def __init__(self, database: _Optional[str] = ..., total_backups: _Optional[int] = ..., total_size_bytes: _Optional[int] = ..., newest_backup: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_success: _Optional[_Union[RunSummary, _Mapping]] = ..., last_failure: _Optional[_Union[RunSummary, _Mapping]] = ...) -> None: ...

class RunSummary(_message.Message):
    __slots__ = ("id", "time", "file_path", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: int
    time: _timestamp_pb2.Timestamp
    file_path: str
    error: str
    def __init__(self, id: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., file_path: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("total_backups", "total_size_bytes", "oldest_backup", "newest_backup", "backup_directory", "succeeded_runs", "failed_runs", "running_runs", "last_success", "last_failure", "verified_backups", "verification_failures", "databases", "targets", "wal", "destinations")
    TOTAL_BACKUPS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    OLDEST_BACKUP_FIELD_NUMBER: _ClassVar[int]
    NEWEST_BACKUP_FIELD_NUMBER: _ClassVar[int]
    BACKUP_DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_RUNS_FIELD_NUMBER: _ClassVar[int]
    FAILED_RUNS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_RUNS_FIELD_NUMBER: _ClassVar[int]
    LAST_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    LAST_FAILURE_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_BACKUPS_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_FAILURES_FIELD_NUMBER: _ClassVar[int]
    DATABASES_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    WAL_FIELD_NUMBER: _ClassVar[int]
    DESTINATIONS_FIELD_NUMBER: _ClassVar[int]
    total_backups: int
    total_size_bytes: int
    oldest_backup: _timestamp_pb2.Timestamp
    newest_backup: _timestamp_pb2.Timestamp
    backup_directory: str
    succeeded_runs: int
    failed_runs: int
    running_runs: int
    last_success: RunSummary
    last_failure: RunSummary
    verified_backups: int
    verification_failures: int
    databases: _containers.RepeatedCompositeFieldContainer[DatabaseStats]
    targets: _containers.RepeatedCompositeFieldContainer[TargetSummary]
    wal: _containers.RepeatedCompositeFieldContainer[WalArchive]
    destinations: _containers.RepeatedCompositeFieldContainer[DestinationStats]
    def __init__(self, total_backups: _Optional[int] = ..., total_size_bytes: _Optional[int] = ..., oldest_backup: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., newest_backup: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., backup_directory: _Optional[str] = ..., succeeded_runs: _Optional[int] = ..., failed_runs: _Optional[int] = ..., running_runs: _Optional[int] = ..., last_success: _Optional[_Union[RunSummary, _Mapping]] = ..., last_failure: _Optional[_Union[RunSummary, _Mapping]] = ..., verified_backups: _Optional[int] = ..., verification_failures: _Optional[int] = ..., databases: _Optional[_Iterable[_Union[DatabaseStats, _Mapping]]] = ..., targets: _Optional[_Iterable[_Union[TargetSummary, _Mapping]]] = ..., wal: _Optional[_Iterable[_Union[WalArchive, _Mapping]]] = ..., destinations: _Optional[_Iterable[_Union[DestinationStats, _Mapping]]] = ...) -> None: ...

class CleanupRequest(_message.Message):
    __slots__ = ("dry_run",)
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    dry_run: bool
    def __init__(self, dry_run: _Optional[bool] = ...) -> None: ...

class CleanupResponse(_message.Message):
    __slots__ = ("deleted_files", "freed_bytes", "dry_run", "files", "decisions")
    DELETED_FILES_FIELD_NUMBER: _ClassVar[int]
    FREED_BYTES_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    deleted_files: int
    freed_bytes: int
    dry_run: bool
    files: _containers.RepeatedScalarFieldContainer[str]
    decisions: _containers.RepeatedCompositeFieldContainer[CleanupDecision]
    def __init__(self, deleted_files: _Optional[int] = ..., freed_bytes: _Optional[int] = ..., dry_run: _Optional[bool] = ..., files: _Optional[_Iterable[str]] = ..., decisions: _Optional[_Iterable[_Union[CleanupDecision, _Mapping]]] = ...) -> None: ...

class ListBackupsRequest(_message.Message):
    __slots__ = ("database", "status", "page_size", "page_token", "trigger")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    database: str
    status: BackupStatus
    page_size: int
    page_token: str
    trigger: Trigger
    def __init__(self, database: _Optional[str] = ..., status: _Optional[_Union[BackupStatus, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., trigger: _Optional[_Union[Trigger, str]] = ...) -> None: ...

class ListBackupsResponse(_message.Message):
    __slots__ = ("backups", "next_page_token")
    BACKUPS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    backups: _containers.RepeatedCompositeFieldContainer[Backup]
    next_page_token: str
    def __init__(self, backups: _Optional[_Iterable[_Union[Backup, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetBackupRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class ListSchedulesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Schedule(_message.Message):
    __slots__ = ("name", "cron", "timezone", "enabled", "job", "next_run_time", "target", "last_run", "type")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CRON_FIELD_NUMBER: _ClassVar[int]
    TIMEZONE_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    NEXT_RUN_TIME_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    LAST_RUN_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    cron: str
    timezone: str
    enabled: bool
    job: str
    next_run_time: _timestamp_pb2.Timestamp
    target: str
    last_run: Backup
    type: BackupType
    def __init__(self, name: _Optional[str] = ..., cron: _Optional[str] = ..., timezone: _Optional[str] = ..., enabled: _Optional[bool] = ..., job: _Optional[str] = ..., next_run_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., target: _Optional[str] = ..., last_run: _Optional[_Union[Backup, _Mapping]] = ..., type: _Optional[_Union[BackupType, str]] = ...) -> None: ...

class ListSchedulesResponse(_message.Message):
    __slots__ = ("schedules",)
    SCHEDULES_FIELD_NUMBER: _ClassVar[int]
    schedules: _containers.RepeatedCompositeFieldContainer[Schedule]
    def __init__(self, schedules: _Optional[_Iterable[_Union[Schedule, _Mapping]]] = ...) -> None: ...

class WatchBackupRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class BackupProgress(_message.Message):
    __slots__ = ("id", "status", "bytes_written", "estimated_total_bytes", "elapsed_seconds", "bytes_per_second", "backup")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    BYTES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    BACKUP_FIELD_NUMBER: _ClassVar[int]
    id: int
    status: BackupStatus
    bytes_written: int
    estimated_total_bytes: int
    elapsed_seconds: float
    bytes_per_second: float
    backup: Backup
    def __init__(self, id: _Optional[int] = ..., status: _Optional[_Union[BackupStatus, str]] = ..., bytes_written: _Optional[int] = ..., estimated_total_bytes: _Optional[int] = ..., elapsed_seconds: _Optional[float] = ..., bytes_per_second: _Optional[float] = ..., backup: _Optional[_Union[Backup, _Mapping]] = ...) -> None: ...

class VerifyBackupRequest(_message.Message):
    __slots__ = ("id", "deep", "identity")
    ID_FIELD_NUMBER: _ClassVar[int]
    DEEP_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    id: int
    deep: bool
    identity: str
    def __init__(self, id: _Optional[int] = ..., deep: _Optional[bool] = ..., identity: _Optional[str] = ...) -> None: ...

class TableRows(_message.Message):
    __slots__ = ("schema", "table", "rows")
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    schema: str
    table: str
    rows: int
    def __init__(self, schema: _Optional[str] = ..., table: _Optional[str] = ..., rows: _Optional[int] = ...) -> None: ...

class VerifyBackupResponse(_message.Message):
    __slots__ = ("verification", "reason", "deep", "verified_at", "tables", "duration_seconds")
    VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DEEP_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_AT_FIELD_NUMBER: _ClassVar[int]
    TABLES_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    verification: str
    reason: str
    deep: bool
    verified_at: _timestamp_pb2.Timestamp
    tables: _containers.RepeatedCompositeFieldContainer[TableRows]
    duration_seconds: float
    def __init__(self, verification: _Optional[str] = ..., reason: _Optional[str] = ..., deep: _Optional[bool] = ..., verified_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tables: _Optional[_Iterable[_Union[TableRows, _Mapping]]] = ..., duration_seconds: _Optional[float] = ...) -> None: ...

class RestoreBackupRequest(_message.Message):
    __slots__ = ("id", "target_database", "overwrite", "schemas", "tables", "jobs", "background", "force", "identity", "target_directory", "target_time", "target_lsn", "tablespace_mapping")
    ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_DATABASE_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    SCHEMAS_FIELD_NUMBER: _ClassVar[int]
    TABLES_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    TARGET_DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    TARGET_TIME_FIELD_NUMBER: _ClassVar[int]
    TARGET_LSN_FIELD_NUMBER: _ClassVar[int]
    TABLESPACE_MAPPING_FIELD_NUMBER: _ClassVar[int]
    id: int
    target_database: str
    overwrite: bool
    schemas: _containers.RepeatedScalarFieldContainer[str]
    tables: _containers.RepeatedScalarFieldContainer[str]
    jobs: int
    background: bool
    force: bool
    identity: str
    target_directory: str
    target_time: _timestamp_pb2.Timestamp
    target_lsn: str
    tablespace_mapping: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[int] = ..., target_database: _Optional[str] = ..., overwrite: _Optional[bool] = ..., schemas: _Optional[_Iterable[str]] = ..., tables: _Optional[_Iterable[str]] = ..., jobs: _Optional[int] = ..., background: _Optional[bool] = ..., force: _Optional[bool] = ..., identity: _Optional[str] = ..., target_directory: _Optional[str] = ..., target_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., target_lsn: _Optional[str] = ..., tablespace_mapping: _Optional[_Iterable[str]] = ...) -> None: ...

class RestoreRun(_message.Message):
    __slots__ = ("id", "backup_id", "target_database", "status", "started_at", "finished_at", "duration_seconds", "error", "requested_by", "schemas", "tables")
    ID_FIELD_NUMBER: _ClassVar[int]
    BACKUP_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_DATABASE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_BY_FIELD_NUMBER: _ClassVar[int]
    SCHEMAS_FIELD_NUMBER: _ClassVar[int]
    TABLES_FIELD_NUMBER: _ClassVar[int]
    id: int
    backup_id: int
    target_database: str
    status: BackupStatus
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    duration_seconds: float
    error: str
    requested_by: str
    schemas: _containers.RepeatedScalarFieldContainer[str]
    tables: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[int] = ..., backup_id: _Optional[int] = ..., target_database: _Optional[str] = ..., status: _Optional[_Union[BackupStatus, str]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration_seconds: _Optional[float] = ..., error: _Optional[str] = ..., requested_by: _Optional[str] = ..., schemas: _Optional[_Iterable[str]] = ..., tables: _Optional[_Iterable[str]] = ...) -> None: ...

class GetRestoreRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class ListBackupContentsRequest(_message.Message):
    __slots__ = ("id", "identity")
    ID_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    id: int
    identity: str
    def __init__(self, id: _Optional[int] = ..., identity: _Optional[str] = ...) -> None: ...

class ContentEntry(_message.Message):
    __slots__ = ("schema", "name", "kind", "size_bytes")
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    schema: str
    name: str
    kind: str
    size_bytes: int
    def __init__(self, schema: _Optional[str] = ..., name: _Optional[str] = ..., kind: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class ListBackupContentsResponse(_message.Message):
    __slots__ = ("entries", "schemas")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    SCHEMAS_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[ContentEntry]
    schemas: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, entries: _Optional[_Iterable[_Union[ContentEntry, _Mapping]]] = ..., schemas: _Optional[_Iterable[str]] = ...) -> None: ...

class TargetSummary(_message.Message):
    __slots__ = ("name", "all_databases", "databases")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALL_DATABASES_FIELD_NUMBER: _ClassVar[int]
    DATABASES_FIELD_NUMBER: _ClassVar[int]
    name: str
    all_databases: bool
    databases: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., all_databases: _Optional[bool] = ..., databases: _Optional[_Iterable[str]] = ...) -> None: ...

class ListAlertsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Alert(_message.Message):
    __slots__ = ("kind", "subject", "since", "message", "database", "run_id")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    kind: AlertKind
    subject: str
    since: _timestamp_pb2.Timestamp
    message: str
    database: str
    run_id: int
    def __init__(self, kind: _Optional[_Union[AlertKind, str]] = ..., subject: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., message: _Optional[str] = ..., database: _Optional[str] = ..., run_id: _Optional[int] = ...) -> None: ...

class ListAlertsResponse(_message.Message):
    __slots__ = ("alerts",)
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    alerts: _containers.RepeatedCompositeFieldContainer[Alert]
    def __init__(self, alerts: _Optional[_Iterable[_Union[Alert, _Mapping]]] = ...) -> None: ...

class ListRestoresRequest(_message.Message):
    __slots__ = ("backup_id", "page_size", "page_token")
    BACKUP_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    backup_id: int
    page_size: int
    page_token: str
    def __init__(self, backup_id: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRestoresResponse(_message.Message):
    __slots__ = ("restores", "next_page_token")
    RESTORES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    restores: _containers.RepeatedCompositeFieldContainer[RestoreRun]
    next_page_token: str
    def __init__(self, restores: _Optional[_Iterable[_Union[RestoreRun, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ImportCatalogRequest(_message.Message):
    __slots__ = ("destination",)
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    destination: str
    def __init__(self, destination: _Optional[str] = ...) -> None: ...

class ImportCatalogResponse(_message.Message):
    __slots__ = ("destination", "imported", "skipped", "runs_created", "problems", "backup_ids")
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    IMPORTED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    RUNS_CREATED_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    BACKUP_IDS_FIELD_NUMBER: _ClassVar[int]
    destination: str
    imported: int
    skipped: int
    runs_created: int
    problems: _containers.RepeatedScalarFieldContainer[str]
    backup_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, destination: _Optional[str] = ..., imported: _Optional[int] = ..., skipped: _Optional[int] = ..., runs_created: _Optional[int] = ..., problems: _Optional[_Iterable[str]] = ..., backup_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class CleanupDecision(_message.Message):
    __slots__ = ("backup_id", "database", "destination", "location", "keep", "reasons")
    BACKUP_ID_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    KEEP_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    backup_id: int
    database: str
    destination: str
    location: str
    keep: bool
    reasons: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, backup_id: _Optional[int] = ..., database: _Optional[str] = ..., destination: _Optional[str] = ..., location: _Optional[str] = ..., keep: _Optional[bool] = ..., reasons: _Optional[_Iterable[str]] = ...) -> None: ...

class WalArchive(_message.Message):
    __slots__ = ("target", "streaming", "lag_bytes", "lag_seconds", "newest_restorable", "last_segment", "error", "slot", "segments", "size_bytes")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    STREAMING_FIELD_NUMBER: _ClassVar[int]
    LAG_BYTES_FIELD_NUMBER: _ClassVar[int]
    LAG_SECONDS_FIELD_NUMBER: _ClassVar[int]
    NEWEST_RESTORABLE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEGMENT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    target: str
    streaming: bool
    lag_bytes: int
    lag_seconds: float
    newest_restorable: _timestamp_pb2.Timestamp
    last_segment: str
    error: str
    slot: str
    segments: int
    size_bytes: int
    def __init__(self, target: _Optional[str] = ..., streaming: _Optional[bool] = ..., lag_bytes: _Optional[int] = ..., lag_seconds: _Optional[float] = ..., newest_restorable: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_segment: _Optional[str] = ..., error: _Optional[str] = ..., slot: _Optional[str] = ..., segments: _Optional[int] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class FetchWalRequest(_message.Message):
    __slots__ = ("target", "name")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    target: str
    name: str
    def __init__(self, target: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class WalChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class BackupCopy(_message.Message):
    __slots__ = ("destination", "state", "location", "size_bytes", "sha256", "error", "stored_at", "backup_id", "locked_until", "deleted")
    class CopyState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        COPY_STATE_UNSPECIFIED: _ClassVar[BackupCopy.CopyState]
        PENDING: _ClassVar[BackupCopy.CopyState]
        SUCCEEDED: _ClassVar[BackupCopy.CopyState]
        FAILED: _ClassVar[BackupCopy.CopyState]
    COPY_STATE_UNSPECIFIED: BackupCopy.CopyState
    PENDING: BackupCopy.CopyState
    SUCCEEDED: BackupCopy.CopyState
    FAILED: BackupCopy.CopyState
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STORED_AT_FIELD_NUMBER: _ClassVar[int]
    BACKUP_ID_FIELD_NUMBER: _ClassVar[int]
    LOCKED_UNTIL_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    destination: str
    state: BackupCopy.CopyState
    location: str
    size_bytes: int
    sha256: str
    error: str
    stored_at: _timestamp_pb2.Timestamp
    backup_id: int
    locked_until: _timestamp_pb2.Timestamp
    deleted: bool
    def __init__(self, destination: _Optional[str] = ..., state: _Optional[_Union[BackupCopy.CopyState, str]] = ..., location: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., error: _Optional[str] = ..., stored_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., backup_id: _Optional[int] = ..., locked_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deleted: _Optional[bool] = ...) -> None: ...

class DestinationStats(_message.Message):
    __slots__ = ("name", "copies", "used_bytes", "newest")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COPIES_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    NEWEST_FIELD_NUMBER: _ClassVar[int]
    name: str
    copies: int
    used_bytes: int
    newest: BackupCopy
    def __init__(self, name: _Optional[str] = ..., copies: _Optional[int] = ..., used_bytes: _Optional[int] = ..., newest: _Optional[_Union[BackupCopy, _Mapping]] = ...) -> None: ...

class CopyBackupRequest(_message.Message):
    __slots__ = ("id", "destinations")
    ID_FIELD_NUMBER: _ClassVar[int]
    DESTINATIONS_FIELD_NUMBER: _ClassVar[int]
    id: int
    destinations: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[int] = ..., destinations: _Optional[_Iterable[str]] = ...) -> None: ...

class ListDestinationsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Destination(_message.Message):
    __slots__ = ("name", "url", "required", "reachable", "error", "copies", "used_bytes", "newest")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    COPIES_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    NEWEST_FIELD_NUMBER: _ClassVar[int]
    name: str
    url: str
    required: bool
    reachable: bool
    error: str
    copies: int
    used_bytes: int
    newest: BackupCopy
    def __init__(self, name: _Optional[str] = ..., url: _Optional[str] = ..., required: _Optional[bool] = ..., reachable: _Optional[bool] = ..., error: _Optional[str] = ..., copies: _Optional[int] = ..., used_bytes: _Optional[int] = ..., newest: _Optional[_Union[BackupCopy, _Mapping]] = ...) -> None: ...

class ListDestinationsResponse(_message.Message):
    __slots__ = ("destinations",)
    DESTINATIONS_FIELD_NUMBER: _ClassVar[int]
    destinations: _containers.RepeatedCompositeFieldContainer[Destination]
    def __init__(self, destinations: _Optional[_Iterable[_Union[Destination, _Mapping]]] = ...) -> None: ...

class GetClusterRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClusterNode(_message.Message):
    __slots__ = ("name", "started_at", "heartbeat_at", "heartbeat_age_seconds", "silent", "run_ids", "this_replica", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_AT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SILENT_FIELD_NUMBER: _ClassVar[int]
    RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    THIS_REPLICA_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    started_at: _timestamp_pb2.Timestamp
    heartbeat_at: _timestamp_pb2.Timestamp
    heartbeat_age_seconds: float
    silent: bool
    run_ids: _containers.RepeatedScalarFieldContainer[int]
    this_replica: bool
    version: str
    def __init__(self, name: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., heartbeat_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., heartbeat_age_seconds: _Optional[float] = ..., silent: _Optional[bool] = ..., run_ids: _Optional[_Iterable[int]] = ..., this_replica: _Optional[bool] = ..., version: _Optional[str] = ...) -> None: ...

class GetClusterResponse(_message.Message):
    __slots__ = ("enabled", "node", "nodes", "lease_timeout_seconds", "queued_runs")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    LEASE_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_RUNS_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    node: str
    nodes: _containers.RepeatedCompositeFieldContainer[ClusterNode]
    lease_timeout_seconds: float
    queued_runs: int
    def __init__(self, enabled: _Optional[bool] = ..., node: _Optional[str] = ..., nodes: _Optional[_Iterable[_Union[ClusterNode, _Mapping]]] = ..., lease_timeout_seconds: _Optional[float] = ..., queued_runs: _Optional[int] = ...) -> None: ...
