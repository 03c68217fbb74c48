"""``ImportCatalog``: a new host, configured with the same destinations, rebuilds its
run store from a destination's manifests, then lists, verifies and restores the old
backups. Idempotent: a copy already recorded (same destination and location) is
skipped, and copies of one backup at several destinations join one run.

A physical backup is a folder of files: it is found by listing its folder, and an
incremental joins its chain through the parent its manifest names (imported first:
physical backups are read oldest first); one whose parent is not there is reported,
not imported, since it could not be restored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from ..domain.errors import InvalidArgument, NotFound
from ..domain.models import (
    Compression,
    Copy,
    CopyState,
    FileState,
    ObjectInfo,
    Run,
    RunKind,
    RunStatus,
)
from ..domain.ports import Clock, CopyStore, Destination, RunStore
from ..physical.chain import chain_text
from ..storage.catalog import Manifest, read_manifests
from ..storage.paths import recorded_place

log = structlog.get_logger("pgbackup")


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an import did: runs it created, copies it recorded, manifests it skipped
    (already known), and the manifests it could not use, each with its reason."""

    destination: str
    imported: int = 0
    skipped: int = 0
    runs_created: int = 0
    problems: tuple[str, ...] = ()
    backup_ids: tuple[int, ...] = ()


class CatalogImporter:
    """Reads manifests at a destination into the run and copy stores."""

    def __init__(self, runs: RunStore, copies: CopyStore,
                 destinations: Mapping[str, Destination], clock: Clock) -> None:
        self.runs = runs
        self.copies = copies
        self.destinations = destinations
        self.clock = clock

    def import_catalog(self, destination: str) -> ImportResult:
        if not destination:
            raise InvalidArgument("destination: required; name a configured destination ("
                                  f"{', '.join(self.destinations) or 'none configured'})")
        dest = self.destinations.get(destination)
        if dest is None:
            raise NotFound(f"destination: {destination!r} is not configured; configured: "
                           f"{', '.join(self.destinations)}")
        known = self._known_runs()
        imported = skipped = created = 0
        problems: list[str] = []
        ids: list[int] = []
        reads = list(read_manifests(dest))
        # Parents before their incrementals: a chain's backups in the order made.
        reads.sort(key=lambda r: (r.manifest is not None and r.manifest.kind in _PHYSICAL,
                                  r.manifest.finished_at.timestamp() if r.manifest else 0.0))
        for read in reads:
            m = read.manifest
            if m is None:
                problems.append(read.problem)
                continue
            if self.copies.find(destination, m.location) is not None:
                skipped += 1
                continue
            parent: Run | None = None
            if m.kind is RunKind.PHYSICAL_INCREMENTAL:
                found = self.copies.find(destination, m.parent) if m.parent else None
                if found is None:
                    problems.append(f"{read.name}: its parent {m.parent or '(none named)'} "
                                    "is not in this catalog; an incremental cannot be "
                                    "restored without it: not imported")
                    continue
                parent = self.runs.get(found.run_id)
            info = (_folder(dest, m.location) if m.kind in _PHYSICAL
                    else dest.head(m.location))
            if info is None:
                problems.append(f"{read.name}: the backup {m.location} is not there")
                continue
            if info.size != m.size_bytes:
                problems.append(f"{read.name}: {m.location} holds {info.size} bytes, the "
                                f"manifest says {m.size_bytes}; not imported")
                continue
            run = known.get((m.database, m.sha256))
            if run is None or run.copy_at(destination) is not None:
                run = self._create_run(m, dest, parent)
                known[(m.database, m.sha256)] = run
                created += 1
            copy = Copy(run.id, destination, CopyState.SUCCEEDED, location=m.location,
                        size_bytes=m.size_bytes, sha256=m.sha256, stored_at=m.finished_at,
                        file_state=FileState.PRESENT, locked_until=info.locked_until)
            if self.copies.record(copy):
                imported += 1
                ids.append(run.id)
            else:
                skipped += 1
        result = ImportResult(destination, imported, skipped, created, tuple(problems),
                              tuple(ids))
        log.info("Catalog imported", destination=destination, imported=imported,
                 skipped=skipped, runs_created=created, problems=len(problems))
        return result

    def _known_runs(self) -> dict[tuple[str, str], Run]:
        """Succeeded runs by (database, SHA-256 of the stored bytes): a backup's copies
        at other destinations have the same bytes."""
        out: dict[tuple[str, str], Run] = {}
        token = ""
        while True:
            page = self.runs.list_runs(status=RunStatus.SUCCEEDED, page_size=1000,
                                       page_token=token)
            for run in page.runs:
                if run.sha256:
                    out.setdefault((run.database, run.sha256), run)
            token = page.next_page_token
            if not token:
                return out

    def _create_run(self, m: Manifest, dest: Destination, parent: Run | None) -> Run:
        file_path, backup_dir = recorded_place(dest, m.location)
        run = self.runs.create_run(database=m.database, trigger=m.trigger,
                                   backup_dir=backup_dir, queued_at=m.queued_at,
                                   schedule=m.schedule, target=m.target, kind=m.kind)
        self.runs.mark_running(run.id, started_at=m.started_at or m.finished_at,
                               format=m.format, compression=Compression.parse(m.compression),
                               pg_dump_version=m.pg_dump_version,
                               server_version=m.server_version,
                               plaintext_sha256=m.plaintext_sha256, encryption=m.encryption)
        if m.kind in _PHYSICAL:
            self.runs.mark_running(run.id, parent_id=parent.id if parent else 0,
                                   chain=chain_text(parent, run.id), start_lsn=m.start_lsn,
                                   end_lsn=m.end_lsn, timeline=m.timeline)
        return self.runs.mark_succeeded(run.id, finished_at=m.finished_at, file_path=file_path,
                                        size_bytes=m.size_bytes, sha256=m.sha256)


_PHYSICAL = (RunKind.PHYSICAL_FULL, RunKind.PHYSICAL_INCREMENTAL)


def _folder(dest: Destination, location: str) -> ObjectInfo | None:
    """A physical backup's folder as one object: the sum of its files' sizes (None
    when no file is there)."""
    files = list(dest.list(location + "/"))
    if not files:
        return None
    return ObjectInfo(location=location, size=sum(f.size for f in files))
