"""The ports: every interface the domain depends on, in one place.

Implementations live at the edges (``persistence`` for the stores, the
scheduler for schedules); the domain is built with them and never imports them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from .models import (
    Alert,
    CleanupResult,
    Copy,
    CopyState,
    DestinationUsage,
    FileState,
    ObjectInfo,
    Run,
    RunKind,
    RunPage,
    RunStatus,
    ScheduleInfo,
    Stats,
    Stored,
    Trigger,
)

if TYPE_CHECKING:
    from ..restore.models import RestorePage, RestoreRun

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The real clock; tests inject their own."""
    return datetime.now(UTC)


class RunStore(Protocol):
    """Backup runs (persistence.SqlRunStore). Writes return the updated run."""

    def create_run(self, *, database: str, trigger: Trigger, backup_dir: str,
                   queued_at: datetime, schedule: str = "", target: str = "",
                   kind: RunKind = RunKind.DATABASE) -> Run: ...
    def mark_running(self, run_id: int, **changes: Any) -> Run: ...
    def mark_succeeded(self, run_id: int, *, finished_at: datetime, file_path: str,
                       size_bytes: int, sha256: str, bytes_written: int = 0,
                       **stored: Any) -> Run: ...
    def mark_failed(self, run_id: int, *, finished_at: datetime, error: str,
                    started_at: datetime | None = None, **stored: Any) -> Run: ...
    def set_progress(self, run_id: int, *, bytes_written: int,
                     estimated_total_bytes: int) -> None: ...
    def set_verification(self, run_id: int, *, ok: bool, reason: str,
                         verified_at: datetime) -> Run: ...
    def set_file_state(self, run_ids: Iterable[int], state: FileState) -> None: ...
    def relocate(self, run_id: int, *, file_path: str, backup_dir: str) -> Run: ...
    def get(self, run_id: int) -> Run: ...
    def list_runs(self, *, database: str = "", target: str = "",
                  status: RunStatus | None = None, page_size: int = 0,
                  page_token: str = "", trigger: Trigger | None = None) -> RunPage: ...
    def has_runs(self, *, target: str = "", database: str = "") -> bool: ...
    def unfinished_runs(self) -> list[Run]: ...
    def present_runs(self, backup_dir: str | None = None) -> list[Run]: ...
    def latest_status_by_database(self,
                                  backup_dir: str) -> dict[tuple[str, str], RunStatus]: ...
    def last_scheduled_run(self, schedule: str) -> Run | None: ...
    def backup_dirs(self) -> list[str]: ...
    def stats(self, backup_directory: str, *, target: str = "",
              database: str = "") -> Stats: ...


class CopyStore(Protocol):
    """The copies of runs at their destinations (persistence.SqlCopyStore): one per
    (run, destination); writes return the copy."""

    def add(self, run_id: int, destination: str) -> Copy: ...
    def mark_succeeded(self, run_id: int, destination: str, *, location: str,
                       size_bytes: int, sha256: str, stored_at: datetime,
                       locked_until: datetime | None = None) -> Copy: ...
    def mark_failed(self, run_id: int, destination: str, *, error: str) -> Copy: ...
    def set_file_state(self, run_id: int, destination: str, state: FileState) -> None: ...
    def record(self, copy: Copy) -> bool: ...
    def get(self, run_id: int, destination: str) -> Copy: ...
    def of_run(self, run_id: int) -> tuple[Copy, ...]: ...
    def at(self, destination: str, state: CopyState | None = None) -> list[Copy]: ...
    def find(self, destination: str, location: str) -> Copy | None: ...
    def present(self, destination: str) -> list[tuple[Run, Copy]]: ...
    def usage(self, *, target: str = "",
              database: str = "") -> dict[str, DestinationUsage]: ...


