"""The backups of a chain as folders on this host, for verify and restore.

A backup whose folder is in ``backup.directory`` is read there, checked against its
``SHA256SUMS``. One whose folder is gone (the host was rebuilt, or the folder was
removed here while a destination keeps it) is fetched from the first destination
that holds a readable copy (``<folder>/<file>``, ``.age`` when encrypted): each
stored file is downloaded into a private staging folder (0700, files 0600) beside
where the caller works, decrypted with the request's identity or
``encryption.identityFile``, and checked: each file against the backup's
``SHA256SUMS``, naming the file that changed or went missing, and the stored files
as a whole against the SHA-256 recorded for the copy. The staging folder is removed
on exit, whatever happened.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import structlog

from ..backup.files import manifest_digest
from ..backup.naming import ENCRYPTED_SUFFIX as AGE
from ..domain.age_keys import Identities, parse_identities
from ..domain.errors import BackupError, CorruptCiphertext, FailedPrecondition, WrongIdentity
from ..domain.models import Copy, ObjectInfo, Run
from ..domain.ports import Destination
from ..restore.models import Corrupt
from ..settings import Settings
from ..storage.paths import is_own_file
from .basebackup import MANIFEST, SUMS

log = structlog.get_logger("pgbackup")


@dataclass(frozen=True, slots=True)
class Remote:
    """A copy of one backup at a destination, as listed there."""

    dest: Destination
    copy: Copy
    objects: tuple[ObjectInfo, ...]

    @property
    def where(self) -> str:
        return self.dest.location_of(self.copy.location)

    @property
    def encrypted(self) -> bool:
        return any(o.location.endswith(AGE) for o in self.objects)


class ChainFiles:
    """Finds, fetches and checks the folders of a chain's backups."""

    def __init__(self, config: Settings, destinations: Mapping[str, Destination]) -> None:
        self.config = config
        self.destinations = destinations

    # -- where --------------------------------------------------------------

    @staticmethod
    def is_local(run: Run) -> bool:
        """The run's folder is here as pg_basebackup wrote it; not when its path is a
        copy encrypted file by file at a local destination (a run imported from it)."""
        return bool(run.file_path) and Path(run.file_path).is_dir() and not _encrypted_copy(
            run.file_path)

    def stored(self, run: Run) -> bool:
        """Something of the run's backup is left to read: its folder or a copy."""
        return bool(run.file_path) and os.path.lexists(run.file_path) or bool(
            self.copies_of(run))

    def copies_of(self, run: Run) -> list[tuple[Destination, Copy]]:
        """The run's present copies at configured destinations (in the order of
        ``destinations:``), except the folder in ``backup.directory`` itself."""
        out = []
        for name, dest in self.destinations.items():
            copy = run.copy_at(name)
            if copy is None or not copy.present:
                continue
            if is_own_file(dest, copy.location, run.file_path) \
                    and not _encrypted_copy(run.file_path):
                continue  # the folder itself, read as is_local says
            out.append((dest, copy))
        return out

    def remote(self, run: Run, dest: Destination, copy: Copy) -> Remote:
        """The copy with its listing (StorageError when the store cannot be listed)."""
        prefix = copy.location.rstrip("/") + "/"
        return Remote(dest, copy, tuple(dest.list(prefix)))

    def check_identity(self, members: Sequence[Run], identity: str) -> None:
        """Refuse, before anything runs, a chain whose folders are gone here and whose
        copies are encrypted when there is no identity to decrypt them with."""
        for member in members:
            if self.is_local(member):
                continue
            for dest, copy in self.copies_of(member)[:1]:
                try:
                    found = self.remote(member, dest, copy)
                except BackupError:
                    continue  # reported when the copy is read
                if found.encrypted:
                    self.identities(member, found, identity)

    def identities(self, run: Run, remote: Remote, identity: str) -> Identities:
        if identity:
            return parse_identities(identity, "identity")
        enc = self.config.encryption
        found = enc.identities() if enc is not None else None
        if found is not None:
            return found
        here = "is damaged here" if self.is_local(run) else "is not on this host"
        raise FailedPrecondition(
            f"backup {run.id}: its folder {run.file_path} {here} and its copy "
            f"at destination {remote.dest.name!r} is encrypted with age; pass the identity "
            "(the private key of one of its recipients) with the request (identity, or "
            "backupctl --identity-file), or set encryption.identityFile on the server")

    # -- reading ------------------------------------------------------------

    @contextmanager
    def folders(self, members: Sequence[Run], identity: str, staging: Path,
                check_local: Callable[[Run], None], *, repair: bool = False
                ) -> Iterator[list[Path]]:
        """The folder of each of ``members``: its own, checked with ``check_local``, or
        one fetched and checked into a private directory under ``staging`` (removed on
        exit). ``repair``: a folder here that fails its check is fetched too, when a
        destination holds a copy (a restore; verify reports the damage instead).
        Corrupt names the backup and what is missing or damaged."""
        work: Path | None = None
        try:
            out = []
            for member in members:
                damaged = ""
                if self.is_local(member):
                    try:
                        check_local(member)
                        out.append(Path(member.file_path))
                        continue
                    except Corrupt as exc:
                        if not repair or not self.copies_of(member):
                            raise
                        damaged = exc.reason
                        log.warning("Physical backup damaged here; reading a copy instead",
                                    run_id=member.id, reason=damaged)
                if work is None:
                    work = staging / f".pgbackup-restore-fetch-{secrets.token_hex(4)}"
                    work.mkdir(mode=0o700)
                name = Path(member.file_path).name or str(member.id)
                try:
                    out.append(self.fetch(member, identity, work / name))
                except Corrupt as exc:
                    raise Corrupt(f"{damaged}; {exc.reason}" if damaged else exc.reason
                                  ) from None
            yield out
        finally:
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)

    def fetch(self, run: Run, identity: str, into: Path) -> Path:
        """``run``'s folder from the first destination holding a readable copy."""
        candidates = self.copies_of(run)
        if not candidates:
            raise Corrupt(f"backup {run.id}: its folder {run.file_path} is missing from disk "
                          "and no destination holds a copy of it")
        here = "is damaged" if self.is_local(run) else "is missing from disk"
        problems = []
        for dest, copy in candidates:
            try:
                found = self.remote(run, dest, copy)
                self._download(run, found, identity, into)
                log.info("Physical backup fetched from a destination", run_id=run.id,
                         destination=dest.name)
                return into
            except Corrupt as exc:
                problems.append(exc.reason)
            except CorruptCiphertext as exc:
                problems.append(f"backup {run.id}: {exc.message}")
            except (FailedPrecondition, WrongIdentity):
                raise  # the request's to fix (an identity), not the copy's
            except BackupError as exc:
                problems.append(f"backup {run.id}: reading its copy at destination "
                                f"{dest.name!r} failed: {exc.message}")
            shutil.rmtree(into, ignore_errors=True)
            log.warning("Copy of a physical backup not readable", run_id=run.id,
                        destination=dest.name, reason=problems[-1])
        raise Corrupt(f"backup {run.id}: its folder {here} and no destination holds a "
                      f"readable copy: {'; '.join(problems)}")

    def _download(self, run: Run, found: Remote, identity: str, into: Path) -> None:
        into.mkdir(mode=0o700)
        prefix = found.copy.location.rstrip("/") + "/"
        where = found.where.rstrip("/")
        digests, plain = [], {}
        ids = self.identities(run, found, identity) if found.encrypted else None
        for info in sorted(found.objects, key=lambda o: o.location):
            stored = info.location.removeprefix(prefix)
            name = stored.removesuffix(AGE) if ids is not None else stored
            if "/" in name or name.startswith(".") or not name or name in plain:
                raise Corrupt(f"backup {run.id}: unexpected file {stored} in {where}")
            digest = hashlib.sha256()
            plain[name] = _write(into / name, _hashed(found.dest.read(info.location),
                                                      digest.update),
                                 ids, f"{where}/{stored}", run)
            digests.append((stored, digest.hexdigest()))
        _check_sums(run, plain, into, where)
        if found.copy.sha256 and manifest_digest(digests) != found.copy.sha256:
            raise Corrupt(f"backup {run.id}: the files in {where} are not those stored there "
                          "(their SHA-256 differs from the one recorded for the copy)")


