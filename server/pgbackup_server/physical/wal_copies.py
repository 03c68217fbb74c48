"""Archived WAL at the destinations: each completed file of the local archive is
copied to every destination of its physical target (other than the local archive
itself), read back from there when the local archive lacks it, and pruned there by
the same rule as locally.

Names at a destination: ``wal/<target>/<file>[.age]``, the local archive's layout
(``<file>`` is pg_receivewal's ``<segment>.gz``, already compressed, or a
``.history`` file), age-encrypted like a backup when ``encryption.recipients`` is
set. The state is the destination itself: what it lists under ``wal/<target>/`` is
shipped (read once per process, then kept in memory), so a restart never uploads a
file twice, and an upload never overwrites (``Destination.upload``).

Shipping runs in its own thread, every :data:`INTERVAL` seconds, so a slow or
failing destination never holds pg_receivewal up. A file that still fails after
the copy retries (``RetryPolicy`` of the copier) is counted
(``backup_wal_copy_failures_total{target,destination}``), kept as the error that
the ``wal_archiving`` alert shows, and tried again on the next pass.
"""

from __future__ import annotations

import os
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import structlog

from ..backup.copies import Copier, CopyError, describe
from ..backup.files import CHUNK
from ..backup.naming import ENCRYPTED_SUFFIX as AGE
from ..domain.errors import FailedPrecondition, NotFound
from ..domain.models import Run
from ..domain.ports import Destination, Sink
from ..settings import DestinationConfig, Settings, TargetConfig
from ..storage.age import EncryptingSink, decrypt
from . import chain

log = structlog.get_logger("pgbackup")
INTERVAL = 2.0  # seconds between passes over the local archives


def prefix(target: str) -> str:
    return f"wal/{target}/"


