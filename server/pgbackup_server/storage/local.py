"""A local directory as a destination: 0700 directories, 0600 files, published by
``link`` so a finished file appears whole under its name and never replaces one."""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from ..domain.errors import StorageError, StorageExists, StorageNotFound
from ..domain.models import ObjectInfo, Stored
from .paths import TEMP_PREFIX, TEMP_SUFFIX, check_relative

CHUNK = 1 << 20


class LocalDestination:
    """Backups under ``root``; relative names may hold sub-directories."""

    is_local = True

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root

    def location_of(self, relative: str) -> str:
        return self._path(relative).as_uri()

    def upload(self, relative: str) -> LocalSink:
        path = self._path(relative)
        self._make_dirs(path.parent)
        if os.path.lexists(path):
            raise StorageExists(f'destination "{self.name}": {relative} already exists; '
                                "a backup is never overwritten")
        return LocalSink(self.name, relative, path)

    def read(self, relative: str) -> Iterator[bytes]:
        path = self._path(relative)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise StorageNotFound(f'destination "{self.name}": {relative} does not exist'
                                  ) from None
        except OSError as exc:
            raise StorageError(f'destination "{self.name}": cannot read {relative}: '
                               f"{exc.strerror or exc}") from None
        return self._chunks(fd)

    @staticmethod
    def _chunks(fd: int) -> Iterator[bytes]:
        with os.fdopen(fd, "rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk

    def head(self, relative: str) -> ObjectInfo | None:
        try:
            st = os.lstat(self._path(relative))
        except FileNotFoundError:
            return None
        return ObjectInfo(location=relative, size=st.st_size,
                          modified=datetime.fromtimestamp(st.st_mtime, UTC))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Regular files whose relative name starts with ``prefix``; unfinished uploads
        (hidden temp names) are never listed."""
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            base = Path(dirpath).relative_to(self.root)
            for filename in sorted(filenames):
                if filename.startswith(TEMP_PREFIX):
                    continue
                relative = (base / filename).as_posix()
                if not relative.startswith(prefix):
                    continue
                info = self.head(relative)
                if info is not None and os.path.isfile(self._path(relative)):
                    yield info

    def delete(self, relative: str) -> bool:
        try:
            os.unlink(self._path(relative))
        except FileNotFoundError:
            pass
        return True

    def put_small(self, relative: str, data: bytes) -> None:
        sink = self.upload(relative)
        try:
            sink.write(data)
            sink.finish()
        except BaseException:
            sink.abort("failed")
            raise

    def _path(self, relative: str) -> Path:
        return self.root / check_relative(relative)

    def sweep_unfinished(self, min_age: float = 60.0) -> Sequence[str]:
        """Remove the hidden temp files of uploads that died with their process.

        A live upload holds an exclusive ``flock`` on its temp file (see
        :class:`LocalSink`), so a replica starting beside another one on a shared
        folder never removes the other's upload in progress; ``min_age`` seconds
        also cover the moment between its creation and its lock."""
        removed: list[str] = []
        now = time.time()
        for dirpath, _dirs, filenames in os.walk(self.root):
            for filename in filenames:
                if not (filename.startswith(TEMP_PREFIX) and filename.endswith(TEMP_SUFFIX)):
                    continue
                path = Path(dirpath) / filename
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                except OSError:
                    continue
                try:
                    if now - os.fstat(fd).st_mtime < min_age:
                        continue
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    path.unlink()
                    removed.append(str(path))
                except OSError:
                    continue  # locked: an upload in progress (or gone meanwhile)
                finally:
                    os.close(fd)
        return removed

    def _make_dirs(self, directory: Path) -> None:
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f'destination "{self.name}": cannot create {directory}: '
                               f"{exc.strerror or exc}") from None


class LocalSink:
    """Writes a hidden temp file next to the final name; ``finish`` fsyncs it and links
    it under its name (never replacing a file); ``abort`` removes it."""

    def __init__(self, destination: str, relative: str, path: Path) -> None:
        self._destination = destination
        self._relative = relative
        self._path = path
        self._temp = path.with_name(f"{TEMP_PREFIX}{path.name}.{secrets.token_hex(4)}"
                                    f"{TEMP_SUFFIX}")
        self._hash = hashlib.sha256()
        self._size = 0
        self._stored: list[Stored] | None = None
        try:
            fd = os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise self._error("cannot create", exc) from None
        os.fchmod(fd, 0o600)
        # Held until the file is closed: tells LocalDestination.sweep_unfinished (on
        # any replica sharing this folder) that the upload is alive.
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._file = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        try:
            self._file.write(chunk)
        except OSError as exc:
            raise self._error("cannot write", exc) from None
        self._hash.update(chunk)
        self._size += len(chunk)

    def finish(self) -> list[Stored]:
        if self._stored is not None:
            return self._stored
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.link(self._temp, self._path, follow_symlinks=False)
        except FileExistsError:
            raise StorageExists(f'destination "{self._destination}": {self._relative} '
                                "already exists; a backup is never overwritten") from None
        except OSError as exc:
            raise self._error("cannot publish", exc) from None
        _unlink(self._temp)
        _fsync_dir(self._path.parent)
        self._stored = [Stored(self._relative, self._size, self._hash.hexdigest())]
        return self._stored

    def abort(self, reason: str) -> None:
        """Remove the temp file; a published file stays (it is a finished copy)."""
        if not self._file.closed:
            try:
                self._file.close()
            except OSError:
                pass  # the disk is full: the file goes anyway
        _unlink(self._temp)

    def _error(self, what: str, exc: OSError) -> StorageError:
        return StorageError(f'destination "{self._destination}": {what} {self._relative}: '
                            f"{exc.strerror or exc}")


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
