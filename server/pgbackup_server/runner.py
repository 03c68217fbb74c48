"""Runs one pg_dump into a file: streamed, hashed, fsynced, then published.

pg_dump writes to a pipe; this process copies it to a private temporary file
(compressing with ``zstandard`` when pg_dump cannot), hashing on the way, so
size and SHA-256 come free and nothing is ever buffered whole. The file gets
its final name only after pg_dump exited 0 and the data is on disk; on any
failure the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from .config import BackupConfig
from .errors import BackupFailed, ConfigError, FailedPrecondition, PgDumpFailed
from .files import (
    create_private_file,
    free_temp_path,
    fsync_dir,
    publish,
    publish_directory,
    remove_quietly,
)
from .pgtools import PgBinary, scrub

CHUNK = 1 << 20
# libpq parameters that hold secrets: never on a command line.
SECRET_PARAMS = frozenset({"password", "sslpassword"})
STDERR_TAIL = 4000
KILL_GRACE_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class DumpPlan:
    """How one run is dumped: the pg_dump arguments and who compresses."""

    binary: PgBinary
    format: str  # plain or custom
    compression: str  # "none", "gzip:6", "zstd:1"... as recorded on the run
    pg_dump_compress: str | None  # value for pg_dump --compress, or None
    zstd_level: int | None  # compress in-process with zstandard at this level
    extension: str
    jobs: int = 1  # parallel pg_dump jobs (directory format only)
    globals_only: bool = False  # pg_dumpall --globals-only: roles and tablespaces

    def for_globals(self) -> DumpPlan:
        """The plan for the server's globals: plain SQL from pg_dumpall, compressed
        in-process when this plan compresses with zstd."""
        if self.zstd_level is not None or self.compression.startswith("zstd"):
            level = self.zstd_level or int(self.compression.partition(":")[2] or 1)
            return DumpPlan(self.binary, "plain", f"zstd:{level}", None, level, ".sql.zst",
                            globals_only=True)
        return DumpPlan(self.binary, "plain", "none", None, None, ".sql", globals_only=True)


def needed_capability(format: str, compression_method: str | None) -> str | None:
    """The compression method the pg_dump build must support for an explicit
    ``backup.compression`` in ``format``; None when any build will do (gzip is in
    every build, and zstd for plain SQL is done in-process)."""
    if compression_method in (None, "none", "gzip"):
        return None
    if format == "plain" and compression_method == "zstd":
        return None
    return compression_method


def _capability_fix(method: str) -> str:
    return (f"install a {method}-capable pg_dump (pip install '.[zstd]' on Python 3.12+, or "
            "your distribution's postgresql-client) or set backup.compression: gzip")


def check_compression_support(backup: BackupConfig, binaries: list[PgBinary],
                              supports: Callable[[str, str], bool]) -> None:
    """At startup (and ``--check-config``): refuse an explicit ``backup.compression``
    that no pg_dump found here can write, instead of failing every backup later."""
    method = needed_capability(backup.format, backup.compression.method
                               if backup.compression else None)
    if method is None or not binaries or any(supports(b.path, method) for b in binaries):
        return
    found = ", ".join(f"{b.version} {b.path}" for b in binaries)
    raise ConfigError(f"backup.compression: no pg_dump found here supports {method} for "
                      f"format {backup.format} (found: {found}); {_capability_fix(method)}")


def plan_dump(binary: PgBinary, *, format: str, compression_method: str | None,
              compression_level: int, compress_backup: bool,
              supports: Callable[[str, str], bool], jobs: int = 1) -> DumpPlan:
    """Decide format, compression and extension for a run.

    ``compressBackup`` without an explicit compression means zstd level 1,
    the cheapest good setting measured here: inside pg_dump (custom format)
    where the build has zstd, else plain SQL streamed through ``zstandard``.
    An explicit ``backup.compression`` the chosen pg_dump cannot write is
    FAILED_PRECONDITION (startup refuses it when no pg_dump here can).
    """
    method, level = compression_method, compression_level
    if method is None:
        method, level = ("zstd", 1) if compress_backup else ("none", 0)
        if compress_backup and format == "plain" and supports(binary.path, "zstd"):
            format = "custom"
    label = "none" if method == "none" else f"{method}:{level}"
    needed = needed_capability(format, compression_method)
    if needed is not None and not supports(binary.path, needed):
        raise FailedPrecondition(
            f"backup.compression: {label} with format {format} needs a pg_dump built with "
            f"{needed} support, and pg_dump {binary.version} ({binary.path}), the one chosen "
            f"for this server, was built without it; {_capability_fix(needed)}")
    if format == "directory":
        if method != "none" and not supports(binary.path, method):
            # compressBackup on a build without zstd: gzip at its cheapest level.
            method, level, label = "gzip", 1, "gzip:1"
        return DumpPlan(binary, "directory", label, "0" if method == "none" else label, None,
                        ".dir", jobs=jobs)
    if format == "custom":
        if method != "none" and not supports(binary.path, method):
            # compressBackup on a build without zstd: the format the operator chose,
            # with gzip at its cheapest level.
            return DumpPlan(binary, "custom", "gzip:1", "gzip:1", None, ".dump")
        return DumpPlan(binary, "custom", label, "0" if method == "none" else label, None,
                        ".dump")
    if method == "none":
        return DumpPlan(binary, "plain", label, None, None, ".sql")
    if method == "zstd":
        # pg_dump can write a zstd plain dump too, but in-process keeps one code path
        # for every build and measured within noise of pg_dump's own.
        return DumpPlan(binary, "plain", label, None, level, ".sql.zst")
    return DumpPlan(binary, "plain", label, label, None, {"gzip": ".sql.gz",
                                                          "lz4": ".sql.lz4"}[method])


@dataclass(frozen=True, slots=True)
class DumpOutcome:
    path: Path
    size_bytes: int
    sha256: str
    bytes_in: int  # what pg_dump produced, before in-process compression


class _HashingWriter:
    """File-like sink that writes to an fd and hashes what it writes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.size = 0
        self.hash = hashlib.sha256()

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data)
        self.hash.update(view)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def _death_signal_prefix() -> list[str]:
    """``setpriv --pdeathsig KILL`` makes pg_dump die with the thread that started
    it, so a killed backupd never leaves a pg_dump behind (that thread waits for
    the child). Without setpriv, pg_dump still dies on its next write to the
    closed pipe. (A Python preexec_fn would do the same but crashes children of
    a threaded gRPC process.)"""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return []
    probe = subprocess.run([setpriv, "--pdeathsig", "KILL", "true"], capture_output=True,
                           check=False)
    return [setpriv, "--pdeathsig", "KILL", "--"] if probe.returncode == 0 else []


