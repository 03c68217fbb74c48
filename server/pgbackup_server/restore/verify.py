"""Verification of a backup file: quick (size and SHA-256 against the run record,
then the format's own structure) and the restore-and-count core of deep
verification; and the listener that verifies each scheduled backup."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from ..backup.files import CHUNK, tree_digest
from ..domain.errors import FailedPrecondition
from ..domain.models import Run, RunKind, RunStatus, Trigger, VerifyMode
from ..domain.ports import Clock, Listener, RunStore
from ..postgres.conninfo import ConnInfo
from .archive import check_offsets, data_sizes, read_archive
from .databases import connect, create_database, row_counts
from .models import Corrupt, TableRows, ToolFailed, unreadable
from .plain import Decoder, check_plain_end, compression_method, raw_chunks
from .tools import ToolRunner, summary
from .zstdframes import tail_frames, walk_frames

if TYPE_CHECKING:
    from .plan import Plan
    from .service import RestoreService
    from .source import Source

log = structlog.get_logger("pgbackup")

_TAIL_BYTES = 64 * 1024


def quick_check(run: Run, tools: ToolRunner) -> None:
    """The file is there, as recorded, and readable in its format; else Corrupt.
    Reads the file once (to hash it); the format's structure is checked from the
    page cache by seeking, at the same time for archives."""
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
    elif not stat.S_ISREG(st.st_mode):
        raise Corrupt(f"{path} is not a regular file")
    if run.format == "plain":
        _check_plain(run)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="verify") as pool:
        structure = pool.submit(_check_archive, run, tools, path)
        try:
            check_digest(run)  # a checksum mismatch is the better reason: first
        finally:
            wait([structure])
        structure.result()


class DigestInBackground:
    """:func:`check_digest` in a thread, while the file is read by someone else (a
    restore into a database of its own: the file is read once, from the page cache
    the second time); :meth:`problem` waits for the verdict."""

    def __init__(self, run: Run) -> None:
        self._problem: Corrupt | None = None
        self._thread = threading.Thread(target=self._run, args=(run,), daemon=True,
                                         name=f"digest-{run.id}")
        self._thread.start()

    def _run(self, run: Run) -> None:
        try:
            check_digest(run)
        except Corrupt as exc:
            self._problem = exc
        except Exception as exc:  # never lose the verdict to a surprise
            self._problem = Corrupt(f"cannot check {run.file_path}: {exc}")

    def problem(self) -> Corrupt | None:
        self._thread.join()
        return self._problem


def _hashed_while_loading(plan: Plan) -> bool:
    """A whole restore into a database of its own (dropped on failure) hashes the file
    while it loads, so it is read from disk once; one into an existing database is
    checked before anything changes there; a plain partial one (``toc``) was hashed
    while its sections were read, and a stream from a copy checks itself."""
    return plan.toc is None and plan.mode in ("new", "swap")


def check_before_load(run: Run, plan: Plan, *, streamed: bool = False) -> None:
    if plan.checksum_failure:
        raise Corrupt(plan.checksum_failure)
    if plan.toc is None and not streamed and not _hashed_while_loading(plan):
        check_digest(run)


@contextlib.contextmanager
def digest_alongside(run: Run, plan: Plan, store: RunStore, events: Listener,
                     clock: Clock, *, streamed: bool = False) -> Iterator[None]:
    """Hash the file in a thread while the body loads it (see _hashed_while_loading);
    a failed checksum is the error, whatever the body raised."""
    digest = (DigestInBackground(run) if _hashed_while_loading(plan) and not streamed
              else None)
    try:
        yield
    finally:
        problem = digest.problem() if digest is not None else None
        if problem is not None:  # the better reason, whatever the load said
            raise checksum_failed(store, events, clock, run, problem)


def checksum_failed(store: RunStore, events: Listener, clock: Clock, run: Run,
                    exc: Corrupt) -> ToolFailed:
    """Record on the backup that its file failed its checksum; the restore's error."""
    store.set_verification(run.id, ok=False, reason=exc.reason, verified_at=clock())
    events.on_verification(store.get(run.id), False, exc.reason)
    return ToolFailed(f"the backup file failed its checksum: {exc.reason}")


def _check_archive(run: Run, tools: ToolRunner, path: Path) -> None:
    tool = tools.find(run, "pg_restore")
    out = subprocess.run([tool, "--list", str(path)], capture_output=True, check=False,
                         stdin=subprocess.DEVNULL)
    err = out.stderr.decode("utf-8", "replace")
    if out.returncode != 0:
        raise Corrupt(f"pg_restore --list cannot read the archive: {summary(err)}")
    if "does not support compression" in err:
        raise FailedPrecondition(f"{tool} cannot decompress this archive ({summary(err)}); "
                                 "install a pg_restore built with its compression")
    # --list reads only the TOC: check the data blocks (or files) too, so an archive
    # cut short after its TOC is caught without decompressing anything.
    archive = read_archive(path)
    if archive.format == "custom" and check_offsets(path, archive):
        return
    sizes = data_sizes(path, archive)
    lacking = [e for e in archive.entries if e.has_data and e.dump_id not in sizes]
    if lacking:
        e = lacking[0]
        raise Corrupt(f"the archive has no data for {len(lacking)} of its entries, "
                      f"first {e.desc} {e.namespace}.{e.tag}".replace(" .", " "))


