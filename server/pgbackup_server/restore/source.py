"""Where verify, restore and contents read a backup: its local file, or a copy at a
destination (an object store), decrypted with an age identity when it is encrypted.

The identity comes from the request or from ``encryption.identityFile``; it is used
for the one request, handed to age through a private pipe, never logged or stored.
What the restore tools need as a file (an archive for pg_restore, a plain dump for a
partial restore or its contents) is staged: decrypted into a private 0600 file in a
0700 directory under the service's runtime directory, removed afterwards. A plain
dump restored whole streams: read, decrypt, decompress, psql, with no file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path

from ..backup.naming import ENCRYPTED_SUFFIX
from ..domain.age_keys import Identities, parse_identities
from ..domain.errors import BackupError, FailedPrecondition, StorageNotFound
from ..domain.models import Copy, DumpFormat, Run
from ..domain.ports import Destination
from ..settings import Settings
from ..storage.paths import is_own_file
from .models import Corrupt
from .plain import raw_chunks


class Source:
    """Reads the stored bytes of a run's backup and turns them into plaintext."""

    def __init__(self, config: Settings, destinations: Mapping[str, Destination],
                 runtime_dir: Path) -> None:
        self.config = config
        self.destinations = destinations
        self.runtime_dir = runtime_dir

    # -- where ---------------------------------------------------------------

    def local_file(self, run: Run) -> bool:
        """The run's own file is on this host's disk."""
        return bool(run.file_path) and os.path.lexists(run.file_path)

    def remote_copies(self, run: Run) -> list[tuple[Destination, Copy]]:
        """The run's stored copies at configured object stores, in the order of
        ``destinations:``."""
        out = []
        for name, dest in self.destinations.items():
            copy = run.copy_at(name)
            if copy is not None and copy.present and not dest.is_local:
                out.append((dest, copy))
        return out

    def stored_copies(self, run: Run) -> list[tuple[Destination, Copy]]:
        """Every present copy at a destination except the run's own file (checked as
        the file): an object store's, and a folder destination's such as a mounted share."""
        out = []
        for name, dest in self.destinations.items():
            copy = run.copy_at(name)
            if copy is None or not copy.present:
                continue
            if is_own_file(dest, copy.location, run.file_path):
                continue
            out.append((dest, copy))
        return out

    def remote_copy(self, run: Run) -> tuple[Destination, Copy] | None:
        found = self.remote_copies(run)
        return found[0] if found else None

    def quick_check_copy(self, run: Run, dest: Destination, copy: Copy) -> str:
        """Size and hash of a remote copy without downloading it where the store
        offers a checksum (the S3 ETag recorded in its manifest); else by reading it.
        Returns how it was checked; Corrupt when it does not match."""
        info = dest.head(copy.location)
        where = dest.location_of(copy.location)
        if info is None:
            raise Corrupt(f"the copy {where} is gone")
        if copy.size_bytes and info.size != copy.size_bytes:
            raise Corrupt(f"the copy {where} holds {info.size} bytes, {copy.size_bytes} were "
                          "stored")
        expected = _manifest_etag(dest, copy.location)
        if expected and info.etag:
            if info.etag != expected:
                raise Corrupt(f"the copy {where} has changed: the store's checksum "
                              f"{info.etag} differs from the one recorded {expected}")
            return "size and store checksum"
        for _ in _checked(dest.read(copy.location), where, copy.size_bytes, copy.sha256):
            pass
        return "size and SHA-256, read back"

    def is_direct(self, run: Run) -> bool:
        """The restore tools can read the run's file as it is (local, not encrypted)."""
        return not run.encryption and self.local_file(run)

    def require(self, run: Run) -> None:
        """There is something to read; else FailedPrecondition saying what is missing."""
        if self.local_file(run) or self.remote_copy(run) is not None:
            return
        where = f"file {run.file_path} is missing from disk" if run.file_path else \
            "it has no file on this host"
        raise FailedPrecondition(f"backup {run.id}: {where} and no destination holds a "
                                 "copy of it")

    # -- reading -------------------------------------------------------------

    def stored_chunks(self, run: Run) -> Iterator[bytes]:
        """The backup's bytes as stored; at the end, size and SHA-256 are checked
        against the record (Corrupt when they differ)."""
        if self.local_file(run):
            chunks: Iterator[bytes] = raw_chunks(Path(run.file_path))
            what, size, sha256 = run.file_path, run.size_bytes, run.sha256
        else:
            found = self.remote_copy(run)
            if found is None:
                self.require(run)
                raise AssertionError  # require raised
            dest, copy = found
            try:
                chunks = dest.read(copy.location)
            except StorageNotFound as exc:
                raise Corrupt(f"the copy at destination {dest.name} is gone: "
                              f"{exc.message}") from None
            what = dest.location_of(copy.location)
            size, sha256 = copy.size_bytes or run.size_bytes, copy.sha256 or run.sha256
        return _checked(chunks, what, size, sha256)

    def identities(self, run: Run, identity: str = "") -> Identities | None:
        """The identities to decrypt ``run`` with; None when it is not encrypted."""
        if not run.encryption:
            return None
        if identity:
            return parse_identities(identity, "identity")
        enc = self.config.encryption
        if enc is not None and enc.identity_file is not None:
            return enc.identities()
        raise FailedPrecondition(
            f"backup {run.id} is encrypted with age; pass the identity (the private key of "
            "one of its recipients) with the request (identity, or backupctl "
            "--identity-file), or set encryption.identityFile on the server")

    def plaintext(self, run: Run, identity: str = "") -> Iterator[bytes]:
        """The backup's plaintext (still compressed as pg_dump or the service wrote it)."""
        ids = self.identities(run, identity)
        stored = self.stored_chunks(run)
        if ids is None:
            return stored
        from ..storage.age import decrypt

        return _authentic(decrypt(ids, stored))

    def prepare(self, run: Run, identity: str, stack: ExitStack, *, whole: bool
                ) -> tuple[Run, Callable[[], Iterable[bytes]] | None]:
        """For a restore: the run to hand the tools (staged into ``stack`` when needed)
        and, for a ``whole`` plain backup not read directly, the stream of its bytes:
        read, decrypt, decompress, psql, with no file on the way."""
        if self.is_direct(run):
            return run, None
        if run.format is DumpFormat.PLAIN and whole:
            return run, partial(self.plaintext, run, identity)
        return stack.enter_context(self.staged(run, identity)), None

    @contextmanager
    def staged(self, run: Run, identity: str = "") -> Iterator[Run]:
        """``run`` as the restore tools read it: itself when its file is local and not
        encrypted; else a copy of it whose ``file_path`` names a private plaintext
        file (0600, in a 0700 directory), removed on exit."""
        if self.is_direct(run):
            yield run
            return
        if run.format is not None and run.format.value == "directory":
            raise FailedPrecondition(f"backup {run.id} is a directory backup and can only be "
                                     "read from the directory it was written to")
        self.require(run)
        self.runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory = Path(tempfile.mkdtemp(prefix="staged-", dir=self.runtime_dir))
        try:
            name = Path(run.file_path).name or f"backup-{run.id}"
            path = directory / name.removesuffix(ENCRYPTED_SUFFIX)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as f:
                for chunk in self.plaintext(run, identity):
                    f.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
            if run.encryption and run.plaintext_sha256 and \
                    digest.hexdigest() != run.plaintext_sha256:
                raise Corrupt("the decrypted backup does not match its recorded plaintext "
                              "SHA-256")
            yield replace(run, file_path=str(path), size_bytes=size,
                          sha256=digest.hexdigest(), encryption=())
        finally:
            shutil.rmtree(directory, ignore_errors=True)


