"""Safe file handling for backups: confinement, private modes, atomic publish.

Backup files hold a whole database, so they are created 0600 in 0700
directories whatever the umask, never through a symlink, and published
under their final name only once complete and on disk.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

from ..domain.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from ..domain.validation import refuse_control_characters
from .naming import BACKUP_NAME, DIRECTORY_EXTENSIONS, TEMP_NAME

CHUNK = 1 << 20
PROBE_PREFIX = ".backupd-probe-"
MAX_PATH = 4096
NAME_MAX = 255


def confine(requested: str, allowed: tuple[Path, ...], field: str = "backup_dir") -> Path:
    """Resolve ``requested`` (following ``..`` and symlinks) and require it to lie
    inside one of ``allowed``; return the resolved path."""
    if not requested or not requested.strip():
        raise InvalidArgument(f"{field}: required; give a directory inside one of: "
                              f"{_roots(allowed)}")
    refuse_control_characters(field, requested)
    if len(requested) > MAX_PATH:
        raise InvalidArgument(f"{field}: longer than {MAX_PATH} characters")
    if any(len(part.encode("utf-8", "surrogateescape")) > NAME_MAX
           for part in requested.split("/")):
        raise InvalidArgument(f"{field}: a path component is longer than {NAME_MAX} bytes")
    if not os.path.isabs(os.path.expanduser(requested)):
        raise InvalidArgument(f"{field}: must be an absolute path inside one of: "
                              f"{_roots(allowed)}")
    try:
        resolved = Path(os.path.realpath(os.path.expanduser(requested)))
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"{field}: cannot be resolved ({exc})") from None
    for root in allowed:
        real_root = Path(os.path.realpath(root))
        if resolved == real_root or real_root in resolved.parents:
            return resolved
    raise PermissionDenied(f"{field}: {requested!r} is outside the allowed backup directories; "
                           f"allowed roots: {_roots(allowed)} (see backup.allowedDirectories)")


def _roots(allowed: tuple[Path, ...]) -> str:
    return ", ".join(str(p) for p in allowed)


def prepare_backup_dir(path: Path, field: str, *, requested: bool) -> None:
    """Make sure backups can be written to ``path`` before anything runs: create it
    (and missing parents) 0700, then create and remove a private file in it, the
    one test that catches modes, read-only mounts and immutable flags, even as root.

    A path that is or lies below something other than a directory is the caller's
    mistake when the caller gave it (``requested``: INVALID_ARGUMENT), a configuration
    problem otherwise; a directory that cannot be created or written is
    FAILED_PRECONDITION. Both name ``field`` and the fix."""
    blocker = path
    while not os.path.lexists(blocker) and blocker != blocker.parent:
        blocker = blocker.parent
    if not os.path.isdir(blocker):
        kind = ("a broken symlink" if os.path.islink(blocker) else
                "a regular file" if os.path.isfile(blocker) else "not a directory")
        where = (f"{path} is {kind}" if blocker == path else
                 f"{path} lies below {blocker}, which is {kind}")
        error = InvalidArgument if requested else FailedPrecondition
        fix = ("choose a directory path" if requested else
               f"move it away or point {field} at a directory")
        raise error(f"{field}: {where}; {fix}")
    missing: list[Path] = []
    p = path
    while not os.path.lexists(p):
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
            os.chmod(d, 0o700)  # mkdir's mode is masked by the umask
        except FileExistsError:
            pass
        except OSError as exc:
            raise FailedPrecondition(
                f"{field}: cannot create the backup directory {d}: {exc.strerror or exc}; "
                f"make {d.parent} writable for the user backupd runs as (uid {os.geteuid()}) "
                "or create the directory yourself") from None
    if not os.path.isdir(path):  # replaced while we looked
        raise FailedPrecondition(f"{field}: {path} is not a directory")
    probe = path / f"{PROBE_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        os.close(create_private_file(probe))
    except OSError as exc:
        raise FailedPrecondition(
            f"{field}: the backup directory {path} exists but cannot be written: "
            f"{exc.strerror or exc}; make it writable for the user backupd runs as (uid "
            f"{os.geteuid()}): check its permissions, its immutable flag (lsattr -d) and "
            "whether its file system is mounted read-only") from None
    remove_quietly(probe)


def create_private_file(path: Path) -> int:
    """Open a new file for writing, 0600, never following or replacing anything."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    os.fchmod(fd, 0o600)
    return fd


def publish(temp: Path, directory: Path, stem: str, ext: str) -> Path:
    """Give the finished ``temp`` its final name without ever replacing a file:
    ``link`` fails with EEXIST where ``rename`` would overwrite. A second backup
    in the same second gets ``_2``, ``_3``..."""
    for n in range(1, 1000):
        final = directory / (f"{stem}{ext}" if n == 1 else f"{stem}_{n}{ext}")
        try:
            os.link(temp, final, follow_symlinks=False)
        except FileExistsError:
            continue
        os.unlink(temp)
        fsync_dir(directory)
        return final
    raise OSError(errno.EEXIST, f"no free name for {stem}{ext} in {directory}")