def quick_verify(run: Run, source: Source, tools: ToolRunner) -> None:
    """The local file as :func:`quick_check` does; an encrypted one by size and SHA-256
    (no identity needed); each copy at another destination by size and checksum."""
    remote = source.remote_copies(run)
    if source.is_direct(run) or not remote and not run.encryption:
        quick_check(run, tools)
    elif source.local_file(run):
        check_digest(run)
    elif not remote:
        raise Corrupt(f"file {run.file_path} is missing from disk and no destination holds "
                      "a copy")
    for dest, copy in source.stored_copies(run):
        how = source.quick_check_copy(run, dest, copy)
        log.debug("Copy checked", run_id=run.id, destination=dest.name, checked=how)


def check_digest(run: Run) -> None:
    """Size and SHA-256 of the file (or directory tree) against the run record."""
    path = Path(run.file_path)
    try:
        size, digest = tree_digest(path) if run.format == "directory" else file_digest(path)
    except OSError as exc:
        raise unreadable(path, exc) from None
    check_recorded(run, size, digest)


def file_digest(path: Path, hasher: Any = None) -> tuple[int, str]:
    """Size and SHA-256 of a file, read once in 1 MiB pieces, never through a link."""
    digest = hasher or hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    size = 0
    try:
        while n := os.readv(fd, [buf]):
            digest.update(view[:n])
            size += n
    finally:
        os.close(fd)
    return size, digest.hexdigest()


def _check_plain(run: Run) -> None:
    """Hash the file, then check the SQL's start and end: for zstd through the
    frames' structure and the last frames only (the service writes one per 16 MiB);
    gzip is decompressed whole."""
    method = compression_method(run)
    path = Path(run.file_path)
    if method not in ("none", "zstd"):
        _check_plain_stream(run)
        return
    try:
        size, digest = file_digest(path)
    except OSError as exc:
        raise unreadable(path, exc) from None
    check_recorded(run, size, digest)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise unreadable(path, exc) from None
    try:
        if method == "none":
            head = os.pread(fd, _TAIL_BYTES, 0)
            tail = os.pread(fd, _TAIL_BYTES, max(0, size - _TAIL_BYTES))
        else:
            head, tail = _zstd_ends(fd, path.name)
    finally:
        os.close(fd)
    check_plain_end(head, tail)


def _zstd_ends(fd: int, name: str) -> tuple[bytes, bytes]:
    """The first and last 64 KiB of SQL of a .sql.zst, decompressing only the
    first frame's start and the last two frames."""
    frames = walk_frames(fd, name)
    data = [f for f in frames if not f.skippable]
    if not data:
        raise Corrupt(f"{name}: no zstd frame with data")
    head = b""
    decoder = Decoder("zstd")
    for chunk in _range_chunks(fd, data[0].start, data[0].end):
        for piece in decoder.pieces(chunk):
            head += piece[:_TAIL_BYTES - len(head)]
        if len(head) >= _TAIL_BYTES:
            break
    tail = b""
    decoder = Decoder("zstd")
    last = tail_frames(frames)
    for chunk in _range_chunks(fd, last[0].start, last[-1].end):
        for piece in decoder.pieces(chunk):
            tail = (tail + piece)[-_TAIL_BYTES:]
    decoder.finish()
    return head, tail


def _range_chunks(fd: int, start: int, end: int) -> Iterator[bytes]:
    while start < end:
        chunk = os.pread(fd, min(CHUNK, end - start), start)
        if not chunk:
            return
        start += len(chunk)
        yield chunk


def _check_plain_stream(run: Run) -> None:
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
            for sql in decoder.pieces(chunk):
                if len(head) < _TAIL_BYTES:
                    head += sql[:_TAIL_BYTES - len(head)]
                tail = (tail + sql[-_TAIL_BYTES:])[-_TAIL_BYTES:]
        except Corrupt as exc:
            problem = exc
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


DEEP_JOBS = 2  # pg_restore jobs for deep verification (archives; plain is one psql)
_STATS_WAIT_SECONDS = 30.0

_INSERTED_SQL = """
SELECT n.nspname, c.relname, pg_stat_get_tuples_inserted(c.oid) FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' ORDER BY 1, 2"""


def deep_check(tools: ToolRunner, server: ConnInfo, run: Run,
               scratch: str) -> tuple[TableRows, ...]:
    """Create ``scratch``, restore the backup into it (in parallel for archives) and
    count every table's rows. Dropping it is the caller's (who registered it)."""
    create_database(server, scratch)
    try:
        tools.load(server, run, scratch, jobs=DEEP_JOBS)
    except ToolFailed as exc:
        if tools.cancelled:  # a shutdown, not a bad backup: no false alarm
            raise
        raise Corrupt(f"restore into a scratch database failed: {exc.reason}") from None
    return inserted_rows(server, scratch) or row_counts(server, scratch)


def inserted_rows(server: ConnInfo, dbname: str,
                  wait_seconds: float = _STATS_WAIT_SECONDS) -> tuple[TableRows, ...] | None:
    """Every table's rows as the restore inserted them, from the server's statistics,
    without reading the data again: exact for a database only the restore wrote, once
    its sessions are gone (they flush their counts when they end). None where the
    counts cannot be trusted: before PostgreSQL 15 (statistics were sent by UDP),
    with track_counts off, or when sessions stay longer than ``wait_seconds``."""
    with connect(server, dbname) as conn:
        num, track = conn.execute("SELECT current_setting('server_version_num')::int, "
                                  "current_setting('track_counts')").fetchone()
        if num < 150000 or track != "on":
            return None
        deadline = time.monotonic() + wait_seconds
        while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                           "current_database() AND pid <> pg_backend_pid() AND "
                           "backend_type = 'client backend'").fetchone()[0]:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.02)
    with connect(server, dbname) as conn:  # a new session: a fresh statistics snapshot
        rows = conn.execute(_INSERTED_SQL).fetchall()
    return tuple(TableRows(schema, table, int(n)) for schema, table, n in rows)


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
