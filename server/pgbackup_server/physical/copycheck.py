"""Quick verify of a physical backup chain without an identity.

A backup of the chain whose folder is gone from this host is read from a copy at a
destination; when that copy is encrypted and there is no identity to decrypt it
(none in the request, no ``encryption.identityFile``), a quick verify checks the
copy as stored instead, as it does a logical backup's (``restore/verify.py``
``quick_verify``): the folder is listed and every object its manifest records must
be there and nothing else, each of its recorded size, and each unchanged: by the
store's checksum (an S3 ETag) where the manifest recorded one, else read back and
hashed. The recorded objects are those of the copy: their names and SHA-256 give
the digest recorded for the copy (``backup.files.manifest_digest``). A copy whose
manifest lists no objects (written before they were recorded, or unreadable) is
read back whole and checked against that digest. A backup whose folder is here is
checked against its ``SHA256SUMS`` as always.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import structlog

from ..backup.files import manifest_digest
from ..domain.errors import BackupError
from ..domain.models import ObjectInfo, Run
from ..restore.models import Corrupt
from ..storage.catalog import Manifest, ManifestFile, manifest_name
from .fetch import ChainFiles, Remote

log = structlog.get_logger("pgbackup")

STORE_CHECKSUM = "objects' sizes and store checksums"
READ_BACK = "objects' sizes and SHA-256, read back"
WHOLE = "the folder's SHA-256, read back"


def has_identity(files: ChainFiles, identity: str) -> bool:
    """An identity to decrypt with: the request's, or ``encryption.identityFile``."""
    enc = files.config.encryption
    return bool(identity) or (enc is not None and enc.identity_file is not None)


def undecryptable(files: ChainFiles, members: Sequence[Run], identity: str) -> bool:
    """Some backup of the chain can only be read from an encrypted copy, and there is
    no identity to decrypt it with: a quick verify checks the copies as stored."""
    if has_identity(files, identity):
        return False
    for member in members:
        if files.is_local(member):
            continue
        for dest, copy in files.copies_of(member)[:1]:
            try:
                if files.remote(member, dest, copy).encrypted:
                    return True
            except BackupError:
                continue  # reported when the copy is checked
    return False


def check_copies(files: ChainFiles, run: Run, *, checked: Sequence[str] = ()) -> None:
    """Every copy of ``run`` at a destination as stored, as a quick verify checks a
    logical backup's: a damaged copy fails the verify even where the folder here is
    intact (it is what a restore reads once this host is gone). ``checked``: the
    destinations already checked. Corrupt names the object missing or damaged."""
    for dest, copy in files.copies_of(run):
        if dest.name in checked:
            continue
        how = check_copy(run, files.remote(run, dest, copy))
        log.info("Copy checked", run_id=run.id, destination=dest.name, checked=how,
                 decrypted=False)


def check_stored(files: ChainFiles, members: Sequence[Run],
                 check_local: Callable[[Run], None]) -> dict[int, str]:
    """Each backup of the chain: its folder here with ``check_local``, else a copy at
    the first destination whose stored objects are as recorded. Corrupt names the
    backup and the object missing or damaged. Returns the destination checked for
    each backup read from one, by run id."""
    used: dict[int, str] = {}
    for member in members:
        if files.is_local(member):
            check_local(member)
            continue
        candidates = files.copies_of(member)
        if not candidates:
            raise Corrupt(f"backup {member.id}: its folder {member.file_path} is missing "
                          "from disk and no destination holds a copy of it")
        problems = []
        for dest, copy in candidates:
            try:
                how = check_copy(member, files.remote(member, dest, copy))
            except Corrupt as exc:
                problems.append(exc.reason)
            except BackupError as exc:
                problems.append(f"backup {member.id}: reading its copy at destination "
                                f"{dest.name!r} failed: {exc.message}")
            else:
                log.info("Copy checked", run_id=member.id, destination=dest.name,
                         checked=how, decrypted=False)
                used[member.id] = dest.name
                break
            log.warning("Copy of a physical backup not as stored", run_id=member.id,
                        destination=dest.name, reason=problems[-1])
        else:
            raise Corrupt(f"backup {member.id}: its folder is missing from disk and no "
                          f"destination holds a copy as stored: {'; '.join(problems)}")
    return used


