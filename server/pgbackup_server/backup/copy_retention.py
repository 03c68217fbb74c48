"""Retention per destination: each destination's copies, by the policy of their
target at that destination (``retention_for``), decided by the pure rules of
``domain.retention``.

Only copies the service recorded are candidates, so nothing it did not make is ever
deleted; physical backups (chains) stay with the directory retention. A local copy is
deleted only if it is still the regular file (or directory backup) the service wrote,
never through a symlink (``files.delete_backup``). A copy under S3 Object Lock stays
until its date: kept, with the reason, and no failure. A run whose copies are all
gone is marked DELETED; a run whose listed file went while another copy stays points
at that copy instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from ..domain import retention
from ..domain.errors import BackupError
from ..domain.models import Copy, FileState, Run, RunStatus
from ..domain.ports import Clock, CopyStore, Destination, RunStore
from ..domain.retention import Candidate, Group, Policy
from ..settings import DestinationConfig, Settings
from ..settings.retention import retention_for
from ..storage.catalog import manifest_name
from ..storage.paths import as_recorded
from . import files

log = structlog.get_logger("pgbackup")
LOCKED = "locked (S3 Object Lock): kept until its retention date"


@dataclass(frozen=True, slots=True)
class CopyDecision:
    """What retention decided for one copy, and why."""

    run_id: int
    database: str
    destination: str
    location: str
    keep: bool
    reasons: tuple[str, ...]
    shown: str = ""  # the copy as the run records it: a path, or the object's URL


@dataclass(frozen=True, slots=True)
class CopyCleanup:
    decisions: tuple[CopyDecision, ...] = ()
    deleted: tuple[str, ...] = ()  # the URLs (paths for local copies) deleted
    freed_bytes: int = 0


class CopyRetention:
    """Applies retention to the copies at every configured destination."""

    def __init__(self, settings: Settings, runs: RunStore, copies: CopyStore,
                 destinations: Mapping[str, Destination], clock: Clock,
                 scrub: Callable[[str], str] = lambda text: text) -> None:
        self.settings = settings
        self.runs = runs
        self.copies = copies
        self.destinations = destinations
        self.clock = clock
        self.scrub = scrub

    def apply(self, *, dry_run: bool) -> CopyCleanup:
        decisions: list[CopyDecision] = []
        deleted: list[str] = []
        freed = 0
        for config in self.settings.destinations:
            dest = self.destinations.get(config.name)
            if dest is None:
                continue
            result = self._one(config, dest, dry_run=dry_run)
            decisions += result.decisions
            deleted += result.deleted
            freed += result.freed_bytes
        return CopyCleanup(tuple(decisions), tuple(deleted), freed)

    def policy_for(self, config: DestinationConfig) -> Callable[[Group], Policy]:
        return lambda group: retention_for(self.settings, group[0], config.retention)

    def _one(self, config: DestinationConfig, dest: Destination, *,
             dry_run: bool) -> CopyCleanup:
        present = self._reconciled(config.name, dest, self.copies.present(config.name),
                                   dry_run=dry_run)
        by_id: dict[int, tuple[Run, Copy]] = {run.id: (run, copy) for run, copy in present}
        # Physical backups form chains: the directory retention (chain-aware) keeps them.
        present = [(run, copy) for run, copy in present if not run.kind.physical]
        candidates = [Candidate(run.id, (run.target, run.database),
                                run.started_at or run.queued_at, copy.locked_until)
                      for run, copy in present if run.status is RunStatus.SUCCEEDED]
        latest = _latest_status([run for run, _ in present], self.runs)
        decisions = retention.decide(candidates, self.policy_for(config), now=self.clock(),
                                     tz=self.settings.scheduler.tz, latest_status=latest)
        out: list[CopyDecision] = []
        deleted: list[str] = []
        freed = 0
        for d in decisions:
            run, copy = by_id[d.candidate.id]
            reasons = d.reasons
            keep = d.keep
            if not keep and dest.is_local and not self._ours(dest, copy):
                keep = True
                reasons += ("not deleted: the file is not the backup the service wrote",)
                if not dry_run:
                    self._missing(run, copy, dest)
            elif not keep and not dry_run:
                try:
                    gone = self._delete(dest, copy)
                except Exception as exc:
                    gone = False
                    reasons += (f"not deleted: {self.scrub(str(exc))}",)
                    log.warning("Retention could not delete a copy", run_id=run.id,
                                destination=config.name, error=self.scrub(str(exc)))
                else:
                    if not gone:
                        reasons += (LOCKED,)
                if gone:
                    self._deleted(run, copy, dest)
                    deleted.append(as_recorded(dest, copy.location))
                    freed += copy.size_bytes
                else:
                    keep = True
            elif not keep:
                deleted.append(as_recorded(dest, copy.location))
                freed += copy.size_bytes
            out.append(CopyDecision(run.id, run.database, config.name, copy.location, keep,
                                    reasons, as_recorded(dest, copy.location)))
        if deleted:
            log.info("Retention at a destination", destination=config.name,
                     deleted=len(deleted), freed_bytes=freed, dry_run=dry_run)
        return CopyCleanup(tuple(out), tuple(deleted), freed)

    def _reconciled(self, name: str, dest: Destination, present: list[tuple[Run, Copy]], *,
                    dry_run: bool) -> list[tuple[Run, Copy]]:
        """Local copies whose file is gone (removed by hand) are MISSING, not decided
        on. A directory absent as a whole (an unmounted volume) is not a deletion."""
        if not dest.is_local or dry_run:
            return present
        kept = []
        for run, copy in present:
            path = as_recorded(dest, copy.location)
            if not os.path.lexists(path) and os.path.isdir(os.path.dirname(path)):
                self.copies.set_file_state(run.id, name, FileState.MISSING)
                log.warning("Backup copy missing from its destination", run_id=run.id,
                            destination=name, file_path=path)
                continue
            kept.append((run, copy))
        return kept

    def _ours(self, dest: Destination, copy: Copy) -> bool:
        return files.is_our_regular_file(Path(as_recorded(dest, copy.location)))

    def _delete(self, dest: Destination, copy: Copy) -> bool:
        """Delete a copy; False when Object Lock holds it. A local one goes through
        ``files.delete_backup`` (confined to its destination, never through a link)."""
        if not dest.is_local:
            return dest.delete(copy.location)
        path = Path(as_recorded(dest, copy.location))
        if files.delete_backup(path, (path.parent,)) is None:
            raise BackupError("the file changed under the service")
        return True

    def _missing(self, run: Run, copy: Copy, dest: Destination) -> None:
        self.copies.set_file_state(run.id, copy.destination, FileState.MISSING)
        if run.file_path == as_recorded(dest, copy.location):
            self.runs.set_file_state([run.id], FileState.MISSING)
        log.warning("Not deleting: file is not the backup the service wrote", run_id=run.id,
                    destination=copy.destination, file_path=as_recorded(dest, copy.location))

    def _deleted(self, run: Run, copy: Copy, dest: Destination) -> None:
        """Record the copy gone (and its manifest removed); keep the run's record right."""
        try:
            dest.delete(manifest_name(copy.location))
        except Exception as exc:  # the backup is gone; a manifest left over is harmless
            log.warning("Manifest not deleted", destination=copy.destination,
                        error=self.scrub(str(exc)))
        self.copies.set_file_state(run.id, copy.destination, FileState.DELETED)
        rest = [c for c in self.copies.of_run(run.id) if c.present]
        if not rest:
            self.runs.set_file_state([run.id], FileState.DELETED)
            return
        if run.file_path == as_recorded(dest, copy.location):
            other = sorted(rest, key=lambda c: not self.destinations[c.destination].is_local
                           if c.destination in self.destinations else True)[0]
            other_dest = self.destinations.get(other.destination)
            if other_dest is not None:
                path = as_recorded(other_dest, other.location)
                self.runs.relocate(run.id, file_path=path,
                                   backup_dir=os.path.dirname(path) if other_dest.is_local
                                   else path.rsplit("/", 1)[0])



def _latest_status(runs: list[Run], store: RunStore) -> dict[Group, RunStatus]:
    """The newest finished run's status of each group (nothing pruned while it failed)."""
    out: dict[Group, RunStatus] = {}
    for target, database in {(r.target, r.database) for r in runs}:
        page = store.list_runs(target=target, database=database, page_size=20)
        newest = next((r for r in page.runs if r.status.finished), None)
        if newest is not None:
            out[(target, database)] = newest.status
    return out