def publish_directory(temp: Path, directory: Path, stem: str, ext: str) -> Path:
    """Like :func:`publish` for a directory backup: the final name is claimed with
    ``mkdir`` (fails if it exists), then the finished directory replaces that
    empty placeholder by ``rename``."""
    for n in range(1, 1000):
        final = directory / (f"{stem}{ext}" if n == 1 else f"{stem}_{n}{ext}")
        try:
            os.mkdir(final, 0o700)
        except FileExistsError:
            continue
        os.rename(temp, final)
        fsync_dir(directory)
        return final
    raise OSError(errno.EEXIST, f"no free name for {stem}{ext} in {directory}")


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_quietly(path: Path | str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def is_our_regular_file(path: Path) -> bool:
    """True when ``path`` is a regular file (a real directory for the directory
    format; never a symlink) named as the service names its backups."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    kind_ok = (stat.S_ISDIR(st.st_mode) if path.name.endswith(DIRECTORY_EXTENSIONS)
               else stat.S_ISREG(st.st_mode))
    return kind_ok and bool(BACKUP_NAME.match(path.name))


def backup_size(path: Path) -> int:
    """Bytes a backup occupies: the file, or every file of a directory backup."""
    if path.is_dir() and not path.is_symlink():
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            return _tree_size_at(fd, ".")
        finally:
            os.close(fd)
    return os.lstat(path).st_size


def _tree_size_at(dir_fd: int, name: str) -> int:
    total = 0
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    try:
        for entry in os.scandir(fd):
            if entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
    finally:
        os.close(fd)
    return total


def delete_backup(path: Path, allowed: tuple[Path, ...]) -> int | None:
    """Delete a backup file the service wrote; return its size, or None when the
    path is no longer such a file. Never deletes through a symlink: the directory
    must still resolve inside an allowed root, and the name is unlinked relative
    to that directory only if it is a regular file there."""
    real_dir = Path(os.path.realpath(path.parent))
    roots = [Path(os.path.realpath(r)) for r in allowed]
    if not any(real_dir == r or r in real_dir.parents for r in roots):
        return None
    if not BACKUP_NAME.match(path.name):
        return None
    try:
        dir_fd = os.open(real_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.stat(path.name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode) and path.name.endswith(DIRECTORY_EXTENSIONS):
            size = _tree_size_at(dir_fd, path.name)
            # rmtree with dir_fd works through file descriptors and never follows
            # symlinks inside the tree.
            shutil.rmtree(path.name, dir_fd=dir_fd)
            return size
        if not stat.S_ISREG(st.st_mode):
            return None
        os.unlink(path.name, dir_fd=dir_fd)
        return st.st_size
    except FileNotFoundError:
        return None
    finally:
        os.close(dir_fd)


def remove_temp(path: Path) -> bool:
    """Remove a temporary file or, for the directory format, directory of ours;
    True if there was one."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path, ignore_errors=True)
    else:
        remove_quietly(path)
    return True


def remove_orphan_temps(directory: Path) -> list[Path]:
    """Delete temporary files an earlier crash left in ``directory``; only names
    the service uses, and only regular files."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if not TEMP_NAME.match(entry.name):
            continue
        if entry.is_file(follow_symlinks=False):
            remove_quietly(entry.path)
            removed.append(Path(entry.path))
        elif entry.is_dir(follow_symlinks=False) and any(
                f"{ext}.run" in entry.name for ext in DIRECTORY_EXTENSIONS):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


def private_files(path: Path) -> None:
    """Make the files pg_dump wrote in a directory backup 0600 (it creates them with
    its umask, 0644 by default), like every other backup file."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for entry in os.scandir(fd):
            if entry.is_file(follow_symlinks=False):
                os.chmod(entry.name, 0o600, dir_fd=fd)
    finally:
        os.close(fd)


def tree_size(path: Path) -> int:
    total = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def tree_digest(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of a directory backup (see :func:`manifest_digest`).
    Files are hashed two at a time (hashlib releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    names = sorted(os.listdir(path))
    with ThreadPoolExecutor(2, thread_name_prefix="digest") as pool:
        results = list(pool.map(lambda name: file_hash(path / name), names))
    return (sum(size for size, _ in results),
            manifest_digest((name, digest) for name, (_, digest)
                            in zip(names, results, strict=True)))


def manifest_digest(digests: Iterable[tuple[str, str]]) -> str:
    """The recorded SHA-256 of a folder of files (a directory or physical backup, or
    its copy at a destination): the hash of its manifest, ``<sha256>  <name>`` lines
    sorted by name. ``digests``: (name, SHA-256) of each file."""
    lines = "".join(f"{digest}  {name}\n" for name, digest in sorted(digests))
    return hashlib.sha256(lines.encode()).hexdigest()


def file_hash(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of a file."""
    digest = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    size = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
            size += n
    return size, digest.hexdigest()
