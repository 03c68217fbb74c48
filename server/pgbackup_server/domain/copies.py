"""Where backups are stored, as the domain sees it: the state of a backup's file or
copy, what a destination stored or holds, and each copy of a run at a destination.
Re-exported by :mod:`.models`."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class FileState(enum.StrEnum):
    """What became of a run's file after the run."""

    NONE = "NONE"  # the run produced no file (not finished, or failed)
    PRESENT = "PRESENT"
    DELETED = "DELETED"  # removed by retention
    MISSING = "MISSING"  # gone from disk without the service removing it


class CopyState(enum.StrEnum):
    """Where one copy of a backup stands at one destination."""

    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True)
class Stored:
    """Bytes that reached their final place: where, how many, and their SHA-256."""

    location: str  # the destination-relative name, e.g. "db/backup_db_….sql.zst"
    size: int
    sha256: str
    # The checksum the store itself will report for these bytes (an S3 ETag), so a
    # quick verify compares without downloading; "" where the store offers none.
    etag: str = ""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a destination knows about one stored object without reading it."""

    location: str
    size: int
    modified: datetime | None = None
    # The store's own checksum when it offers one (an S3 ETag, a local file has none).
    etag: str = ""
    locked_until: datetime | None = None  # S3 Object Lock retention


@dataclass(frozen=True, slots=True)
class Copy:
    """One copy of a run's backup at one destination."""

    run_id: int
    destination: str
    state: CopyState
    location: str = ""
    size_bytes: int = 0
    sha256: str = ""
    error: str = ""
    stored_at: datetime | None = None
    file_state: FileState = FileState.NONE
    locked_until: datetime | None = None

    @property
    def present(self) -> bool:
        return self.state is CopyState.SUCCEEDED and self.file_state is FileState.PRESENT

    @property
    def backup_id(self) -> int:
        return self.run_id

    @property
    def deleted(self) -> bool:
        return self.file_state is FileState.DELETED


@dataclass(frozen=True, slots=True)
class DestinationUsage:
    """What the store knows a destination holds: its present copies, their bytes,
    and the newest one."""

    name: str
    copies: int = 0
    used_bytes: int = 0
    newest: Copy | None = None


@dataclass(frozen=True, slots=True)
class DestinationStatus:
    """A configured destination as ListDestinations shows it."""

    name: str
    url: str  # never with credentials
    required: bool
    reachable: bool
    error: str = ""
    copies: int = 0
    used_bytes: int = 0
    newest: Copy | None = None
