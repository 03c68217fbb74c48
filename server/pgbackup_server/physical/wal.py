"""Continuous WAL archiving of physical targets with ``wal.stream: true``.

Each such target gets a supervised ``pg_receivewal`` with its own replication slot
(``pgbackup_<target>``), writing gzip-compressed segments into
``<backup.directory>/wal/<target>/`` (0700, files 0600). The slot keeps WAL on the
server until it is received, so archiving never misses a segment across restarts
of either side; that is also why a stopped archiver is an alert: the server's
disk fills. When the child exits, it is restarted with a growing delay and the
reason is reported in stats.

``fetch`` serves one archived file, decompressed, to ``backupctl wal-fetch`` (the
restore_command of a point-in-time recovery), from a destination's copy when the
local archive no longer has it. Copies at the destinations: ``wal_copies.py``.
"""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..backup.copies import Copier
from ..domain.durations import human_duration
from ..domain.errors import InvalidArgument, NotFound
from ..domain.models import Alert, AlertKind, Run
from ..domain.ports import Clock
from ..postgres.binaries import PgBinary
from ..postgres.clients import StderrTail, client_env, death_signal_prefix, signal_group
from ..settings import Settings, TargetConfig
from . import chain
from .tools import tool
from .wal_copies import WalCopies

log = structlog.get_logger("pgbackup")
_WAL_NAME = re.compile(r"^(?:[0-9A-F]{24}|[0-9A-F]{8}\.history|[0-9A-F]{24}\.[0-9A-F]{8}\.backup)$")
_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class WalArchive:
    """What stats and metrics show of one target's archive (proto ``WalArchive``)."""

    target: str
    streaming: bool
    lag_bytes: int
    lag_seconds: float
    newest_restorable: datetime | None
    last_segment: str
    error: str
    slot: str
    segments: int
    size_bytes: int


def slot_name(target: str) -> str:
    return "pgbackup_" + re.sub(r"[^a-z0-9_]", "_", target.lower())[:50]


class Receiver:
    """One target's pg_receivewal, restarted when it exits."""

    def __init__(self, target: TargetConfig, directory: Path, pg_receivewal: str,
                 runtime_dir: str, clock: Clock) -> None:
        self.target = target
        self.directory = directory
        self.pg_receivewal = pg_receivewal
        self.runtime_dir = runtime_dir
        self.clock = clock
        self.slot = slot_name(target.name)
        self.error = ""
        self.running = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"wal-{target.name}",
                                        daemon=True)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            signal_group(proc, 15)
        self._thread.join(15)

    def _argv(self, *extra: str) -> list[str]:
        return [self.pg_receivewal, f"--directory={self.directory}", f"--slot={self.slot}",
                "--no-password", f"--dbname={self.target.database.conninfo.argv_dsn()}",
                *extra]

    def _loop(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            with client_env(self.target.database.conninfo, self.runtime_dir) as env:
                created = subprocess.run(self._argv("--create-slot", "--if-not-exists"),
                                         capture_output=True, text=True, env=env, check=False)
                if created.returncode != 0:
                    self._failed(created.stderr)
                else:
                    self._proc = subprocess.Popen(
                        [*death_signal_prefix(), *self._argv("--compress=gzip:1",
                                                              "--no-loop")],
                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE, env=env, start_new_session=True)
                    assert self._proc.stderr is not None
                    tail = StderrTail(self._proc.stderr)
                    self.running, self.error = True, ""
                    log.info("WAL archiving started", target=self.target.name, slot=self.slot)
                    code = self._proc.wait()
                    self.running = False
                    if self._stop.is_set():
                        return
                    self._failed(tail.text(1000) or f"pg_receivewal exited with code {code}")
                    delay = 1.0 if code == 0 else delay
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, 60.0)

    def _failed(self, stderr: str) -> None:
        text = self.target.database.conninfo.scrub(stderr).strip().splitlines()
        self.error = f"pg_receivewal: {text[-1] if text else 'stopped'}"
        log.error("WAL archiving stopped; restarting", target=self.target.name,
                  error=self.error)


