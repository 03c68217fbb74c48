"""Copies of a backup at its destinations: made with retries, repaired on request
(CopyBackup), and listed per destination (ListDestinations).

A copy that fails is retried with backoff (``tenacity``) by streaming a stored
copy of the same backup to the destination again; what still fails is recorded
FAILED with its reason (credentials scrubbed), counted and alerted on through the
event listeners (``on_copy_finished``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import structlog
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from ..domain.errors import (
    BackupError,
    BackupFailed,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from ..domain.models import (
    Copy,
    CopyState,
    DestinationStatus,
    DestinationUsage,
    DumpFormat,
    Run,
    RunStatus,
    Stored,
)
from ..domain.ports import Clock, CopyStore, Destination, Listener, RunStore
from ..settings import DestinationConfig, Settings
from ..storage.catalog import manifest_for, write_manifest

log = structlog.get_logger("pgbackup")
PROBE_SECONDS = 10.0


@dataclass(frozen=True)
class RetryPolicy:
    """How a failed copy is retried: ``attempts`` in all, waiting exponentially
    between ``wait_min`` and ``wait_max`` seconds; ``sleep`` is injectable (tests)."""

    attempts: int = 3
    wait_min: float = 1.0
    wait_max: float = 30.0
    sleep: Callable[[float], None] = time.sleep

    def retrying(self, attempts: int | None = None) -> Retrying:
        return Retrying(stop=stop_after_attempt(attempts or self.attempts),
                        wait=wait_exponential(min=self.wait_min, max=self.wait_max),
                        retry=retry_if_exception_type(CopyError), sleep=self.sleep,
                        reraise=True)


class CopyError(Exception):
    """One attempt at one copy failed; the message is safe to record (no secrets)."""


class Secrets:
    """Every credential the destinations were given; removed from any text that
    could reach a log, a record or an error."""

    def __init__(self, values: Iterable[str]) -> None:
        # Longest first: a secret containing another is removed whole.
        self.values = sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for value in self.values:
            text = text.replace(value, "***")
        return text


def describe(exc: BaseException) -> str:
    """An error as one line: its message, or its type when it has none."""
    text = getattr(exc, "message", "") or str(exc) or type(exc).__name__
    return " ".join(text.split())[:1000]


class Copier:
    """Makes copies at destinations and answers what the destinations hold."""

    def __init__(self, settings: Settings, runs: RunStore, copies: CopyStore,
                 destinations: Mapping[str, Destination], events: Listener, clock: Clock, *,
                 secrets: Secrets | None = None, retry: RetryPolicy | None = None) -> None:
        self.settings = settings
        self.runs = runs
        self.copies = copies
        self.destinations = destinations
        self.events = events
        self.clock = clock
        self.secrets = secrets or Secrets(())
        self.retry = retry or RetryPolicy()

    # -- configuration ------------------------------------------------------

    def configs_of(self, target: str) -> tuple[DestinationConfig, ...]:
        """The destinations a target's backups go to (all, for an unknown target)."""
        config = next((t for t in self.settings.targets if t.name == target), None)
        if config is None:
            return self.settings.destinations
        return self.settings.destinations_of(config)

    def destination(self, name: str) -> Destination:
        try:
            return self.destinations[name]
        except KeyError:
            raise NotFound(f"destination: {name!r} is not configured; configured: "
                           f"{', '.join(self.destinations)}") from None

    # -- recording ----------------------------------------------------------

    def succeeded(self, run: Run, name: str, stored: Stored) -> Copy:
        """Record a stored copy, then write its manifest next to it (a manifest that
        cannot be written is logged: the copy itself is complete)."""
        now = self.clock()
        dest = self.destination(name)
        locked = None
        if not dest.is_local:
            try:
                info = dest.head(stored.location)
                locked = info.locked_until if info else None
            except Exception:  # the lock is shown when known; the copy is stored
                locked = None
        copy = self.copies.mark_succeeded(run.id, name, location=stored.location,
                                          size_bytes=stored.size, sha256=stored.sha256,
                                          stored_at=now, locked_until=locked)
        try:
            write_manifest(dest, stored.location, manifest_for(run, stored, finished_at=now))
        except Exception as exc:
            log.warning("Manifest not written", run_id=run.id, destination=name,
                        error=self.secrets.scrub(describe(exc)))
        self.events.on_copy_finished(run, copy)
        return copy

    def failed(self, run: Run, name: str, error: str) -> Copy:
        reason = self.secrets.scrub(error)
        copy = self.copies.mark_failed(run.id, name, error=reason)
        log.error("Backup copy failed", run_id=run.id, database=run.database,
                  destination=name, error=reason)
        self.events.on_copy_finished(run, copy)
        return copy

    # -- copying from a stored copy -------------------------------------------

    def transfer(self, run: Run, source: Copy, name: str, *, retry_of: str = "") -> Copy:
        """Stream the stored ``source`` copy to destination ``name``, retried with
        backoff; the copy ends recorded SUCCEEDED or FAILED. ``retry_of``: the error
        of a first attempt already made (during the dump): one attempt fewer, after
        the first wait."""
        src = self.destination(source.destination)
        dst = self.destination(name)
        self.copies.add(run.id, name)
        attempts = self.retry.attempts
        if retry_of:
            attempts -= 1
            self.retry.sleep(self.retry.wait_min)
        try:
            for attempt in self.retry.retrying(max(attempts, 1)):
                with attempt:
                    stored = self._transfer_once(src, source, dst)
        except CopyError as exc:
            return self.failed(run, name, str(exc))
        return self.succeeded(run, name, stored)

    def _transfer_once(self, src: Destination, source: Copy, dst: Destination) -> Stored:
        try:
            sink = dst.upload(source.location)
        except Exception as exc:
            raise CopyError(self.secrets.scrub(describe(exc))) from None
        try:
            for chunk in src.read(source.location):
                sink.write(chunk)
            stored = sink.finish()[0]
        except Exception as exc:
            sink.abort(describe(exc))
            raise CopyError(self.secrets.scrub(describe(exc))) from None
        if source.sha256 and stored.sha256 != source.sha256:
            dst.delete(stored.location)
            raise CopyError(f"the copy read from {source.destination} does not match its "
                            f"recorded SHA-256 (got {stored.sha256[:12]}…, recorded "
                            f"{source.sha256[:12]}…); verify that copy")
        return stored

    def copy_backup(self, run_id: int, names: Sequence[str] = ()) -> Run:
        """Make the copies a backup is missing at its target's destinations (or at
        ``names``), streaming from a stored copy. A run that failed only because a
        required copy failed becomes SUCCEEDED once every required copy is there."""
        if run_id < 1:
            raise InvalidArgument(f"id: must be a positive backup id, got {run_id}")
        run = self.runs.get(run_id)
        configs = {c.name: c for c in self.configs_of(run.target)}
        for name in names:
            if name not in configs:
                raise InvalidArgument(
                    f"destinations: {name!r} is not a destination of target {run.target!r}; "
                    f"its destinations: {', '.join(configs)}")
        source = next((c for c in sorted(run.copies, key=lambda c: not self._is_local(c))
                       if c.present and c.destination in self.destinations), None)
        if source is None:
            raise FailedPrecondition(
                f"backup {run_id} has no stored copy to copy from (status {run.status}); "
                "make a new backup instead")
        if run.format is DumpFormat.DIRECTORY:
            raise FailedPrecondition(f"backup {run_id} is a directory backup; directory "
                                     "backups stay in the directory they were written to")
        wanted = [n for n in (names or configs) if not holds(run, n)]
        for name in wanted:
            self.transfer(run, source, name)
        run = self.runs.get(run_id)
        missing = [c for c in run.copies if not c.present and c.destination in wanted]
        if run.status is RunStatus.FAILED and self.holds_required(run):
            run = self.runs.mark_succeeded(run.id, finished_at=run.finished_at or self.clock(),
                                           file_path=run.file_path, size_bytes=run.size_bytes,
                                           sha256=run.sha256, bytes_written=run.bytes_written)
            self.events.on_run_finished(run)
        if missing:
            raise BackupFailed("; ".join(f"copy to {c.destination} failed: {c.error}"
                                         for c in missing)).prefixed(f"backup {run_id}: ")
        return run

    def holds_required(self, run: Run) -> bool:
        """Every required destination of the run's target holds its copy."""
        return all(holds(run, c.name) for c in self.configs_of(run.target) if c.required)

    def _is_local(self, copy: Copy) -> bool:
        dest = self.destinations.get(copy.destination)
        return bool(dest is not None and dest.is_local)

    def recover(self) -> None:
        """Copies a previous process left PENDING are FAILED (their uploads died with
        it), and the unfinished uploads it left in local destinations are removed."""
        for name, dest in self.destinations.items():
            for copy in self.copies.at(name, CopyState.PENDING):
                self.copies.mark_failed(copy.run_id, name,
                                        error="interrupted: the service stopped during "
                                              "this copy")
            if dest.is_local:
                for leftover in dest.sweep_unfinished():
                    log.info("Removed an unfinished upload left by a crash",
                             destination=name, file_path=str(leftover))

    # -- listing ------------------------------------------------------------

    def usage(self, *, target: str = "", database: str = "") -> tuple[DestinationUsage, ...]:
        """Per configured destination (then any other that holds copies)."""
        found = self.copies.usage(target=target, database=database)
        names = [d.name for d in self.settings.destinations]
        names += [n for n in found if n not in names]
        return tuple(found.get(n, DestinationUsage(n)) for n in names)

    def list_destinations(self) -> list[DestinationStatus]:
        """Each configured destination, probed in parallel (at most PROBE_SECONDS)."""
        usage = {u.name: u for u in self.usage()}
        configs = self.settings.destinations
        # Not a with block: its exit would wait for a probe that hangs.
        pool = ThreadPoolExecutor(max_workers=max(1, len(configs)),
                                  thread_name_prefix="probe")
        try:
            probes = {c.name: pool.submit(self._probe, c.name) for c in configs}
            out = []
            for config in configs:
                try:
                    error = probes[config.name].result(timeout=PROBE_SECONDS)
                except FutureTimeout:
                    error = f"no answer within {PROBE_SECONDS:g} s"
                used = usage.get(config.name, DestinationUsage(config.name))
                out.append(DestinationStatus(
                    name=config.name, url=config.url, required=config.required,
                    reachable=not error, error=error, copies=used.copies,
                    used_bytes=used.used_bytes, newest=used.newest))
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return out

    def _probe(self, name: str) -> str:
        """"" when the destination answers a listing, else why not (scrubbed)."""
        try:
            next(iter(self.destination(name).list()), None)
        except BackupError as exc:
            return self.secrets.scrub(exc.message)
        except Exception as exc:
            return self.secrets.scrub(describe(exc))
        return ""


def holds(run: Run, name: str) -> bool:
    """The run has a stored copy at destination ``name``."""
    copy = run.copy_at(name)
    return copy is not None and copy.present