def _encrypted_copy(path: str) -> bool:
    """A folder of ``.age`` files: a copy at a local destination, not a backup's own."""
    try:
        return any(name.endswith(AGE) for name in os.listdir(path))
    except OSError:
        return False


def _hashed(chunks: Iterator[bytes], update: Callable[[bytes], object]
            ) -> Iterator[bytes]:
    for chunk in chunks:
        update(chunk)
        yield chunk


def _write(path: Path, chunks: Iterator[bytes], ids: Identities | None, what: str,
           run: Run) -> str:
    """Write the plaintext of ``chunks`` (decrypted with ``ids``) to a new private
    file; its SHA-256. Damaged ciphertext is Corrupt naming ``what``."""
    if ids is not None:
        from ..storage.age import decrypt

        chunks = decrypt(ids, chunks)
    digest = hashlib.sha256()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
                digest.update(chunk)
    except CorruptCiphertext as exc:
        raise Corrupt(f"backup {run.id}: {what} cannot be decrypted: {exc.message}") from None
    return digest.hexdigest()


def _check_sums(run: Run, plain: dict[str, str], into: Path, where: str) -> None:
    """The fetched files against the backup's SHA256SUMS (fetched with them)."""
    if SUMS not in plain:
        raise Corrupt(f"backup {run.id}: {SUMS} is missing from {where}")
    listed = {}
    for line in (into / SUMS).read_text(errors="replace").splitlines():
        digest, _, name = line.partition("  ")
        listed[name] = digest
    for name, digest in listed.items():
        if name not in plain:
            raise Corrupt(f"backup {run.id}: {name} is missing from {where}")
        if plain[name] != digest:
            raise Corrupt(f"backup {run.id}: {name} in {where} has changed since it was "
                          "written (SHA-256 differs)")
    extra = sorted(set(plain) - set(listed) - {SUMS})
    if extra:
        raise Corrupt(f"backup {run.id}: unexpected file {extra[0]} in {where}")
    if MANIFEST not in listed:
        raise Corrupt(f"backup {run.id}: {MANIFEST} is missing from {where}")