_PREFIX: list[str] | None = None


def death_signal_prefix() -> list[str]:
    global _PREFIX
    if _PREFIX is None:
        _PREFIX = _death_signal_prefix()
    return _PREFIX


def _write_passfile(password: str, directory: str) -> str:
    fd, path = tempfile.mkstemp(prefix="pgpass-", dir=directory)
    # libpq wants \ and : escaped; the wildcards keep the file valid for any host.
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    with os.fdopen(fd, "w") as f:
        f.write(f"*:*:*:*:{escaped}\n")
    os.chmod(path, 0o600)
    return path


def child_env(conninfo: Mapping[str, str], runtime_dir: str) -> tuple[dict[str, str], str | None]:
    """Environment for a libpq client: the password goes in a private passfile,
    never on the command line."""
    env = dict(os.environ)
    password = conninfo.get("password")
    if not password:
        return env, None  # the operator's own PGPASSWORD/PGPASSFILE/~/.pgpass apply
    passfile = _write_passfile(password, runtime_dir)
    env["PGPASSFILE"] = passfile
    env.pop("PGPASSWORD", None)
    return env, passfile


def dbname_argument(conninfo: Mapping[str, str]) -> str:
    """The connection string for argv, without the password."""
    from psycopg.conninfo import make_conninfo

    return make_conninfo("", **{k: v for k, v in conninfo.items() if k not in SECRET_PARAMS})


