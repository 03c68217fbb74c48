"""The catalog that outlives the service: a manifest next to each backup.

``<name>.manifest.json`` says what the backup is (database, versions, kind, format,
compression, encryption recipients), what its bytes are (size and SHA-256 as stored,
SHA-256 of the plaintext) and when and why it was made. A new host configured with
the same destinations rebuilds its run store from them (``catalog.importer``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any

from .. import __version__
from ..domain.errors import BackupError
from ..domain.models import (
    Compression,
    DumpFormat,
    Run,
    RunKind,
    Stored,
    Trigger,
)
from ..domain.ports import Destination
from .paths import MANIFEST_SUFFIX

FORMAT_VERSION = 1
TOOL = "pgbackup-scheduler"
MAX_MANIFEST_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class ManifestFile:
    """One object of a backup stored as a folder (a physical backup's copy), by its
    name in the folder (``.age`` when encrypted): as stored, so that a quick verify
    checks it without decrypting it."""

    name: str
    size: int
    sha256: str
    etag: str = ""  # the store's checksum (an S3 ETag); "" where it offers none


@dataclass(frozen=True, slots=True)
class Manifest:
    """One backup as its manifest describes it; timestamps are UTC-aware."""

    location: str  # the backup's name at its destination, relative
    database: str
    target: str
    kind: RunKind
    format: DumpFormat
    compression: str  # "zstd:1", "none"
    encryption: tuple[str, ...]  # fingerprints of the age recipients; () = not encrypted
    size_bytes: int
    sha256: str
    plaintext_sha256: str
    etag: str
    server_version: str
    pg_dump_version: str
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime
    schedule: str
    trigger: Trigger
    tool_version: str = __version__
    format_version: int = FORMAT_VERSION
    # Physical backups (absent from older manifests): the parent's name at the same
    # destination ("" for a full backup) and the WAL range the backup needs.
    parent: str = ""
    start_lsn: str = ""
    end_lsn: str = ""
    timeline: int = 0
    # A physical backup's copy: its objects (absent from older manifests).
    files: tuple[ManifestFile, ...] = ()

    def to_json(self) -> bytes:
        out: dict[str, Any] = {"tool": TOOL}
        for key, value in asdict(self).items():
            if key in _OPTIONAL and not value:
                continue  # a logical backup's manifest has no physical fields
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, tuple):
                value = list(value)
            out[key] = value
        return (json.dumps(out, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse and check a manifest; ValueError saying what is wrong."""
        try:
            raw = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"not JSON ({exc})") from None
        if not isinstance(raw, dict) or raw.get("tool") != TOOL:
            raise ValueError(f'not a {TOOL} manifest (no "tool": "{TOOL}")')
        version = raw.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(f"format_version {version!r} is not supported (this backupd "
                             f"reads up to {FORMAT_VERSION}); upgrade backupd")
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in raw:
                if f.name in _OPTIONAL:
                    continue
                raise ValueError(f"{f.name}: missing")
            values[f.name] = _parse(f.name, raw[f.name])
        return cls(**values)


_OPTIONAL = frozenset({"parent", "start_lsn", "end_lsn", "timeline", "files"})


def _parse(name: str, value: Any) -> Any:
    try:
        if name in ("queued_at", "finished_at", "started_at"):
            if value is None and name == "started_at":
                return None
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is None:
                raise ValueError("no time zone")
            return parsed
        if name == "kind":
            return RunKind(value)
        if name == "format":
            return DumpFormat(value)
        if name == "trigger":
            return Trigger(value)
        if name == "compression":
            return str(Compression.parse(value))
        if name == "files":
            return tuple(_file(v) for v in value)
        if name == "encryption":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError("not a list of fingerprints")
            return tuple(value)
        if name in ("size_bytes", "format_version", "timeline"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError("not a count")
            return value
        if not isinstance(value, str):
            raise ValueError("not a text")
        return value
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: {value!r} is invalid ({exc})") from None


def _file(value: Any) -> ManifestFile:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or \
            not isinstance(value.get("sha256"), str) or \
            not isinstance(value.get("etag", ""), str):
        raise ValueError("not a list of files (name, size, sha256, etag)")
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"file {value['name']!r}: size is not a count")
    return ManifestFile(value["name"], size, value["sha256"], value.get("etag", ""))


def manifest_name(location: str) -> str:
    """The manifest's name next to the backup ``location``."""
    return location + MANIFEST_SUFFIX


def manifest_for(run: Run, stored: Stored, *, finished_at: datetime | None = None,
                 parent: str = "") -> Manifest:
    """The manifest of ``run``'s backup as ``stored`` at one destination (pure).
    ``finished_at``: when the run is not marked finished yet; ``parent``: a physical
    incremental's parent, by its name at the same destination."""
    end = finished_at or run.finished_at
    if end is None or run.format is None:
        raise ValueError(f"run {run.id} has not produced a backup yet")
    return Manifest(
        location=stored.location, database=run.database, target=run.target, kind=run.kind,
        format=run.format, compression=str(run.compression or "none"),
        encryption=tuple(run.encryption), size_bytes=stored.size, sha256=stored.sha256,
        plaintext_sha256=run.plaintext_sha256, etag=stored.etag,
        server_version=run.server_version, pg_dump_version=run.pg_dump_version,
        queued_at=run.queued_at, started_at=run.started_at, finished_at=end,
        schedule=run.schedule, trigger=run.trigger, parent=parent,
        start_lsn=run.start_lsn, end_lsn=run.end_lsn, timeline=run.timeline,
        files=tuple(ManifestFile(p.location.rsplit("/", 1)[-1], p.size, p.sha256, p.etag)
                    for p in stored.parts))


def write_manifest(destination: Destination, relative: str, manifest: Manifest) -> str:
    """Store ``manifest`` next to the backup ``relative``; returns the manifest's name.
    Never overwrites (a manifest describes one backup for good)."""
    name = manifest_name(relative)
    destination.put_small(name, manifest.to_json())
    return name


@dataclass(frozen=True, slots=True)
class ManifestRead:
    """A manifest found at a destination: parsed, or why it could not be."""

    name: str
    manifest: Manifest | None = None
    problem: str = ""


def read_manifests(destination: Destination) -> Iterator[ManifestRead]:
    """Every manifest at ``destination``, in name order. A manifest that cannot be read
    or parsed is reported (``problem``), never fatal to the others."""
    names = sorted(i.location for i in destination.list() if i.location.endswith(
        MANIFEST_SUFFIX) and i.size <= MAX_MANIFEST_BYTES)
    for name in names:
        try:
            data = b"".join(destination.read(name))
            manifest = Manifest.from_json(data)
        except BackupError as exc:
            yield ManifestRead(name, problem=f"{name}: {exc.message}")
            continue
        except ValueError as exc:
            yield ManifestRead(name, problem=f"{name}: {exc}")
            continue
        if manifest_name(manifest.location) != name:
            yield ManifestRead(name, problem=f"{name}: describes {manifest.location}, not "
                                             "the backup next to it")
            continue
        yield ManifestRead(name, manifest)