class WalArchives:
    """Every archiving target's receiver, its status, and the files it archived."""

    def __init__(self, settings: Settings, binaries: list[PgBinary], runtime_dir: Path,
                 clock: Clock, copier: Copier | None = None) -> None:
        self.settings = settings
        self.binaries = binaries
        self.runtime_dir = runtime_dir
        self.clock = clock
        self.targets = {t.name: t for t in settings.targets
                        if t.physical and t.wal is not None and t.wal.stream}
        self.receivers: dict[str, Receiver] = {}
        self.copies = (WalCopies(settings, copier, self.targets, self.directory)
                       if copier is not None else None)

    def directory(self, target: str) -> Path:
        return self.settings.backup.directory / "wal" / target

    def start(self) -> None:
        if not self.targets:
            return
        pg_receivewal = tool(self.binaries, "pg_receivewal")
        for name, target in self.targets.items():
            receiver = Receiver(target, self.directory(name), pg_receivewal,
                                str(self.runtime_dir), self.clock)
            self.receivers[name] = receiver
            receiver.start()
        if self.copies is not None:
            self.copies.start()

    def stop(self) -> None:
        if self.copies is not None:
            self.copies.stop()
        for receiver in self.receivers.values():
            receiver.stop()

    # -- status -------------------------------------------------------------

    def status(self) -> list[WalArchive]:
        return [self._status(name) for name in self.targets]

    def _status(self, name: str) -> WalArchive:
        receiver = self.receivers.get(name)
        files = self.files(name)
        complete = [f for f in files if not f.name.endswith(".partial")]
        newest = max(complete, key=lambda f: f.stat().st_mtime, default=None)
        newest_time = (datetime.fromtimestamp(newest.stat().st_mtime, UTC)
                       if newest is not None else None)
        lag = self._lag_bytes(name)
        lag_seconds = 0.0
        if lag and newest_time is not None:
            lag_seconds = max(0.0, (self.clock() - newest_time).total_seconds())
        return WalArchive(
            target=name, streaming=bool(receiver and receiver.running), lag_bytes=lag,
            lag_seconds=lag_seconds, newest_restorable=newest_time,
            last_segment=newest.name.split(".")[0] if newest else "",
            error=receiver.error if receiver else "not started",
            slot=slot_name(name), segments=len(complete),
            size_bytes=sum(_size(f) for f in files))

    def _lag_bytes(self, name: str) -> int:
        """How far the slot (what the archive holds) is behind the server's WAL."""
        import psycopg

        target = self.targets[name]
        try:
            with psycopg.connect(target.database.conninfo.dsn(connect_timeout="5"),
                                 autocommit=True) as conn:
                row = conn.execute(
                    "SELECT pg_current_wal_lsn() - restart_lsn FROM pg_replication_slots "
                    "WHERE slot_name = %s", (slot_name(name),)).fetchone()
        except psycopg.Error:
            return 0
        return int(row[0] or 0) if row else 0

    def files(self, name: str) -> list[Path]:
        try:
            return [p for p in self.directory(name).iterdir() if p.is_file()]
        except FileNotFoundError:
            return []

    # -- alerts and metrics -------------------------------------------------

    def alerts(self, now: datetime) -> list[tuple[Alert, str]]:
        """``wal_archiving`` alerts: a target whose archiving stopped, or whose archive
        is behind the server by more than ``wal.maxLag``, or whose WAL does not reach a
        destination."""
        out = []
        for status in self.status():
            max_lag = self.targets[status.target].wal.max_lag_seconds  # type: ignore[union-attr]
            copy_errors = self.copies.errors_of(status.target) if self.copies else {}
            if not status.streaming and status.error:  # (no error yet: still starting)
                why = f"WAL archiving of {status.target} stopped: {status.error}"
            elif status.streaming and status.lag_seconds > max_lag:
                why = (f"WAL archiving of {status.target} is {human_duration(status.lag_seconds)}"
                       f" ({status.lag_bytes} bytes) behind the server, more than wal.maxLag "
                       f"({human_duration(max_lag)})")
            elif copy_errors:
                why = f"WAL of {status.target} is not reaching " + "; ".join(
                    f"destination {d!r} ({e})" for d, e in sorted(copy_errors.items()))
            else:
                continue
            out.append((Alert(AlertKind.WAL_ARCHIVING, status.target, now, {
                "target": status.target, "slot": status.slot, "error": status.error,
                "lag_bytes": status.lag_bytes, "lag_seconds": round(status.lag_seconds),
                "copy_errors": "; ".join(f"{d}: {e}" for d, e in sorted(copy_errors.items()))
                }),
                why + f"; the slot {status.slot} keeps WAL on the server meanwhile (drop it "
                "with pg_drop_replication_slot if the archive is abandoned)"))
        return out

    def collector(self) -> Collector:
        """``backup_wal_lag_bytes{target}``, ``backup_wal_lag_seconds{target}``,
        ``backup_wal_newest_restorable_timestamp_seconds{target}``,
        ``backup_wal_streaming{target}``, ``backup_wal_copy_failures_total{target,
        destination}``: read at scrape time."""
        return _WalCollector(self)

    # -- retention ----------------------------------------------------------

    def prune_after_cleanup(self, kept: list[Run]) -> None:
        """After retention: delete each archive's segments older than the start of the
        oldest backup of its target still kept (nothing a kept backup needs)."""
        for name in self.targets:
            doomed = chain.wal_to_delete([p.name for p in self.files(name)],
                                         [r for r in kept if r.target == name])
            for file in doomed:
                (self.directory(name) / file).unlink(missing_ok=True)
            if doomed:
                log.info("Archived WAL deleted by retention", target=name, files=len(doomed),
                         oldest_kept=doomed[-1])
            if self.copies is not None:
                self.copies.prune(name, [r for r in kept if r.target == name])

    # -- restore_command ----------------------------------------------------

    def fetch(self, target: str, name: str) -> Iterator[bytes]:
        """The chunks of one archived file, decompressed; NOT_FOUND when absent (which
        tells PostgreSQL the archive ends there)."""
        if target not in self.targets:
            raise NotFound(f"target: {target!r} has no WAL archive (wal.stream is off or "
                           "it is not a physical target)")
        if not _WAL_NAME.match(name):
            raise InvalidArgument(f"name: {name!r} is not a WAL file name such as "
                                  "000000010000000000000003")
        directory = self.directory(target)
        for candidate, opener in ((directory / f"{name}.gz", gzip.open),
                                  (directory / name, open)):
            if candidate.is_file():
                return _chunks(opener, candidate)
        if self.copies is not None:
            return self.copies.fetch(target, name)
        raise NotFound(f"WAL file {name} is not in the archive of {target!r}")