class DumpProcess:
    """One pg_dump child with a deadline and a way to cancel it."""

    def __init__(self, plan: DumpPlan, conninfo: Mapping[str, str], runtime_dir: str, *,
                 kill_grace: float = KILL_GRACE_SECONDS) -> None:
        self.plan = plan
        self.kill_grace = kill_grace
        self.conninfo = dict(conninfo)
        self.runtime_dir = runtime_dir
        self._proc: subprocess.Popen[bytes] | None = None
        self._stop_reason: str | None = None
        self._lock = threading.Lock()

    def argv(self, output: Path | None = None) -> list[str]:
        if self.plan.globals_only:
            return [self.plan.binary.sibling("pg_dumpall"), "--globals-only", "--no-password",
                    f"--dbname={dbname_argument(self.conninfo)}"]
        args = [self.plan.binary.path, f"--format={self.plan.format}", "--no-password"]
        if self.plan.pg_dump_compress is not None:
            args.append(f"--compress={self.plan.pg_dump_compress}")
        if output is not None:  # the directory format cannot stream to a pipe
            args += [f"--file={output}", f"--jobs={self.plan.jobs}"]
        args.append(f"--dbname={dbname_argument(self.conninfo)}")
        return args

    def stop(self, reason: str) -> None:
        """Terminate the whole process group: SIGTERM, then SIGKILL after a grace."""
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = reason
            proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        _signal_group(proc, signal.SIGTERM)
        threading.Thread(target=self._kill_later, args=(proc,), daemon=True).start()

    def _kill_later(self, proc: subprocess.Popen[bytes]) -> None:
        try:
            proc.wait(self.kill_grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)

    def run(self, directory: Path, stem: str, run_id: int, timeout: float,
            on_progress: Callable[[int], None] | None = None, *,
            temp: Path | None = None) -> DumpOutcome:
        """Dump into ``directory`` as ``stem`` + extension; raise on any failure.
        ``temp``: the temporary path (default: a free one, see files.free_temp_path)."""
        if temp is None:
            temp = free_temp_path(directory, f"{stem}{self.plan.extension}", run_id)
        if self.plan.format == "directory":
            return self._run_directory(directory, temp, stem, timeout, on_progress)
        try:
            fd = create_private_file(temp)
        except OSError as exc:  # nothing of ours to remove: the name was not ours
            raise BackupFailed(f"cannot create the temporary file {temp}: "
                               f"{exc.strerror or exc}") from None
        passfile: str | None = None
        try:
            env, passfile = child_env(self.conninfo, self.runtime_dir)
            proc, tail, reader, timer = self._start(self.argv(), env, subprocess.PIPE, timeout)
            assert proc.stdout is not None
            try:
                writer = _HashingWriter(fd)
                bytes_in = self._copy(proc.stdout, writer, on_progress)
            except OSError as exc:
                self.stop("write failed")
                proc.wait()
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
                if exc.errno == errno.ENOSPC:
                    reason = "no space left on device"
                elif exc.errno == errno.EFBIG:
                    reason = "file too large (the process file-size limit was reached)"
                raise BackupFailed(f"writing {temp.name} failed: {reason}") from None
            except BaseException as exc:
                # Nobody reads the pipe any more: pg_dump would block on it forever.
                self.stop(f"internal error while copying: {exc!r}")
                raise
            finally:
                returncode = proc.wait()
                timer.cancel()
                proc.stdout.close()
                reader.join(5)
            self._check_exit(returncode, tail, temp)
            os.fsync(fd)
            os.close(fd)
            fd = -1
            final = publish(temp, directory, stem, self.plan.extension)
            return DumpOutcome(final, writer.size, writer.hash.hexdigest(), bytes_in)
        except BaseException:
            if fd >= 0:
                os.close(fd)
                fd = -1
            # A directory that turned read-only keeps the file: the next start removes
            # it; the run's own error is the one to report.
            with contextlib.suppress(OSError):
                remove_quietly(temp)
                fsync_dir(directory)
            raise
        finally:
            if fd >= 0:
                os.close(fd)
            if passfile:
                remove_quietly(passfile)

    def _start(self, argv: list[str], env: dict[str, str], stdout: int,
               timeout: float) -> tuple[subprocess.Popen[bytes], deque[bytes],
                                        threading.Thread, threading.Timer]:
        """Spawn pg_dump in its own process group, keep the tail of its stderr,
        and arm the backup.timeout timer."""
        with self._lock:
            if self._stop_reason is not None:
                raise BackupFailed(self._stop_reason)
            self._proc = subprocess.Popen(
                [*death_signal_prefix(), *argv], stdin=subprocess.DEVNULL, stdout=stdout,
                stderr=subprocess.PIPE, env=env, start_new_session=True)
        proc = self._proc
        assert proc.stderr is not None
        tail: deque[bytes] = deque(maxlen=64)
        reader = threading.Thread(target=_drain, args=(proc.stderr, tail), daemon=True)
        reader.start()
        timer = threading.Timer(timeout, self.stop,
                                args=(f"timed out after {_human(timeout)} (backup.timeout)",))
        timer.daemon = True
        timer.start()
        return proc, tail, reader, timer

    def _check_exit(self, returncode: int, tail: deque[bytes], temp: Path) -> None:
        """Raise why the run failed: stopped (timeout, shutdown), or pg_dump's exit."""
        if self._stop_reason is not None:
            raise BackupFailed(self._stop_reason)
        if returncode != 0:
            text = b"".join(tail).decode("utf-8", "replace")[-STDERR_TAIL:]
            if "No space left on device" in text:
                raise BackupFailed(f"writing {temp.name} failed: no space left on device")
            raise PgDumpFailed(returncode, scrub(text, self.conninfo))

    def _run_directory(self, directory: Path, temp: Path, stem: str, timeout: float,
                       on_progress: Callable[[int], None] | None) -> DumpOutcome:
        """pg_dump -Fd -j N into a private temporary directory, published by rename.
        The backup stays a directory (pg_restore -j reads it as is)."""
        env, passfile = child_env(self.conninfo, self.runtime_dir)
        # pg_dump creates the directory itself and wants it absent; its parent is private.
        try:
            proc, tail, reader, timer = self._start(self.argv(temp), env, subprocess.DEVNULL,
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
                reader.join(5)
            self._check_exit(returncode, tail, temp)
            os.chmod(temp, 0o700)
            private_files(temp)
            size, digest = tree_digest(temp)
            final = publish_directory(temp, directory, stem, self.plan.extension)
            return DumpOutcome(final, size, digest, size)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        finally:
            if passfile:
                remove_quietly(passfile)

    def _copy(self, source: IO[bytes], writer: _HashingWriter,
              on_progress: Callable[[int], None] | None) -> int:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        sink: Any = writer
        compressor = None
        if self.plan.zstd_level is not None:
            import zstandard

            # threads=2 measured fastest with flat memory (~28 MB) on this 2-core class.
            compressor = zstandard.ZstdCompressor(level=self.plan.zstd_level, threads=2,
                                                  write_checksum=True)
            sink = compressor.stream_writer(cast(IO[bytes], writer), closefd=False)
        seen = 0
        # One read(2) per call: the buffered reader would wait for a full MiB while
        # pg_dump stalls on the 64 KiB pipe (measured: 1.4x slower than pg_dump -f).
        readinto = cast(Any, getattr(source, "raw", source)).readinto
        write = sink.write
        while True:
            n = readinto(buf)
            if not n:
                break
            write(view[:n])
            seen += n
            if on_progress is not None:
                try:
                    on_progress(seen)
                except Exception:  # progress is a nicety; never let it stop a backup
                    on_progress = None
        if compressor is not None:
            sink.close()
        return seen


def private_files(path: Path) -> None:
    """Make the files pg_dump wrote in a directory backup 0600 (it creates them with
    its umask, 0644 by default), like every other backup file."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for entry in os.scandir(fd):
            if entry.is_file(follow_symlinks=False):
                os.chmod(entry.name, 0o600, dir_fd=fd)
    finally:
        os.close(fd)


def tree_size(path: Path) -> int:
    total = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def tree_digest(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of a directory backup: the hash of a sorted manifest of
    ``<sha256>  <name>`` lines, one per file (verification recomputes the same)."""
    manifest = hashlib.sha256()
    total = 0
    for name in sorted(os.listdir(path)):
        file_hash = hashlib.sha256()
        with open(path / name, "rb") as f:
            while chunk := f.read(CHUNK):
                file_hash.update(chunk)
                total += len(chunk)
        manifest.update(f"{file_hash.hexdigest()}  {name}\n".encode())
    return total, manifest.hexdigest()


def _drain(stream: IO[bytes], tail: deque[bytes]) -> None:
    for line in iter(stream.readline, b""):
        tail.append(line)
    stream.close()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _human(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{s}s" if s or not (h or m) else "")
