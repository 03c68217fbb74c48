"""One pg_basebackup of a whole cluster into a private temporary directory, then
published under its final name.

A physical backup is a directory (``backup_<target>_<stamp>.full`` or ``.incr``)
holding what pg_basebackup wrote in tar format, and two files of ours:

- ``base.tar.gz``: the data directory, compressed by the server (``server-gzip:1``,
  measured fastest here: the backend compresses while the client writes);
- ``pg_wal.tar.gz``: the WAL the backup needs, streamed on a second connection
  (``-X stream``) and gzipped here (pg_basebackup leaves it uncompressed with server
  compression: a 16 MiB segment that would dwarf a small incremental);
- ``backup_manifest``: pg_basebackup's manifest, kept beside the tars: the parent
  of the next incremental (``--incremental``), and what pg_verifybackup checks;
- ``SHA256SUMS``: the SHA-256 of each of those files, so verification names the
  file that changed or went missing.

Like every backup, nothing is published until pg_basebackup exited 0 and the
files are on disk; the directory is 0700 and its files 0600.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..backup.files import (
    CHUNK,
    file_hash,
    fsync_dir,
    manifest_digest,
    private_files,
    publish_directory,
)
from ..domain.durations import human_duration
from ..domain.errors import BackupFailed, FailedPrecondition, PgDumpFailed
from ..postgres.clients import (
    StderrTail,
    StoppableChild,
    client_env,
    death_signal_prefix,
)
from ..postgres.conninfo import ConnInfo

SUMS = "SHA256SUMS"
MANIFEST = "backup_manifest"
COMPRESS = "server-gzip:1"
KILL_GRACE_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class BaseBackupOutcome:
    path: Path
    size_bytes: int
    sha256: str
    start_lsn: str
    end_lsn: str
    timeline: int


def argv(pg_basebackup: str, conninfo: ConnInfo, output: Path,
         parent_manifest: Path | None) -> list[str]:
    """The command line: no password (it is in a private passfile), tar format."""
    args = [pg_basebackup, f"--pgdata={output}", "--format=tar", f"--compress={COMPRESS}",
            "--wal-method=stream", "--checkpoint=fast", "--no-password",
            f"--label=pgbackup {output.name}", f"--dbname={conninfo.argv_dsn()}"]
    if parent_manifest is not None:
        args.insert(1, f"--incremental={parent_manifest}")
    return args


class BaseBackupProcess(StoppableChild):
    """One pg_basebackup child with a deadline and a way to stop it."""

    def __init__(self, pg_basebackup: str, conninfo: ConnInfo, runtime_dir: str, *,
                 kill_grace: float = KILL_GRACE_SECONDS) -> None:
        super().__init__(kill_grace)
        self.pg_basebackup = pg_basebackup
        self.conninfo = conninfo
        self.runtime_dir = runtime_dir

    def run(self, directory: Path, stem: str, extension: str, temp: Path, timeout: float,
            parent_manifest: Path | None = None,
            on_progress: Callable[[int], None] | None = None) -> BaseBackupOutcome:
        """Back up into ``temp`` (absent; pg_basebackup creates it), then publish it as
        ``directory/stem+extension``; raise on any failure, leaving nothing behind."""
        try:
            with client_env(self.conninfo, self.runtime_dir) as env:
                with self._lock:
                    if self._stop_reason is not None:
                        raise BackupFailed(self._stop_reason)
                    self._proc = subprocess.Popen(
                        [*death_signal_prefix(),
                         *argv(self.pg_basebackup, self.conninfo, temp, parent_manifest)],
                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE, env=env, start_new_session=True)
                proc = self._proc
                assert proc.stderr is not None
                tail = StderrTail(proc.stderr)
                timer = threading.Timer(timeout, self.stop, args=(
                    f"timed out after {human_duration(timeout)} (backup.timeout)",))
                timer.daemon = True
                timer.start()
                try:
                    while True:
                        try:
                            returncode = proc.wait(1.0)
                            break
                        except subprocess.TimeoutExpired:
                            if on_progress is not None:
                                on_progress(_tree_size(temp))
                finally:
                    timer.cancel()
                    proc.wait()
            if self._stop_reason is not None:
                raise BackupFailed(self._stop_reason)
            if returncode != 0:
                text = tail.text(4000)
                if "No space left on device" in text:
                    raise BackupFailed(f"writing {temp.name} failed: no space left on device")
                if "no pg_hba.conf entry for replication connection" in text:
                    user = self.conninfo.get("user") or "the backup role"
                    raise FailedPrecondition(
                        "the server refuses replication connections from this host "
                        "(pg_hba.conf has no \"replication\" line for it); add one such as "
                        f"\"host replication {user} <this host's address>/32 scram-sha-256\" "
                        "to pg_hba.conf and reload the server")
                raise PgDumpFailed(returncode, self.conninfo.scrub(text), "pg_basebackup")
            return finish(temp, directory, stem, extension)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise


def finish(temp: Path, directory: Path, stem: str, extension: str) -> BaseBackupOutcome:
    """Compress the WAL tar, write the sums, make everything private, fsync, publish.
    Each file is read once: its SHA-256 goes into SHA256SUMS and into the run's digest
    (:func:`~..backup.files.manifest_digest`, from the same hashes)."""
    wal = temp / "pg_wal.tar"
    if wal.exists():
        with open(wal, "rb") as src, gzip.open(temp / "pg_wal.tar.gz", "wb",
                                               compresslevel=1) as dst:
            shutil.copyfileobj(src, dst, CHUNK)
        wal.unlink()
    os.chmod(temp, 0o700)
    names = sorted(n for n in os.listdir(temp) if n != SUMS)
    hashes = {name: file_hash(temp / name) for name in names}
    sums = "".join(f"{hashes[n][1]}  {n}\n" for n in names).encode()
    (temp / SUMS).write_bytes(sums)
    hashes[SUMS] = (len(sums), hashlib.sha256(sums).hexdigest())
    private_files(temp)
    for name in os.listdir(temp):
        fd = os.open(temp / name, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fsync_dir(temp)
    start, end, timeline = wal_range(temp / MANIFEST)
    size = sum(s for s, _ in hashes.values())
    digest = manifest_digest((name, sha) for name, (_, sha) in hashes.items())
    final = publish_directory(temp, directory, stem, extension)
    return BaseBackupOutcome(final, size, digest, start, end, timeline)


def wal_range(manifest: Path) -> tuple[str, str, int]:
    """(start LSN, end LSN, timeline) of a backup, from its backup_manifest."""
    data = json.loads(manifest.read_text())
    ranges = data.get("WAL-Ranges") or [{}]
    first, last = ranges[-1], ranges[0]  # newest timeline first
    return str(first.get("Start-LSN", "")), str(last.get("End-LSN", "")), int(
        last.get("Timeline", 0))


def file_sha256(path: Path) -> str:
    return file_hash(path)[1]


def _tree_size(path: Path) -> int:
    total = 0
    try:
        for entry in os.scandir(path):
            if entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
    except OSError:
        pass
    return total
