"""Verification of a backup file: quick (size and SHA-256 against the run record,
then the format's own structure) and the restore-and-count core of deep
verification; and the listener that verifies each scheduled backup."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from ..backup.files import tree_digest
from ..domain.errors import FailedPrecondition
from ..domain.models import Run, RunKind, RunStatus, Trigger, VerifyMode
from ..domain.ports import Listener
from ..postgres.conninfo import ConnInfo
from .archive import data_sizes, read_archive
from .databases import create_database, row_counts
from .models import Corrupt, TableRows, ToolFailed, unreadable
from .plain import Decoder, check_plain_end, compression_method, raw_chunks
from .tools import ToolRunner, summary

if TYPE_CHECKING:
    from .service import RestoreService
    from .source import Source

log = structlog.get_logger("pgbackup")

_TAIL_BYTES = 64 * 1024


def quick_check(run: Run, tools: ToolRunner) -> None:
    """The file is there, as recorded, and readable in its format; else Corrupt."""
    path = Path(run.file_path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise Corrupt(f"file {path} is missing from disk") from None
    except OSError as exc:
        raise unreadable(path, exc) from None
    if run.format == "directory":
        if not stat.S_ISDIR(st.st_mode):
            raise Corrupt(f"{path} is not a directory")
        check_digest(run)
    else:
        if not stat.S_ISREG(st.st_mode):
            raise Corrupt(f"{path} is not a regular file")
        if run.format == "plain":
            _check_plain(run)
            return
        check_digest(run)
    tool = tools.find(run, "pg_restore")
    out = subprocess.run([tool, "--list", str(path)], capture_output=True, check=False,
                         stdin=subprocess.DEVNULL)
    err = out.stderr.decode("utf-8", "replace")
    if out.returncode != 0:
        raise Corrupt(f"pg_restore --list cannot read the archive: {summary(err)}")
    if "does not support compression" in err:
        raise FailedPrecondition(f"{tool} cannot decompress this archive ({summary(err)}); "
                                 "install a pg_restore built with its compression")
    # --list reads only the TOC: walk the data blocks (or files) too, so an archive
    # cut short after its TOC is caught without decompressing anything.
    archive = read_archive(path)
    sizes = data_sizes(path, archive)
    lacking = [e for e in archive.entries if e.has_data and e.dump_id not in sizes]
    if lacking:
        e = lacking[0]
        raise Corrupt(f"the archive has no data for {len(lacking)} of its entries, "
                      f"first {e.desc} {e.namespace}.{e.tag}".replace(" .", " "))


def quick_verify(run: Run, source: Source, tools: ToolRunner) -> None:
    """The local file as :func:`quick_check` does; an encrypted one by size and SHA-256
    (no identity needed); each copy at an object store by size and checksum."""
    remote = source.remote_copies(run)
    if source.is_direct(run) or not remote and not run.encryption:
        quick_check(run, tools)
    elif source.local_file(run):
        check_digest(run)
    elif not remote:
        raise Corrupt(f"file {run.file_path} is missing from disk and no destination holds "
                      "a copy")
    for dest, copy in remote:
        how = source.quick_check_copy(run, dest, copy)
        log.debug("Copy checked", run_id=run.id, destination=dest.name, checked=how)


def check_digest(run: Run) -> None:
    """Size and SHA-256 of the file (or directory tree) against the run record."""
    path = Path(run.file_path)
    if run.format == "directory":
        try:
            size, digest = tree_digest(path)
        except OSError as exc:
            raise unreadable(path, exc) from None
    else:
        digest_obj = hashlib.sha256()
        size = 0
        for chunk in raw_chunks(path):
            digest_obj.update(chunk)
            size += len(chunk)
        digest = digest_obj.hexdigest()
    check_recorded(run, size, digest)


def _check_plain(run: Run) -> None:
    """One pass: hash, decompress and check the end of the SQL."""
    digest = hashlib.sha256()
    decoder = Decoder(compression_method(run))
    size, head, tail = 0, b"", b""
    problem: Corrupt | None = None
    for chunk in raw_chunks(Path(run.file_path)):
        digest.update(chunk)
        size += len(chunk)
        if problem is not None:
            continue  # keep hashing: a checksum mismatch is the better reason
        try:
            sql = decoder.feed(chunk)
        except Corrupt as exc:
            problem = exc
            continue
        if len(head) < _TAIL_BYTES:
            head += sql[:_TAIL_BYTES - len(head)]
        tail = (tail + sql)[-_TAIL_BYTES:]
    check_recorded(run, size, digest.hexdigest())
    if problem is not None:
        raise problem
    decoder.finish()
    check_plain_end(head, tail)


def check_recorded(run: Run, size: int, digest: str) -> None:
    """Size and SHA-256 as read against the run record; else Corrupt."""
    path = run.file_path
    if run.size_bytes and size != run.size_bytes:
        if size < run.size_bytes:
            raise Corrupt(f"file {path} is truncated: {size} bytes on disk, {run.size_bytes} "
                          "were written")
        raise Corrupt(f"file {path} has changed: {size} bytes on disk, {run.size_bytes} were "
                      "written")
    if run.sha256 and digest != run.sha256:
        raise Corrupt(f"SHA-256 mismatch: file {path} hashes to {digest}, the backup recorded "
                      f"{run.sha256}")


def deep_check(tools: ToolRunner, server: ConnInfo, run: Run,
               scratch: str) -> tuple[TableRows, ...]:
    """Create ``scratch``, restore the backup into it and count every table's rows.
    Dropping it is the caller's (who registered it)."""
    create_database(server, scratch)
    try:
        tools.load(server, run, scratch, jobs=1)
    except ToolFailed as exc:
        if tools.cancelled:  # a shutdown, not a bad backup: no false alarm
            raise
        raise Corrupt(f"restore into a scratch database failed: {exc.reason}") from None
    return row_counts(server, scratch)


class VerifyAfterBackup(Listener):
    """Runs ``backup.verify`` (quick or deep) after each successful scheduled backup,
    in the restore service's pool so the backup slot is not held."""

    def __init__(self, service: RestoreService, mode: str | None = None) -> None:
        self.service = service
        self.mode = VerifyMode(mode) if mode else service.config.backup.verify

    def on_run_finished(self, run: Run) -> None:
        if (self.mode is VerifyMode.NONE or run.trigger is not Trigger.SCHEDULE
                or run.status is not RunStatus.SUCCEEDED):
            return
        # Globals (roles, tablespaces) are never restored into a scratch database:
        # they get the quick check.
        deep = self.mode is VerifyMode.DEEP and run.kind is not RunKind.GLOBALS
        if self.service.verify_in_background(run.id, deep=deep) is None:
            log.warning("Verification after backup skipped: the service is shutting down",
                        run_id=run.id)