def check_copy(run: Run, remote: Remote) -> str:
    """The copy's objects as listed against those recorded; how they were checked.
    Corrupt names the object missing, unexpected or changed."""
    prefix = remote.copy.location.rstrip("/") + "/"
    where = remote.where.rstrip("/")
    listed = {o.location.removeprefix(prefix): o for o in remote.objects}
    recorded = recorded_files(run, remote)
    if recorded is None:
        return _check_whole(run, remote, listed, where)
    for f in recorded:
        info = listed.get(f.name)
        if info is None:
            raise Corrupt(f"backup {run.id}: {where}/{f.name} is missing")
        if info.size != f.size:
            raise Corrupt(f"backup {run.id}: {where}/{f.name} holds {info.size} bytes, "
                          f"{f.size} were stored: it is "
                          f"{'truncated' if info.size < f.size else 'changed'}")
    extra = sorted(set(listed) - {f.name for f in recorded})
    if extra:
        raise Corrupt(f"backup {run.id}: unexpected file {extra[0]} in {where}")
    read = 0
    for f in recorded:
        info = listed[f.name]
        if f.etag and info.etag:
            if info.etag != f.etag:
                raise Corrupt(f"backup {run.id}: {where}/{f.name} has changed since it was "
                              f"stored: the store's checksum {info.etag} differs from the "
                              f"one recorded {f.etag}")
            continue
        size, digest = _read_back(remote, info.location)
        read += 1
        if (size, digest) != (f.size, f.sha256):
            raise Corrupt(f"backup {run.id}: {where}/{f.name} has changed since it was "
                          "stored (SHA-256 differs)")
    if read == 0:
        return STORE_CHECKSUM
    return READ_BACK if read == len(recorded) else f"{STORE_CHECKSUM}; {READ_BACK}"


def recorded_files(run: Run, remote: Remote) -> tuple[ManifestFile, ...] | None:
    """The objects the copy's manifest records, when they are the copy recorded here
    (their size and digest are the copy's); None when it records none."""
    try:
        data = b"".join(remote.dest.read(manifest_name(remote.copy.location)))
        files = Manifest.from_json(data).files
    except (BackupError, ValueError) as exc:
        log.warning("Manifest of a physical backup's copy not readable", run_id=run.id,
                    destination=remote.dest.name, error=getattr(exc, "message", str(exc)))
        return None
    if not files:
        return None
    copy = remote.copy
    if (copy.sha256 and manifest_digest((f.name, f.sha256) for f in files) != copy.sha256
            or copy.size_bytes and sum(f.size for f in files) != copy.size_bytes):
        log.warning("Manifest of a physical backup's copy does not describe it",
                    run_id=run.id, destination=remote.dest.name)
        return None
    return files


def _check_whole(run: Run, remote: Remote, listed: dict[str, ObjectInfo],
                 where: str) -> str:
    """Every listed object read back: their sizes and SHA-256 against the copy's."""
    if not listed:
        raise Corrupt(f"backup {run.id}: no file of it is in {where}")
    digests, total = [], 0
    for name in sorted(listed):
        size, digest = _read_back(remote, remote.copy.location.rstrip("/") + "/" + name)
        digests.append((name, digest))
        total += size
    copy = remote.copy
    if copy.size_bytes and total != copy.size_bytes:
        raise Corrupt(f"backup {run.id}: the files in {where} hold {total} bytes, "
                      f"{copy.size_bytes} were stored")
    if copy.sha256 and manifest_digest(digests) != copy.sha256:
        raise Corrupt(f"backup {run.id}: the files in {where} are not those stored there "
                      "(their SHA-256 differs from the one recorded for the copy)")
    return WHOLE


def _read_back(remote: Remote, location: str) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    for chunk in remote.dest.read(location):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()