class WalCopies:
    """Copies, reads back and prunes archived WAL at the targets' destinations."""

    def __init__(self, settings: Settings, copier: Copier, targets: dict[str, TargetConfig],
                 directory_of: Callable[[str], Path], *, interval: float = INTERVAL) -> None:
        self.settings = settings
        self.copier = copier
        self.targets = targets
        self.directory_of = directory_of
        self.interval = interval
        self.failures: dict[tuple[str, str], int] = {}
        self.errors: dict[tuple[str, str], str] = {}
        self._shipped: dict[tuple[str, str], set[str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- configuration ------------------------------------------------------

    def destinations(self, target: str) -> list[tuple[DestinationConfig, Destination]]:
        """The target's destinations, but not the local archive (a local destination
        at backup.directory holds it already)."""
        home = os.path.realpath(self.settings.backup.directory)
        out = []
        for config in self.copier.configs_of(target):
            if config.is_local and os.path.realpath(config.path) == home:
                continue
            dest = self.copier.destinations.get(config.name)
            if dest is not None:
                out.append((config, dest))
        return out

    @property
    def suffix(self) -> str:
        return AGE if self.settings.encryption is not None else ""

    # -- the shipping thread ------------------------------------------------

    def start(self) -> None:
        if not any(self.destinations(t) for t in self.targets):
            return
        self._thread = threading.Thread(target=self._loop, name="wal-copies", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.ship_once()
            except Exception as exc:  # never let the thread die; the next pass retries
                log.error("WAL copy pass failed", error=self.copier.secrets.scrub(describe(exc)))
            if self._stop.wait(self.interval):
                return

    def ship_once(self) -> int:
        """One pass: every completed local file missing at a destination is copied
        there, oldest first; returns how many were copied."""
        copied = 0
        with self._lock:
            for target in self.targets:
                names = sorted(p.name for p in _files(self.directory_of(target))
                               if not p.name.endswith(".partial"))
                for config, dest in self.destinations(target):
                    if self._stop.is_set():
                        return copied
                    copied += self._ship(target, config.name, dest, names)
        return copied

    def _ship(self, target: str, name: str, dest: Destination, names: list[str]) -> int:
        key = (target, name)
        try:
            shipped = self._known(target, name, dest)
        except Exception as exc:
            self._failed(key, f"listing {prefix(target)}: {describe(exc)}")
            return 0
        copied = 0
        for file in names:
            if file in shipped:
                continue
            try:
                for attempt in self.copier.retry.retrying():
                    with attempt:
                        self._copy_one(target, file, dest)
            except CopyError as exc:
                self._failed(key, f"{file}: {exc}")
                return copied  # in order: the next pass starts again from this file
            shipped.add(file)
            copied += 1
        self.errors.pop(key, None)
        return copied

    def _known(self, target: str, name: str, dest: Destination) -> set[str]:
        """What the destination holds of the target's archive (local names)."""
        key = (target, name)
        if key not in self._shipped:
            held = {info.location.rsplit("/", 1)[-1] for info in dest.list(prefix(target))}
            self._shipped[key] = {n.removesuffix(AGE) for n in held}
        return self._shipped[key]

    def _copy_one(self, target: str, file: str, dest: Destination) -> None:
        relative = prefix(target) + file + self.suffix
        path = self.directory_of(target) / file
        try:
            if dest.head(relative) is not None:
                return  # stored by an earlier process (never overwritten)
            sink: Sink = dest.upload(relative)
        except Exception as exc:
            raise CopyError(self.copier.secrets.scrub(describe(exc))) from None
        if self.settings.encryption is not None:
            sink = EncryptingSink(self.settings.encryption.recipients, sink)
        try:
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    sink.write(chunk)
            sink.finish()
        except FileNotFoundError:  # local retention deleted it meanwhile: not needed
            sink.abort("the archived file was deleted by retention")
        except Exception as exc:
            sink.abort(describe(exc))
            raise CopyError(self.copier.secrets.scrub(describe(exc))) from None

    def _failed(self, key: tuple[str, str], error: str) -> None:
        reason = self.copier.secrets.scrub(error)
        self.failures[key] = self.failures.get(key, 0) + 1
        self.errors[key] = reason
        log.error("WAL copy failed; retried on the next pass", target=key[0],
                  destination=key[1], error=reason)

    def errors_of(self, target: str) -> dict[str, str]:
        return {d: e for (t, d), e in self.errors.items() if t == target}

    # -- reading back (restore_command) -------------------------------------

    def fetch(self, target: str, name: str) -> Iterator[bytes]:
        """The plaintext of archived file ``name`` from the first destination that
        holds it (decrypted with encryption.identityFile, decompressed)."""
        for _config, dest in self.destinations(target):
            for stored in (name + ".gz", name):
                for suffix in (AGE, ""):
                    relative = prefix(target) + stored + suffix
                    try:
                        found = dest.head(relative) is not None
                    except Exception as exc:
                        log.warning("WAL lookup at a destination failed", target=target,
                                    destination=dest.name,
                                    error=self.copier.secrets.scrub(describe(exc)))
                        break
                    if found:
                        return self._plain(dest.read(relative), encrypted=bool(suffix),
                                           gzipped=stored.endswith(".gz"))
        raise NotFound(f"WAL file {name} is not in the archive of {target!r}")

    def _plain(self, chunks: Iterator[bytes], *, encrypted: bool,
               gzipped: bool) -> Iterator[bytes]:
        if encrypted:
            config = self.settings.encryption
            identities = config.identities() if config is not None else None
            if identities is None:
                raise FailedPrecondition(
                    "encryption.identityFile: archived WAL at the destinations is encrypted; "
                    "set it to the age identity file of the recipients to fetch it")
            chunks = decrypt(identities, chunks)
        return _gunzip(chunks) if gzipped else chunks

    # -- retention ----------------------------------------------------------

    def prune(self, target: str, kept: list[Run]) -> None:
        """Delete the target's WAL at each destination that no kept backup needs
        (the local rule: ``chain.wal_to_delete``). Not during a copy pass: a file it
        listed must not be copied again after it is deleted here."""
        with self._lock:
            self._prune(target, kept)

    def _prune(self, target: str, kept: list[Run]) -> None:
        for config, dest in self.destinations(target):
            try:
                held = [info.location.rsplit("/", 1)[-1] for info in dest.list(prefix(target))]
                doomed = chain.wal_to_delete(held, kept)
                for file in doomed:
                    dest.delete(prefix(target) + file)
            except Exception as exc:  # the next cleanup tries again
                log.warning("Archived WAL at a destination not pruned", target=target,
                            destination=config.name,
                            error=self.copier.secrets.scrub(describe(exc)))
                continue
            shipped = self._shipped.get((target, config.name))
            if shipped is not None:
                shipped.difference_update(n.removesuffix(AGE) for n in doomed)
            if doomed:
                log.info("Archived WAL deleted by retention", target=target,
                         destination=config.name, files=len(doomed))


def _files(directory: Path) -> list[Path]:
    try:
        return [p for p in directory.iterdir() if p.is_file()]
    except FileNotFoundError:
        return []


def _gunzip(chunks: Iterator[bytes]) -> Iterator[bytes]:
    inflate = zlib.decompressobj(wbits=31)
    for chunk in chunks:
        if out := inflate.decompress(chunk):
            yield out
    if tail := inflate.flush():
        yield tail
