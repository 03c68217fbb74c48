"""Verification and restore of physical backups, for ``restore/service.py``.

Each backup of the chain is read from its folder here, or, when that is gone, from
a copy at a destination, fetched and decrypted (:mod:`.fetch`); either way each file
is checked against the SHA-256 written for it, naming the file that changed or went
missing.

- Quick verify checks every backup of the chain so, then runs ``pg_verifybackup``
  over the backup's own tars; with no identity for an encrypted copy, it checks that
  copy as stored instead (:mod:`.copycheck`).
- Restore rebuilds the chain into ``target_directory`` (:mod:`.combine`), checked with
  ``pg_verifybackup``, and for a point in time writes the recovery settings.
- Deep verify restores into a scratch directory, starts a throwaway server on it,
  runs a query, and removes everything (:mod:`.scratch`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

import structlog

from ..domain.errors import (
    BackupError,
    FailedPrecondition,
    InvalidArgument,
    RestoreFailed,
    Unavailable,
)
from ..domain.models import Run
from ..domain.ports import Clock, Destination, RestoreStore, RunStore
from ..postgres.binaries import PgBinary
from ..restore.admission import Admission, succeeded_backup
from ..restore.models import Corrupt, RestoreRun, TableRows, ToolFailed
from ..settings import Settings
from . import chain, tablespaces
from .basebackup import MANIFEST, SUMS, file_sha256
from .combine import CombineFailed, check_output_dir, rebuild
from .copycheck import check_copies, check_stored, has_identity, undecryptable
from .fetch import ChainFiles
from .recovery import restore_command, utc, write_recovery
from .runner import target_runs
from .tools import tool

log = structlog.get_logger("pgbackup")


class PhysicalRestorer:
    """Physical verify and restore; the restore service records and reports them."""

    def __init__(self, settings: Settings, store: RunStore, *, binaries: list[PgBinary],
                 address: Callable[[], str], restores: RestoreStore, admission: Admission,
                 clock: Clock, destinations: Mapping[str, Destination] | None = None) -> None:
        self.settings = settings
        self.store = store
        self.binaries = binaries
        self.address = address
        self.restores = restores
        self.admission = admission
        self.clock = clock
        self.files = ChainFiles(settings, destinations or {})

    # -- checks -------------------------------------------------------------

    def chain_of(self, run: Run) -> list[Run]:
        by_id = {r.id: r for r in target_runs(self.store, run.target)}
        by_id[run.id] = run
        try:
            return chain.restore_chain(run, by_id)
        except ValueError as exc:
            raise Corrupt(f"the chain of backup {run.id} is broken: {exc}") from None

    def check_request(self, run: Run, target_directory: str, target_time: datetime | None,
                      target_lsn: str, tablespace_mapping: Sequence[str] = ()) -> Path:
        """Refuse what cannot work before anything runs (the tablespaces too, when the
        backup's folder is here; else once it is fetched, before anything is written)."""
        if not target_directory:
            raise InvalidArgument(
                f"target_directory: backup {run.id} is a physical backup of a whole cluster; "
                "give a new or empty directory to rebuild its data directory in")
        if target_time is not None and target_lsn:
            raise InvalidArgument("target_time, target_lsn: give one recovery target, not "
                                  "both")
        if target_lsn:
            try:
                chain.lsn_value(target_lsn)
            except ValueError:
                raise InvalidArgument(f"target_lsn: expected an LSN such as 0/3000060, got "
                                      f"{target_lsn!r}") from None
        if target_time is not None or target_lsn:
            target = next((t for t in self.settings.targets if t.name == run.target), None)
            if target is None or target.wal is None or not target.wal.stream:
                raise FailedPrecondition(
                    f"target_time/target_lsn: target {run.target!r} has no WAL archive to "
                    "replay; set wal: {stream: true} on it (restores without a target reach "
                    "the end of the backup)")
            if target_time is not None and run.finished_at and utc(target_time) < \
                    run.finished_at:
                raise InvalidArgument(
                    f"target_time: {utc(target_time).isoformat()} is before backup {run.id} "
                    f"ended ({run.finished_at.isoformat()}); a backup can only be rolled "
                    "forward: choose a later time or an earlier backup")
        output = check_output_dir(target_directory)
        mapping = tablespaces.parse_mapping(tablespace_mapping)
        if self.files.is_local(run) and (Path(run.file_path) / "base.tar.gz").is_file():
            try:
                spaces = self.tablespaces_of(run, Path(run.file_path))
            except Corrupt:
                return output  # damaged here: a restore reads a copy, and checks it then
            tablespaces.places(spaces, mapping, output, f"backup {run.id}")
        return output

    @staticmethod
    def tablespaces_of(run: Run, folder: Path) -> tuple[tablespaces.Tablespace, ...]:
        try:
            return tablespaces.read_map(folder)
        except (ValueError, OSError, EOFError, tarfile.TarError) as exc:
            raise Corrupt(f"backup {run.id}: its tablespaces cannot be read: {exc}") from None



    @staticmethod
    def refuse_contents(run: Run) -> None:
        """Listing contents reads a logical backup's table of contents; a physical one
        has none."""
        if run.kind.physical:
            raise FailedPrecondition(f"backup {run.id} is a physical backup of a whole "
                                     "cluster; its contents are listed by restoring it "
                                     "(target_directory) and starting it")

    def check_identity(self, run: Run, identity: str, *, quick: bool = False) -> None:
        """Refused before anything runs: a chain to fetch from encrypted copies with no
        identity to decrypt them. (A broken chain is for the verify or restore to report.)
        ``quick``: a quick verify, which checks such copies as stored instead."""
        if quick and not has_identity(self.files, identity):
            return
        try:
            members = self.chain_of(run)
        except Corrupt:
            return
        self.files.check_identity(members, identity)

    def verify(self, run: Run, *, deep: bool, identity: str = "") -> tuple[TableRows, ...]:
        """Quick: every backup of the chain is as written (Corrupt naming the file if
        not) and pg_verifybackup accepts the backup's tars (encrypted copies with no
        identity: as stored, pg_verifybackup over a folder here); each copy of the
        backup at a destination is as stored. Deep: then the chain is
        restored into a scratch directory, started, and its tables' rows counted;
        nothing is left behind."""
        members = self.chain_of(run)
        if not deep and undecryptable(self.files, members, identity):
            used = check_stored(self.files, members, check_files)  # copies as stored
            if self.files.is_local(run):
                self._verifybackup(run, Path(run.file_path))
            check_copies(self.files, run, checked=[used[run.id]] if run.id in used else [])
            return ()
        root = Path(tempfile.mkdtemp(prefix="pgbackup-verify-"))
        try:
            os.chmod(root, 0o711)  # the server's user must reach its data directory
            with self.files.folders(members, identity, root, check_files) as folders:
                self._verifybackup(run, folders[-1])
                check_copies(self.files, run)
                if not deep:
                    return ()
                datadir = root / "pgdata"
                places = {oid: root / f"tblspc-{oid}" for oid in  # removed with root
                          tablespaces.archives(folders[-1])}
                self._rebuild(folders, datadir, sync=False, places=places)
            return self._table_rows(run, datadir)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def _verifybackup(self, run: Run, folder: Path) -> None:
        verifier = tool(self.binaries, "pg_verifybackup", 18)
        out = subprocess.run([verifier, "--quiet", "--no-parse-wal", f"--ignore={SUMS}",
                              str(folder)], capture_output=True, text=True, check=False,
                             stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            raise Corrupt(f"backup {run.id}: pg_verifybackup: "
                          f"{' / '.join(out.stderr.strip().splitlines()[-3:])}")

    # -- restore ------------------------------------------------------------

    def restore_request(self, run_id: int, target_directory: str,
                        target_time: datetime | None, target_lsn: str, requested_by: str,
                        background: bool, identity: str = "",
                        tablespace_mapping: Sequence[str] = ()) -> RestoreRun:
        """A restore request for a physical backup, checked, recorded as a restore run
        (its target is the directory) and executed, admitted and held like the restore
        service's own (:class:`~..restore.admission.Admission`)."""
        run = succeeded_backup(self.store, run_id, "restored")
        if not run.kind.physical:
            raise InvalidArgument(
                f"target_directory: backup {run.id} is a logical (pg_dump) backup; it restores "
                "into a database: use target_database")
        output = self.check_request(run, target_directory, target_time, target_lsn,
                                    tablespace_mapping)
        self.check_identity(run, identity)
        self.admission.admit()
        busy = str(output)
        self.admission.claim(busy, "target_directory")
        try:
            record = self.restores.create(
                backup_id=run.id, target_database=busy, requested_by=requested_by[:255],
                schemas=(), tables=(), jobs=0, overwrite=False, started_at=self.clock())
            self.admission.bind(busy, record.id)
            log.info("Restore started", restore_id=record.id, backup_id=run.id,
                     target_directory=busy, target_time=str(target_time or ""),
                     target_lsn=target_lsn, requested_by=requested_by)
        except BaseException:
            self.admission.release(busy)
            raise

        def execute() -> RestoreRun:
            bound = log.bind(restore_id=record.id, backup_id=run.id, target_directory=busy)
            try:
                self.restore(run, output, target_time=target_time, target_lsn=target_lsn,
                             identity=identity, tablespace_mapping=tablespace_mapping)
            except (ToolFailed, Corrupt, BackupError) as exc:
                reason = exc.message if isinstance(exc, BackupError) else exc.reason
                self.restores.mark_failed(record.id, finished_at=self.clock(),
                                          error=reason)
                bound.error("Restore failed", error=reason)
                raise RestoreFailed(f"restore {record.id} of backup {run.id} failed: "
                                    f"{reason}") from None
            except Exception as exc:
                bound.exception("Restore crashed")
                self.restores.mark_failed(record.id, finished_at=self.clock(),
                                          error=f"internal error: {exc}")
                raise RestoreFailed(f"restore {record.id} of backup {run.id} failed: "
                                    f"internal error: {exc}") from None
            finally:
                self.admission.release(busy)
            self.restores.mark_succeeded(record.id, finished_at=self.clock())
            done = self.restores.get(record.id)
            bound.info("Restore completed successfully", duration_seconds=done.duration_seconds)
            return done

        if background:
            if self.admission.submit(execute) is None:
                self.admission.release(busy)
                self.restores.mark_failed(record.id, finished_at=self.clock(),
                                          error="cancelled: the service shut down")
                raise Unavailable("the service is shutting down; retry on the next instance")
            return record
        return execute()

    def restore(self, run: Run, output: Path, *, target_time: datetime | None,
                target_lsn: str, identity: str = "",
                tablespace_mapping: Sequence[str] = ()) -> None:
        """Rebuild ``run``'s chain into ``output``, verified, its tablespaces where
        ``tablespace_mapping`` says or where they were; recovery settings for a point in
        time. Raises ToolFailed or Corrupt with the reason."""
        members = self.chain_of(run)
        mapping = tablespaces.parse_mapping(tablespace_mapping)
        with self.files.folders(members, identity, output.parent, check_files,
                                repair=True) as folders:
            places = tablespaces.places(self.tablespaces_of(run, folders[-1]), mapping,
                                        output, f"backup {run.id}")
            self._rebuild(folders, output, places=places)
        if target_time is not None or target_lsn:
            target = next((t for t in self.settings.targets if t.name == run.target), None)
            program = target.wal.fetch_command if target and target.wal else None
            write_recovery(output, command=restore_command(self.address(), run.target,
                                                           program),
                           target_time=target_time, target_lsn=target_lsn)

    def _rebuild(self, folders: list[Path], output: Path, *, sync: bool = True,
                 places: Mapping[str, Path] | None = None) -> None:
        try:
            rebuild(folders, output,
                    pg_combinebackup=tool(self.binaries, "pg_combinebackup", 17),
                    pg_verifybackup=tool(self.binaries, "pg_verifybackup", 17), sync=sync,
                    places=places)
        except CombineFailed as exc:
            raise ToolFailed(str(exc)) from None

    def _table_rows(self, run: Run, datadir: Path) -> tuple[TableRows, ...]:
        """Start a throwaway server on ``datadir``, count the rows of the databases'
        tables, stop it."""
        from .scratch import ThrowawayServer

        user = self.settings.targets[0].database.conninfo.get("user") or "postgres"
        target = next((t for t in self.settings.targets if t.name == run.target), None)
        if target is not None:
            user = target.database.conninfo.get("user") or user
        with ThrowawayServer(datadir, self.binaries) as server:
            return server.table_rows(user)


def check_files(run: Run) -> None:
    """The files of one physical backup against its SHA256SUMS."""
    path = Path(run.file_path)
    if not path.is_dir():
        raise Corrupt(f"backup {run.id}: {path} is missing from disk")
    sums = path / SUMS
    try:
        lines = sums.read_text().splitlines()
    except OSError:
        raise Corrupt(f"backup {run.id}: {SUMS} is missing from {path}") from None
    listed = {}
    for line in lines:
        digest, _, name = line.partition("  ")
        listed[name] = digest
    for name, digest in listed.items():
        file = path / name
        if not file.is_file():
            raise Corrupt(f"backup {run.id}: {name} is missing from {path}")
        if file_sha256(file) != digest:
            raise Corrupt(f"backup {run.id}: {name} has changed since it was written "
                          f"(SHA-256 differs) in {path}")
    extra = sorted(set(os.listdir(path)) - set(listed) - {SUMS})
    if extra:
        raise Corrupt(f"backup {run.id}: unexpected file {extra[0]} in {path}")
    if MANIFEST not in listed:
        raise Corrupt(f"backup {run.id}: {MANIFEST} is missing from {path}")
