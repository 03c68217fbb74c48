"""One dump, every copy: the sinks of a run's destinations, isolated from each other.

Each destination's upload is wrapped in a :class:`CopySink`: a destination that
fails (endpoint gone, wrong credentials, full disk) stops receiving bytes and keeps
its reason, while the dump goes on to the others. Nothing is raised into the
pipeline, so one copy never costs another. After the dump, :meth:`Outputs.settle`
records each copy, retries the failed ones from a stored copy, and says whether
every required destination holds its copy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from ..domain.errors import BackupFailed
from ..domain.models import Copy, Run, Stored
from ..domain.ports import Destination, Sink
from .copies import Copier, describe

log = structlog.get_logger("pgbackup")


class CopySink:
    """A destination's upload of one backup that never raises: the first failure
    aborts the upload (nothing partial stays under the name) and is kept in
    ``error``; later writes are dropped."""

    def __init__(self, name: str, destination: Destination, relative: str,
                 scrub: Callable[[str], str]) -> None:
        self.name = name
        self.destination = destination
        self.relative = relative
        self.scrub = scrub
        self.error = ""
        self.stored: Stored | None = None
        self._sink: Sink | None = None
        try:
            self._sink = destination.upload(relative)
        except Exception as exc:
            self.error = scrub(describe(exc))

    @property
    def ok(self) -> bool:
        return not self.error

    def _fail(self, exc: BaseException) -> None:
        self.error = self.scrub(describe(exc))
        log.warning("Copy to a destination failed during the dump", destination=self.name,
                    error=self.error)
        if self._sink is not None:
            with contextlib.suppress(Exception):
                self._sink.abort(self.error)

    def write(self, chunk: bytes) -> None:
        if self.error or self._sink is None:
            return
        try:
            self._sink.write(chunk)
        except Exception as exc:
            self._fail(exc)

    def finish(self) -> list[Stored]:
        if self.error or self._sink is None:
            return []
        try:
            self.stored = self._sink.finish()[0]
        except Exception as exc:
            self._fail(exc)
            return []
        return [self.stored]

    def abort(self, reason: str) -> None:
        """The run failed: nothing of it stays at this destination."""
        if self.stored is not None:
            with contextlib.suppress(Exception):
                self.destination.delete(self.stored.location)
            self.stored = None
        elif self._sink is not None and not self.error:
            with contextlib.suppress(Exception):
                self._sink.abort(reason)
        self.error = self.error or reason


@dataclass(frozen=True, slots=True)
class Settled:
    """The copies of a run after the dump and the retries."""

    copies: tuple[Copy, ...]
    failed_required: tuple[Copy, ...]

    @property
    def error(self) -> str:
        """The run's error when a required copy is missing, naming each destination."""
        return "; ".join(f"copy to destination {c.destination} failed: {c.error}"
                         for c in self.failed_required)


def free_name(destinations: Sequence[Destination], stem: str, ext: str) -> str:
    """``stem`` + ``ext``, or ``stem_2`` + ``ext``... : a name no destination holds yet
    (two backups in the same second; a backup is never overwritten)."""
    for n in range(1, 1000):
        name = f"{stem}{ext}" if n == 1 else f"{stem}_{n}{ext}"
        if all(_absent(d, name) for d in destinations):
            return name
    raise BackupFailed(f"no free name for {stem}{ext} at the destinations")


def _absent(destination: Destination, name: str) -> bool:
    try:
        return destination.head(name) is None
    except Exception:  # unreachable: its own upload will say so, the others go on
        return True


class Outputs:
    """The destinations one run writes to, with a CopySink each; itself the last Sink
    of the run's pipeline. It fails only when no destination is left."""

    def __init__(self, copier: Copier, run: Run, relative: str,
                 names: Sequence[str]) -> None:
        self.copier = copier
        self.run = run
        self.relative = relative
        for name in names:
            copier.copies.add(run.id, name)
        self.sinks = [CopySink(n, copier.destination(n), relative, copier.secrets.scrub)
                      for n in names]

    def _none_left(self) -> BackupFailed:
        return BackupFailed("no destination could store the backup: " + "; ".join(
            f"{s.name}: {s.error}" for s in self.sinks))

    def write(self, chunk: bytes) -> None:
        live = 0
        for sink in self.sinks:
            sink.write(chunk)
            live += sink.ok
        if not live:
            raise self._none_left()

    def finish(self) -> list[Stored]:
        stored = [s for sink in self.sinks for s in sink.finish()]
        if not stored:
            raise self._none_left()
        return stored

    def abort(self, reason: str) -> None:
        for sink in self.sinks:
            sink.abort(reason)

    def settle(self, run: Run) -> Settled:
        """Record every copy of ``run`` (as it now stands: its manifest is written from
        it); retry the failed ones from one that is stored (with backoff, see
        RetryPolicy); a copy that still fails is FAILED with its reason."""
        self.run = run
        done: dict[str, Copy] = {}
        for sink in self.sinks:
            if sink.stored is not None:
                done[sink.name] = self.copier.succeeded(self.run, sink.name, sink.stored)
        source = next((done[s.name] for s in self.sinks
                       if s.name in done and s.destination.is_local),
                      next(iter(done.values()), None))
        for sink in self.sinks:
            if sink.name in done:
                continue
            if source is not None and self.copier.retry.attempts > 1:
                log.info("Retrying a failed copy from a stored one", run_id=self.run.id,
                         destination=sink.name, source=source.destination,
                         error=sink.error)
                done[sink.name] = self.copier.transfer(self.run, source, sink.name,
                                                       retry_of=sink.error)
            else:
                done[sink.name] = self.copier.failed(self.run, sink.name,
                                                     sink.error or "not written")
        copies = tuple(done[s.name] for s in self.sinks)
        required = {c.name for c in self.copier.configs_of(self.run.target) if c.required}
        return Settled(copies, tuple(c for c in copies
                                     if c.destination in required and not c.present))
