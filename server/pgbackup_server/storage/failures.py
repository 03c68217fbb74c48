"""Object-store errors in words an operator acts on, with every secret scrubbed."""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..domain.errors import StorageError, StorageExists, StorageNotFound

_CODE = re.compile(r"<Code>([A-Za-z]+)</Code>")
_STATUS = re.compile(r"status code: (\d{3})")
_UNREACHABLE = ("error sending request", "connection refused", "connect error",
                "operation timed out", "timed out", "connection reset", "broken pipe",
                "dns error", "tcp connect")
_DENIED = {"InvalidAccessKeyId": "the access key id is not known to the store",
           "SignatureDoesNotMatch": "the secret access key does not match the access key id",
           "AccessDenied": "access denied", "ExpiredToken": "the session token expired",
           "InvalidToken": "the session token is invalid"}
_MAX = 400


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value replaced by ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def storage_error(destination: str, action: str, exc: BaseException, *, where: str,
                  bucket: str, secrets: Iterable[str]) -> StorageError:
    """``destination "s3": upload of db/x.sql.zst failed: bucket "b" does not exist``.

    ``where`` names the store (endpoint or URL) for errors of reach."""
    raw = str(exc)
    lowered = raw.lower()
    code = m.group(1) if (m := _CODE.search(raw)) else ""
    status = m.group(1) if (m := _STATUS.search(raw)) else ""
    prefix = f'destination "{destination}": {action} failed: '
    if code == "NoSuchBucket":
        return StorageNotFound(f'{prefix}the bucket "{bucket}" does not exist; create it or '
                               "fix the destination's url")
    if code in _DENIED or status == "403":
        reason = _DENIED.get(code, "access denied")
        return StorageError(f"{prefix}{reason}; check the credentials the destination names "
                            "(or the environment/profile/instance role) and the bucket policy")
    if type(exc).__name__ == "AlreadyExistsError" or code == "PreconditionFailed":
        return StorageExists(f"{prefix}the name is taken; a backup is never overwritten")
    if isinstance(exc, FileNotFoundError) or code == "NoSuchKey" or status == "404":
        return StorageNotFound(f"{prefix}no such object")
    if any(word in lowered for word in _UNREACHABLE):
        return StorageError(f"{prefix}cannot reach {where} (the store stopped answering or "
                            "refused the connection); the unfinished upload was not kept")
    first = scrub(raw.strip().splitlines()[0] if raw.strip() else type(exc).__name__, secrets)
    return StorageError(prefix + (first if len(first) <= _MAX else first[:_MAX - 3] + "..."))
