"""Runs one pg_dump (or pg_dumpall) into a file: hashed, fsynced, then published.

Two paths, both ending in a private temporary file that gets its final name only
after pg_dump exited 0 and the data is on disk (on any failure it is removed):

- **Fast path** (plain and custom, nothing transformed in-process): pg_dump writes
  the temporary file itself through ``--file=/dev/fd/N`` (the fd is passed to it),
  with ``--no-sync``. A plain dump is hashed as it grows, from the page cache; a
  custom archive after pg_dump exits (pg_dump rewrites its TOC at the start last),
  while it is fsynced. Two busy processes on the machine instead of three, and the
  archive gets data offsets (a file on stdout gets none), which parallel restore and
  quick verification use. Progress is the file's size.
- **Streaming path** (in-process zstd, pg_dumpall, or any extra sink or stage):
  pg_dump writes to a 1 MiB pipe, :func:`pipeline.pump` copies into the sink chain.

The directory format is written by pg_dump itself (``-Fd -j N``) into a private
temporary directory, published by rename.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..domain.durations import human_duration
from ..domain.errors import BackupFailed, PgDumpFailed
from ..domain.models import DumpFormat, RunKind, Stored
from ..postgres.clients import (
    StderrTail,
    StoppableChild,
    client_env,
    death_signal_prefix,
)
from ..postgres.conninfo import ConnInfo
from .files import (
    CHUNK,
    private_files,
    publish_directory,
    tree_digest,
    tree_size,
)
from .naming import free_temp_path
from .pipeline import Extras, LocalFileSink, Sink, build, enlarge_pipe, pump
from .plan import DumpPlan

STDERR_TAIL = 4000
KILL_GRACE_SECONDS = 10.0
_POLL_SECONDS = 0.05  # how long the fast path waits for a plain dump to grow


@dataclass(frozen=True, slots=True)
class DumpOutcome:
    path: Path
    size_bytes: int
    sha256: str
    bytes_in: int  # what pg_dump produced, before in-process compression
    stored: tuple[Stored, ...] = field(default=())  # every sink's, the local file first


class DumpProcess(StoppableChild):
    """One pg_dump child with a deadline and a way to cancel it."""

    def __init__(self, plan: DumpPlan, conninfo: ConnInfo, runtime_dir: str, *,
                 kill_grace: float = KILL_GRACE_SECONDS) -> None:
        super().__init__(kill_grace)
        self.plan = plan
        self.conninfo = conninfo
        self.runtime_dir = runtime_dir

    def argv(self, output: str | None = None) -> list[str]:
        """pg_dump's arguments; ``output`` is a directory (format directory) or the
        ``/dev/fd/N`` of the fast path's temporary file."""
        if self.plan.kind is RunKind.GLOBALS:
            return [self.plan.binary.sibling("pg_dumpall"), "--globals-only", "--no-password",
                    f"--dbname={self.conninfo.argv_dsn()}"]
        args = [self.plan.binary.path, f"--format={self.plan.format}", "--no-password"]
        if self.plan.pg_dump_compress is not None:
            args.append(f"--compress={self.plan.pg_dump_compress}")
        if output is not None:
            args.append(f"--file={output}")
            if self.plan.format is DumpFormat.DIRECTORY:  # the only format -j works for
                args.append(f"--jobs={self.plan.jobs}")
            elif self.plan.binary.major >= 10:  # we fsync once, after hashing
                args.append("--no-sync")
        args.append(f"--dbname={self.conninfo.argv_dsn()}")
        return args

    def fast_path(self, extras: Extras | None = None) -> bool:
        """Whether pg_dump can write the file itself: nothing to do in-process."""
        return (self.plan.kind is RunKind.DATABASE and self.plan.zstd_level is None
                and self.plan.format is not DumpFormat.DIRECTORY and not extras)

    def run(self, directory: Path, stem: str, run_id: int, timeout: float,
            on_progress: Callable[[int], None] | None = None, *,
            temp: Path | None = None, extras: Extras | None = None) -> DumpOutcome:
        """Dump into ``directory`` as ``stem`` + extension; raise on any failure.
        ``temp``: the temporary path (default: a free one, see files.free_temp_path);
        ``extras``: more sinks and stages (see ``pipeline``)."""
        ext = self.plan.extension + (extras.suffix if extras else "")
        if temp is None:
            temp = free_temp_path(directory, f"{stem}{ext}", run_id)
        if self.plan.format is DumpFormat.DIRECTORY:
            return self._run_directory(directory, temp, stem, timeout, on_progress)
        try:
            local = LocalFileSink(temp, directory, stem, ext)
        except OSError as exc:  # nothing of ours to remove: the name was not ours
            error = BackupFailed(f"cannot create the temporary file {temp}: "
                                 f"{exc.strerror or exc}")
            if extras:
                extras.abort(error.message)
            raise error from None
        if self.fast_path(extras):
            return self._run_direct(local, timeout, on_progress)
        return self.run_pipeline(local, build(local, extras, self.plan.zstd_level), timeout,
                                 on_progress)

    def run_pipeline(self, local: LocalFileSink, sink: Sink, timeout: float,
                     on_progress: Callable[[int], None] | None = None) -> DumpOutcome:
        """The streaming path: pg_dump into a 1 MiB pipe, copied into ``sink`` (whose
        chain ends in ``local``, the backup file); aborted on any failure."""
        bytes_in, stored = self.stream(sink, local.temp.name, timeout, on_progress)
        assert local.final is not None
        return DumpOutcome(local.final, local.size, stored[0].sha256, bytes_in, tuple(stored))

    def stream(self, sink: Sink, label: str, timeout: float,
               on_progress: Callable[[int], None] | None = None) -> tuple[int, list[Stored]]:
        """pg_dump into a 1 MiB pipe, copied into ``sink`` and finished; aborted on any
        failure. ``label`` names the backup in errors. Returns (bytes pg_dump produced,
        what the sink stored)."""
        try:
            read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
            try:
                enlarge_pipe(write_fd)
                with client_env(self.conninfo, self.runtime_dir) as env:
                    proc, tail, timer = self._start(self.argv(), env, write_fd, timeout)
                    os.close(write_fd)
                    write_fd = -1
                    try:
                        bytes_in = pump(read_fd, sink, on_progress)
                    except OSError as exc:
                        self.stop("write failed")
                        proc.wait()
                        raise BackupFailed(f"writing {label} failed: "
                                           f"{_write_error(exc)}") from None
                    except BaseException as exc:
                        # Nobody reads the pipe any more: pg_dump would block on it forever.
                        self.stop(f"internal error while copying: {exc!r}")
                        raise
                    finally:
                        returncode = proc.wait()
                        timer.cancel()
            finally:
                os.close(read_fd)
                if write_fd >= 0:
                    os.close(write_fd)
            self._check_exit(returncode, tail, Path(label))
            stored = sink.finish()  # an OSError here names its file (executor)
        except BaseException as exc:
            sink.abort(str(exc))
            raise
        return bytes_in, stored

    def _run_direct(self, local: LocalFileSink, timeout: float,
                    on_progress: Callable[[int], None] | None) -> DumpOutcome:
        """The fast path: pg_dump writes ``local``'s file through /dev/fd/N."""
        try:
            read_fd = os.open(local.temp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                with client_env(self.conninfo, self.runtime_dir) as env:
                    proc, tail, timer = self._start(self.argv(f"/dev/fd/{local.fd}"), env,
                                                    subprocess.DEVNULL, timeout,
                                                    pass_fds=(local.fd,))
                    try:
                        size, digest = _follow(proc, read_fd, local.fd, on_progress,
                                               grows=self.plan.format is DumpFormat.PLAIN)
                    except BaseException as exc:
                        self.stop(f"internal error while hashing: {exc!r}")
                        raise
                    finally:
                        returncode = proc.wait()
                        timer.cancel()
                self._check_exit(returncode, tail, local.temp)
                if returncode == 0 and os.fstat(read_fd).st_size != size:
                    raise BackupFailed(f"{local.temp.name} changed while it was hashed")
            finally:
                os.close(read_fd)
            local.adopt(size, digest)
            stored = local.finish()
        except BaseException as exc:
            local.abort(str(exc))
            raise
        assert local.final is not None
        return DumpOutcome(local.final, size, digest, size, tuple(stored))

    def _start(self, argv: list[str], env: dict[str, str], stdout: int, timeout: float,
               pass_fds: tuple[int, ...] = ()
               ) -> tuple[subprocess.Popen[bytes], StderrTail, threading.Timer]:
        """Spawn pg_dump in its own process group, keep the tail of its stderr,
        and arm the backup.timeout timer."""
        with self._lock:
            if self._stop_reason is not None:
                raise BackupFailed(self._stop_reason)
            self._proc = subprocess.Popen(
                [*death_signal_prefix(), *argv], stdin=subprocess.DEVNULL, stdout=stdout,
                stderr=subprocess.PIPE, env=env, start_new_session=True, pass_fds=pass_fds)
        proc = self._proc
        assert proc.stderr is not None
        tail = StderrTail(proc.stderr)
        timer = threading.Timer(timeout, self.stop, args=(
            f"timed out after {human_duration(timeout)} (backup.timeout)",))
        timer.daemon = True
        timer.start()
        return proc, tail, timer

    def _check_exit(self, returncode: int, tail: StderrTail, temp: Path) -> None:
        """Raise why the run failed: stopped (timeout, shutdown), or pg_dump's exit."""
        if self._stop_reason is not None:
            raise BackupFailed(self._stop_reason)
        if returncode != 0:
            text = tail.text(STDERR_TAIL)
            if "No space left on device" in text:
                raise BackupFailed(f"writing {temp.name} failed: no space left on device")
            program = Path(self.argv()[0]).name
            raise PgDumpFailed(returncode, self.conninfo.scrub(text), program)

    def _run_directory(self, directory: Path, temp: Path, stem: str, timeout: float,
                       on_progress: Callable[[int], None] | None) -> DumpOutcome:
        """pg_dump -Fd -j N into a private temporary directory, published by rename.
        The backup stays a directory (pg_restore -j reads it as is)."""
        # pg_dump creates the directory itself and wants it absent; its parent is private.
        try:
            with client_env(self.conninfo, self.runtime_dir) as env:
                proc, tail, timer = self._start(self.argv(str(temp)), env, subprocess.DEVNULL,
                                                timeout)
                try:
                    while True:
                        try:
                            returncode = proc.wait(1.0)
                            break
                        except subprocess.TimeoutExpired:
                            if on_progress is not None:
                                on_progress(tree_size(temp))
                finally:
                    timer.cancel()
                    proc.wait()
            self._check_exit(returncode, tail, temp)
            os.chmod(temp, 0o700)
            private_files(temp)
            size, digest = tree_digest(temp)
            final = publish_directory(temp, directory, stem, self.plan.extension)
            return DumpOutcome(final, size, digest, size)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise



def _follow(proc: subprocess.Popen[bytes], read_fd: int, write_fd: int,
            on_progress: Callable[[int], None] | None, *, grows: bool) -> tuple[int, str]:
    """Wait for pg_dump; hash its file (``grows``: as it is written, else after it
    exited, while the file is fsynced); size and SHA-256 of the file."""
    digest = hashlib.sha256()
    size = 0

    def progress(seen: int) -> None:
        nonlocal on_progress
        if on_progress is not None:
            try:
                on_progress(seen)
            except Exception:  # progress is a nicety; never let it stop a backup
                on_progress = None

    while proc.poll() is None:
        if grows and (data := os.read(read_fd, CHUNK)):
            digest.update(data)
            size += len(data)
            progress(size)
            continue
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(_POLL_SECONDS if grows else 1.0)
        if not grows:
            progress(os.fstat(write_fd).st_size)
    if proc.returncode != 0:
        return size, digest.hexdigest()
    # Exited: the rest (all of a custom archive) is read while the kernel writes it out.
    syncer = threading.Thread(target=_fsync_quietly, args=(write_fd,), daemon=True)
    syncer.start()
    while data := os.read(read_fd, CHUNK):
        digest.update(data)
        size += len(data)
    syncer.join()
    progress(size)
    return size, digest.hexdigest()


def _fsync_quietly(fd: int) -> None:
    # finish() fsyncs again and reports errors; this one only starts the write-out early.
    with contextlib.suppress(OSError):
        os.fsync(fd)


def _write_error(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    if exc.errno == errno.EFBIG:
        return "file too large (the process file-size limit was reached)"
    return os.strerror(exc.errno) if exc.errno else str(exc)