class _WalCollector(Collector):
    def __init__(self, archives: WalArchives) -> None:
        self.archives = archives

    def collect(self) -> Iterator[Metric]:
        families = {
            "lag_bytes": GaugeMetricFamily("backup_wal_lag_bytes", "Bytes of WAL the "
                                           "archive is behind the server.", labels=["target"]),
            "lag_seconds": GaugeMetricFamily("backup_wal_lag_seconds", "Age of the newest "
                                             "archived WAL while behind.", labels=["target"]),
            "newest": GaugeMetricFamily("backup_wal_newest_restorable_timestamp_seconds",
                                        "Newest point in time a restore can reach.",
                                        labels=["target"]),
            "streaming": GaugeMetricFamily("backup_wal_streaming", "1 while pg_receivewal "
                                           "runs.", labels=["target"]),
        }
        for s in self.archives.status():
            families["lag_bytes"].add_metric([s.target], s.lag_bytes)
            families["lag_seconds"].add_metric([s.target], s.lag_seconds)
            families["newest"].add_metric(
                [s.target], s.newest_restorable.timestamp() if s.newest_restorable else 0)
            families["streaming"].add_metric([s.target], 1 if s.streaming else 0)
        yield from families.values()
        failures = CounterMetricFamily("backup_wal_copy_failures", "Archived WAL files "
                                       "that failed to reach a destination (after retries).",
                                       labels=["target", "destination"])
        copies = self.archives.copies
        for (target, destination), count in (copies.failures.items() if copies else ()):
            failures.add_metric([target, destination], count)
        yield failures


def _chunks(opener: object, path: Path) -> Iterator[bytes]:
    with opener(path, "rb") as f:  # type: ignore[operator]
        while chunk := f.read(_CHUNK):
            yield chunk


def _size(path: Path) -> int:
    """A file's size, 0 when pg_receivewal renamed it (``.partial``) since the listing."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
