"""An object store (S3 and S3-compatible, GCS, Azure) as a destination, via obstore.

Uploads stream as multipart uploads: nothing is visible under the name until the
upload completes, and an aborted upload is aborted at the store too, so no partial
object and no open multipart upload remain. Memory is bounded by the part size
times the parts in flight, plus a few queued chunks. boto3 is used only for S3
Object Lock, which obstore has no API for.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import obstore
from obstore.store import from_url

from ..domain.errors import StorageError, StorageExists, StorageNotFound
from ..domain.models import ObjectInfo, Stored
from ..settings.destinations import DestinationConfig, DestinationKind
from .failures import storage_error
from .paths import check_relative

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig

PART_SIZE = 8 << 20
PARTS_IN_FLIGHT = 4
QUEUED_CHUNKS = 4
READ_CHUNK = 1 << 20


class ObjectDestination:
    """Backups under ``url``'s bucket and prefix; names are relative to the prefix."""

    is_local = False

    def __init__(self, config: DestinationConfig, secrets: Mapping[str, str], *,
                 part_size: int = PART_SIZE, parts_in_flight: int = PARTS_IN_FLIGHT,
                 retry: RetryConfig | None = None, client: ClientConfig | None = None
                 ) -> None:
        self.name = config.name
        self.config = config
        self.part_size = part_size
        self.parts_in_flight = parts_in_flight
        self._secrets = dict(secrets)
        parts = urlsplit(config.url)
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.where = config.endpoint or f"{config.kind.value}://{self.bucket}"
        options: dict[str, Any] = dict(self._secrets)
        client_options: dict[str, Any] = {"connect_timeout": timedelta(seconds=10),
                                          **(client or {})}
        if config.kind is DestinationKind.S3:
            if config.endpoint:
                options["endpoint"] = config.endpoint
            if config.region:
                options["region"] = config.region
            if config.force_path_style is not None:
                options["virtual_hosted_style_request"] = not config.force_path_style
            if config.object_lock is not None:
                # S3 wants a checksum on every write to an Object Lock bucket.
                options["checksum_algorithm"] = "SHA256"
        if (config.endpoint or "").startswith("http://"):
            client_options["allow_http"] = True
        try:
            opener: Any = from_url  # its overloads are per scheme; the config matches it
            self._store = opener(config.url, config=options or None,
                                 client_options=client_options, retry_config=retry)
        except Exception as exc:  # obstore raises several types for a bad config
            raise self._error("opening the store", exc) from None
        self._boto: Any = None

    def location_of(self, relative: str) -> str:
        key = "/".join(p for p in (self.prefix, check_relative(relative)) if p)
        return f"{self.config.kind.value}://{self.bucket}/{key}"

    def upload(self, relative: str) -> ObjectSink:
        if self.head(relative) is not None:
            raise StorageExists(f'destination "{self.name}": {relative} already exists; '
                                "a backup is never overwritten")
        return ObjectSink(self, check_relative(relative))

    def read(self, relative: str) -> Iterator[bytes]:
        try:
            result = obstore.get(self._store, check_relative(relative))
        except Exception as exc:
            raise self._error(f"reading {relative}", exc) from None
        return self._chunks(result.stream(min_chunk_size=READ_CHUNK), relative)

    def _chunks(self, stream: Any, relative: str) -> Iterator[bytes]:
        try:
            for chunk in stream:
                yield bytes(chunk)
        except Exception as exc:
            raise self._error(f"reading {relative}", exc) from None

    def head(self, relative: str) -> ObjectInfo | None:
        try:
            meta = obstore.head(self._store, check_relative(relative))
        except FileNotFoundError:
            return None
        except Exception as exc:
            error = self._error(f"looking up {relative}", exc)
            if isinstance(error, StorageNotFound) and "bucket" not in error.message:
                return None
            raise error from None
        return ObjectInfo(location=relative, size=meta["size"],
                          modified=meta["last_modified"], etag=_etag(meta.get("e_tag")),
                          locked_until=self._locked_until(relative))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose relative name starts with ``prefix`` (not a lock lookup each)."""
        directory = prefix.rpartition("/")[0] or None
        try:
            for batch in obstore.list(self._store, prefix=directory, chunk_size=1000):
                for meta in batch:
                    if meta["path"].startswith(prefix):
                        yield ObjectInfo(location=meta["path"], size=meta["size"],
                                         modified=meta["last_modified"],
                                         etag=_etag(meta.get("e_tag")))
        except Exception as exc:
            raise self._error("listing", exc) from None

    def delete(self, relative: str) -> bool:
        """Delete; False while S3 Object Lock holds the object (kept, not a failure).
        On a lock bucket every version is deleted, so no hidden copy stays behind."""
        key = self._key(relative)
        if self.config.object_lock is None:
            try:
                obstore.delete(self._store, check_relative(relative))
            except FileNotFoundError:
                pass
            except Exception as exc:
                raise self._error(f"deleting {relative}", exc) from None
            return True
        locked = self._locked_until(relative)
        if locked is not None and locked > datetime.now(UTC):
            return False
        client = self._s3()
        try:
            listing = client.list_object_versions(Bucket=self.bucket, Prefix=key)
            for version in [*listing.get("Versions", ()), *listing.get("DeleteMarkers", ())]:
                if version["Key"] == key:
                    client.delete_object(Bucket=self.bucket, Key=key,
                                         VersionId=version["VersionId"])
        except Exception as exc:
            if "AccessDenied" in str(exc) or "locked" in str(exc).lower():
                return False
            raise self._error(f"deleting {relative}", exc) from None
        return True

    def put_small(self, relative: str, data: bytes) -> None:
        """One request, refused if the name exists (a conditional put); locked like the
        backups when Object Lock is configured."""
        try:
            result = obstore.put(self._store, check_relative(relative), data, mode="create",
                                 attributes=self._attributes())
        except Exception as exc:
            raise self._error(f"writing {relative}", exc) from None
        self.lock(relative, result.get("version"))

    def lock(self, relative: str, version: str | None) -> datetime | None:
        """Apply the configured Object Lock retention to a stored object."""
        lock = self.config.object_lock
        if lock is None:
            return None
        until = datetime.now(UTC) + timedelta(days=lock.days)
        extra = {"VersionId": version} if version and version != "null" else {}
        try:
            self._s3().put_object_retention(
                Bucket=self.bucket, Key=self._key(relative), **extra,
                Retention={"Mode": lock.mode.value, "RetainUntilDate": until})
        except Exception as exc:
            raise self._error(f"locking {relative} (Object Lock {lock.mode.value})", exc
                              ) from None
        return until

    def sweep_unfinished(self) -> Sequence[str]:
        """Nothing here: an object store keeps no partial object (a multipart upload
        is invisible until completed; :meth:`abort_unfinished` frees its parts)."""
        return []

    def abort_unfinished(self, older_than: timedelta = timedelta(days=1)) -> int:
        """Abort the multipart uploads under the prefix started more than
        ``older_than`` ago: those whose abort could not reach the store (the endpoint
        was gone). S3 only; elsewhere the store's lifecycle rules do it. Returns how
        many were aborted."""
        if self.config.kind is not DestinationKind.S3:
            return 0
        cutoff = datetime.now(UTC) - older_than
        client, aborted = self._s3(), 0
        prefix = f"{self.prefix}/" if self.prefix else ""
        try:
            for page in client.get_paginator("list_multipart_uploads").paginate(
                    Bucket=self.bucket, Prefix=prefix):
                for upload in page.get("Uploads", ()):
                    if upload["Initiated"] <= cutoff:
                        client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                      UploadId=upload["UploadId"])
                        aborted += 1
        except Exception as exc:
            raise self._error("aborting unfinished uploads", exc) from None
        return aborted

    def _locked_until(self, relative: str) -> datetime | None:
        if self.config.object_lock is None:
            return None
        try:
            head = self._s3().head_object(Bucket=self.bucket, Key=self._key(relative))
        except Exception:
            return None  # gone, or not readable: the plain head already answered
        until = head.get("ObjectLockRetainUntilDate")
        return until.astimezone(UTC) if isinstance(until, datetime) else None

    def _attributes(self) -> Any:
        return ({"Storage-Class": self.config.storage_class}
                if self.config.storage_class else None)

    def _key(self, relative: str) -> str:
        return "/".join(p for p in (self.prefix, check_relative(relative)) if p)

    def _s3(self) -> Any:
        """A boto3 client, only for Object Lock."""
        if self._boto is None:
            import boto3
            from botocore.config import Config

            c = self.config
            style = "path" if c.force_path_style or c.force_path_style is None else "virtual"
            self._boto = boto3.client(
                "s3", endpoint_url=c.endpoint, region_name=c.region or "us-east-1",
                aws_access_key_id=self._secrets.get("access_key_id"),
                aws_secret_access_key=self._secrets.get("secret_access_key"),
                aws_session_token=self._secrets.get("session_token"),
                config=Config(s3={"addressing_style": style}, retries={"max_attempts": 3}))
        return self._boto

    def _error(self, action: str, exc: BaseException) -> StorageError:
        return storage_error(self.name, action, exc, where=self.where, bucket=self.bucket,
                             secrets=self._secrets.values())


class _Aborted(Exception):
    """Raised into obstore's upload so it aborts the multipart upload."""