def _checked(chunks: Iterator[bytes], what: str, size: int, sha256: str) -> Iterator[bytes]:
    digest = hashlib.sha256()
    n = 0
    try:
        for chunk in chunks:
            digest.update(chunk)
            n += len(chunk)
            yield chunk
    except BackupError as exc:
        raise Corrupt(f"reading {what} failed: {exc.message}") from None
    if size and n != size:
        raise Corrupt(f"{what} holds {n} bytes, {size} were written: it is "
                      f"{'truncated' if n < size else 'changed'}")
    if sha256 and digest.hexdigest() != sha256:
        raise Corrupt(f"SHA-256 mismatch: {what} hashes to {digest.hexdigest()}, the backup "
                      f"recorded {sha256}")


def _manifest_etag(dest: Destination, location: str) -> str:
    """The store checksum the manifest next to ``location`` recorded ("" if none)."""
    from ..storage.catalog import Manifest, manifest_name

    try:
        return Manifest.from_json(b"".join(dest.read(manifest_name(location)))).etag
    except (BackupError, ValueError):
        return ""


def _authentic(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Decrypted chunks; a failed authentication (truncated or altered ciphertext) is
    Corrupt, a wrong identity stays an error of the request."""
    from ..domain.errors import CorruptCiphertext

    try:
        yield from chunks
    except CorruptCiphertext as exc:
        raise Corrupt(exc.message) from None