class RestoreStore(Protocol):
    """Restore runs and the scratch databases restores create (persistence.SqlRestoreStore)."""

    def create(self, *, backup_id: int, target_database: str, requested_by: str,
               schemas: tuple[str, ...], tables: tuple[str, ...], jobs: int, overwrite: bool,
               started_at: datetime) -> RestoreRun: ...
    def mark_succeeded(self, restore_id: int, *, finished_at: datetime) -> RestoreRun: ...
    def mark_failed(self, restore_id: int, *, finished_at: datetime,
                    error: str) -> RestoreRun: ...
    def get(self, restore_id: int) -> RestoreRun: ...
    def unfinished(self, *, everyone: bool = True) -> list[RestoreRun]: ...
    def restore_page(self, *, backup_id: int = 0, page_size: int = 0,
                     page_token: str = "") -> RestorePage: ...
    def add_scratch(self, name: str, *, purpose: str, target: str,
                    created_at: datetime) -> None: ...
    def remove_scratch(self, name: str) -> None: ...
    def scratch_databases(self) -> list[tuple[str, str]]: ...


class AlertStore(Protocol):
    """Alerts firing now and since when subjects are watched (persistence.SqlAlertStore)."""

    def firing(self) -> list[Alert]: ...
    def get(self, key: str) -> Alert | None: ...
    def tracking(self) -> dict[str, datetime]: ...
    def fire(self, alert: Alert) -> bool: ...  # False: it was firing already
    def resolve(self, key: str) -> bool: ...  # False: it was not firing (any more)
    def track(self, subjects: dict[str, datetime]) -> None: ...


class AlertSource(Protocol):
    """What the API shows of alerts: those firing now."""

    def firing(self) -> list[Alert]: ...


class ScheduleSource(Protocol):
    """What asks for schedules asks the scheduler."""

    def schedules(self) -> list[ScheduleInfo]: ...


class Listener:
    """Receives service events; override what you need, every method is optional.
    Listeners never fail a backup (the hub isolates their errors)."""

    def on_run_started(self, run: Run) -> None:
        """A run moved to RUNNING."""

    def on_run_finished(self, run: Run) -> None:
        """A run reached SUCCEEDED or FAILED (``run`` is the stored record)."""

    def on_cleanup(self, result: CleanupResult, directory: str) -> None:
        """Retention ran (not for dry runs)."""

    def on_verification(self, run: Run, ok: bool, reason: str) -> None:
        """A backup was verified."""

    def on_missed_fire(self, schedule: str, fire_time: datetime) -> None:
        """A schedule's fire did not happen because the service was down."""

    def on_copy_finished(self, run: Run, copy: Copy) -> None:
        """A copy of ``run`` at a destination ended SUCCEEDED or FAILED."""

    def on_replica_silent(self, node: str, since: datetime) -> None:
        """A cluster replica's last heartbeat (at ``since``) is older than its lease."""

    def on_replica_back(self, node: str) -> None:
        """A cluster replica heartbeats again, or left cleanly (a no-op if never silent)."""


class Sink(Protocol):
    """Where a backup's bytes go, pushed in order (``backup.pipeline``).

    A stage (zstd, age) is a Sink that transforms and writes to a downstream Sink.
    ``finish`` publishes atomically and returns what was stored; ``abort`` leaves
    nothing behind under a backup's name and may be called after a failed ``finish``.
    """

    def write(self, chunk: bytes) -> None: ...
    def finish(self) -> list[Stored]: ...
    def abort(self, reason: str) -> None: ...


class Destination(Protocol):
    """One configured place backups are stored (``storage``): a local directory or an
    object store. Locations are relative names; ``location_of`` gives the full URL."""

    name: str
    is_local: bool

    def location_of(self, relative: str) -> str: ...
    def upload(self, relative: str) -> Sink:
        """A Sink that publishes ``relative`` on ``finish`` and never overwrites."""
    def read(self, relative: str) -> Iterator[bytes]: ...
    def head(self, relative: str) -> ObjectInfo | None: ...
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...
    def delete(self, relative: str) -> bool:
        """Delete; False (not an error) when Object Lock still holds it."""
    def put_small(self, relative: str, data: bytes) -> None:
        """Write a small object (a manifest) in one request."""
    def sweep_unfinished(self) -> Sequence[str]:
        """Remove what uploads that died with their process left behind, never an
        upload still in progress; the paths removed."""