_END = object()
_ABORT = object()


class ObjectSink:
    """A multipart upload fed from ``write``: a bounded queue read by a thread running
    ``obstore.put``. It completes on ``finish``; ``abort`` raises into the upload so
    obstore aborts it at the store."""

    def __init__(self, destination: ObjectDestination, relative: str) -> None:
        self._dest = destination
        self._relative = relative
        self._queue: queue.Queue[object] = queue.Queue(maxsize=QUEUED_CHUNKS)
        self._sha = hashlib.sha256()
        self._parts = _PartDigests(destination.part_size)
        self._size = 0
        self._result: dict[str, Any] | None = None
        self._failure: BaseException | None = None
        self._stored: list[Stored] | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._upload, daemon=True,
                                        name=f"upload-{destination.name}")
        self._thread.start()

    def write(self, chunk: bytes) -> None:
        if self._closed:
            raise StorageError(f'destination "{self._dest.name}": upload of '
                               f"{self._relative} is closed")
        if self._failure is not None:
            raise self._raised()
        data = bytes(chunk)
        while True:
            try:
                self._queue.put(data, timeout=0.2)
                break
            except queue.Full:
                if not self._thread.is_alive():
                    raise self._raised() from None
        self._sha.update(data)
        self._parts.update(data)
        self._size += len(data)

    def finish(self) -> list[Stored]:
        if self._stored is not None:
            return self._stored
        self._closed = True
        self._put_control(_END)
        self._thread.join()
        if self._result is None:
            raise self._raised()
        try:
            self._dest.lock(self._relative, self._result.get("version"))
        except StorageError:
            self._dest.delete(self._relative)  # not locked yet: the service may remove it
            raise
        self._stored = [Stored(self._relative, self._size, self._sha.hexdigest(),
                               etag=self._parts.etag())]
        return self._stored

    def abort(self, reason: str) -> None:
        """Abort the multipart upload; a completed upload stays (a finished copy)."""
        if self._stored is not None or not self._thread.is_alive():
            return
        self._closed = True
        self._put_control(_ABORT)
        self._thread.join(timeout=60)

    def _put_control(self, item: object) -> None:
        while self._thread.is_alive():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                if item is _ABORT:
                    try:
                        self._queue.get_nowait()  # drop data: it is never stored
                    except queue.Empty:
                        pass

    def _chunks(self) -> Iterator[bytes]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if item is _ABORT:
                raise _Aborted("upload aborted")
            assert isinstance(item, bytes)
            yield item

    def _upload(self) -> None:
        dest = self._dest
        try:
            result = obstore.put(dest._store, self._relative, self._chunks(),
                                 use_multipart=True, chunk_size=dest.part_size,
                                 max_concurrency=dest.parts_in_flight,
                                 attributes=dest._attributes())
            self._result = dict(result)
        except BaseException as exc:  # handed to the writer's thread
            self._failure = exc

    def _raised(self) -> StorageError:
        exc = self._failure or RuntimeError("the upload stopped")
        return self._dest._error(f"upload of {self._relative}", exc)


class _PartDigests:
    """The S3 ETag of a multipart upload: MD5 of the parts' MD5s, ``-<parts>``."""

    def __init__(self, part_size: int) -> None:
        self._part_size = part_size
        self._digests: list[bytes] = []
        self._current = hashlib.md5(usedforsecurity=False)
        self._filled = 0

    def update(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            take = min(len(view), self._part_size - self._filled)
            self._current.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self._part_size:
                self._digests.append(self._current.digest())
                self._current = hashlib.md5(usedforsecurity=False)
                self._filled = 0

    def etag(self) -> str:
        digests = self._digests + ([self._current.digest()] if self._filled else [])
        if not digests:
            return ""
        joined = hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest()
        return f"{joined}-{len(digests)}"


def _etag(value: Any) -> str:
    return str(value or "").strip('"')
