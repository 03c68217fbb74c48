"""Rebuilding a data directory from a chain of physical backups.

Each backup of the chain is unpacked into a private scratch directory beside the
output (pg_combinebackup reads plain directories, not tars), by child processes
(the full backup and the incrementals at once). Every byte is checked
once against the checksums pg_basebackup recorded in the backup's manifest:
``pg_verifybackup`` over each unpacked backup (the last one with its WAL), in a
thread beside the rest. The chain is combined with ``pg_combinebackup --link`` (the
scratch copies are ours and removed afterwards, so linking instead of copying saves
a full copy) and the result checked by ``pg_verifybackup --skip-checksums``: every
file of its manifest present with its size, nothing extra, its WAL parsed. A single
full backup is moved in place once checked. Tablespaces (``<oid>.tar.gz``) are
unpacked beside each backup and put where the caller says (:mod:`.tablespaces`).
The output is synced (each file, each directory, and its entry in the parent) while
the scratch copies are removed, so that a restore that succeeded survives a crash.
Whatever fails, no scratch directory and no half-built output is left behind.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

from ..backup.files import fsync_dir
from ..domain.errors import FailedPrecondition, InvalidArgument
from . import tablespaces
from .basebackup import MANIFEST


class CombineFailed(Exception):
    """A tool failed or a backup could not be read; the message says which."""


def check_output_dir(path_text: str) -> Path:
    """``target_directory`` must be absolute, absent or empty, in an existing directory."""
    if not path_text.startswith("/"):
        raise InvalidArgument(f"target_directory: must be an absolute path, got {path_text!r}")
    path = Path(os.path.normpath(path_text))
    if not path.parent.is_dir():
        raise InvalidArgument(f"target_directory: the parent directory {path.parent} does not "
                              "exist; create it first")
    if os.path.lexists(path):
        if path.is_symlink() or not path.is_dir():
            raise InvalidArgument(f"target_directory: {path} exists and is not a directory; "
                                  "give a new or empty directory")
        if any(path.iterdir()):
            raise FailedPrecondition(f"target_directory: {path} is not empty; a restore never "
                                     "writes over files: give a new or empty directory")
    return path


# Unpacks tars in a child process (stdlib only: it starts in tens of milliseconds),
# with tarfile's "data" filter: nothing outside the directory, no device files, no
# set-uid bits. Arguments: pairs of archive and directory. On failure it names the
# archive on stderr and exits 1.
_UNTAR = """
import sys, tarfile
args = sys.argv[1:]
for archive, where in zip(args[::2], args[1::2]):
    try:
        with tarfile.open(archive, "r|*") as tar:
            tar.extractall(where, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        print(f"{archive} cannot be unpacked: {exc}", file=sys.stderr)
        sys.exit(1)
"""


def _archives(backup: Path, into: Path, *, wal: bool) -> list[str]:
    """Make ``into`` (and ``into/pg_wal``) and copy the manifest; the (archive,
    directory) arguments of the child that unpacks the backup's tars."""
    into.mkdir(mode=0o700)
    out = []
    for name, where in (("base.tar", into), ("pg_wal.tar", into / "pg_wal")):
        archive = next((backup / f"{name}{ext}" for ext in (".gz", "")
                        if (backup / f"{name}{ext}").is_file()), None)
        where.mkdir(mode=0o700, exist_ok=True)
        if archive is None:
            if name == "base.tar":
                raise CombineFailed(f"{backup}: base.tar.gz is missing")
            continue
        if wal or name == "base.tar":
            out += [str(archive), str(where)]
    try:  # each tablespace beside it, linked from pg_tblspc (physical/tablespaces.py)
        out += tablespaces.unpack_args(backup, into)
    except (ValueError, OSError, EOFError, tarfile.TarError) as exc:
        raise CombineFailed(f"{backup}: its tablespaces cannot be read: {exc}") from None
    shutil.copyfile(backup / MANIFEST, into / MANIFEST)
    return out


def unpack(backups: Sequence[Path], parts: Sequence[Path]) -> None:
    """Each physical backup (``base.tar.gz``, ``pg_wal.tar.gz``, ``backup_manifest``) as
    the plain directory pg_combinebackup and PostgreSQL read, in ``parts``. Only the
    last one's WAL is unpacked: the rebuilt directory takes the WAL of the newest
    backup. One child per backup, as many at once as there are cores, the full
    backup (the bulk) first: the incrementals (many small files each) are unpacked
    beside it."""
    last = len(backups) - 1
    jobs = [_archives(b, p, wal=i == last) for i, (b, p) in enumerate(zip(backups, parts,
                                                                          strict=True))]
    width = max(1, min(len(os.sched_getaffinity(0)), 8))
    running: list[subprocess.Popen[str]] = []
    problems: list[str] = []

    def reap(child: subprocess.Popen[str]) -> None:
        _, err = child.communicate()
        if child.returncode != 0:
            problems.append(err.strip().splitlines()[-1] if err.strip() else
                            f"the unpacking process exited with {child.returncode}")

    try:
        for args in jobs:
            while len(running) >= width:
                done = next((c for c in running if c.poll() is not None), None)
                if done is None:
                    time.sleep(0.01)
                    continue
                running.remove(done)
                reap(done)
            if problems:
                break
            running.append(subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _UNTAR, *args], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        for child in running:
            reap(child)
        running.clear()
    finally:
        for child in running:  # an exception on the way: no child outlives the call
            child.kill()
            child.wait()
    if problems:
        raise CombineFailed("; ".join(problems))


def rebuild(backups: Sequence[Path], output: Path, *, pg_combinebackup: str,
            pg_verifybackup: str, sync: bool = True,
            places: Mapping[str, Path] | None = None) -> None:
    """The data directory of the last of ``backups`` (full backup first) in ``output``,
    verified, and synced unless ``sync`` is false (a scratch copy that is deleted
    after use); its tablespaces in ``places`` (by OID). ``output`` and ``places`` are
    absent or empty; on failure they are left so.

    The unpacked backups are checked against their manifests while the chain is
    combined and the result written back (a thread each): the checks read what the
    unpacking just wrote, from memory, and pg_combinebackup mostly writes. The output
    takes its final name only once every check passed; a damaged backup is what is
    reported when both the check and the combining fail."""
    places = places or {}
    existed = output.exists()
    had = tablespaces.claim(places)
    scratch = output.parent / f".pgbackup-restore-{secrets.token_hex(4)}"
    scratch.mkdir(mode=0o700)
    try:
        parts = [scratch / str(i) for i in range(len(backups))]
        unpack(backups, parts)
        with ThreadPoolExecutor(2, thread_name_prefix="restore") as pool:
            checked = pool.submit(_verify_parts, parts, backups, pg_verifybackup)
            try:
                if len(parts) == 1:
                    if sync:
                        sync_tree(parts[0])  # while it is checked; then only renamed
                    checked.result()
                    tablespaces.move_into_place(parts[0], places)
                    if existed:
                        output.rmdir()
                    parts[0].rename(output)
                    tablespaces.finish(output, places)
                    if sync and places:  # the tablespaces moved in, the rewritten map
                        _sync_all(output / tablespaces.MAP, places)
                else:
                    link = ["--link"] if tablespaces.same_device(scratch, places) else []
                    _run([pg_combinebackup, *link, "--no-sync", "-o", str(output),
                          *tablespaces.combine_args(parts[-1], places), *map(str, parts)],
                         "pg_combinebackup")
                    verify_directory(output, pg_verifybackup, "the combined directory",
                                     checksums=False)
                    tablespaces.finish(output, places)
                    synced = pool.submit(_sync_all, output, places) if sync else None
                    checked.result()
                    # The scratch copies go (freeing what the combined files replaced)
                    # while the output is written back: one is metadata, the other data.
                    shutil.rmtree(scratch, ignore_errors=True)
                    if synced is not None:
                        synced.result()
            except BaseException:
                wait([checked])
                damage = checked.exception()
                if damage is not None:
                    raise damage from None
                raise
        os.chmod(output, 0o700)
        if sync:
            for made in (output, *places.values()):
                fsync_dir(made)
                fsync_dir(made.parent)  # its own entry
    except BaseException:
        if output.exists():
            shutil.rmtree(output, ignore_errors=True)
            if existed:
                output.mkdir(mode=0o700)
        tablespaces.discard(places, had)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _sync_all(output: Path, places: Mapping[str, Path]) -> None:
    """``output`` (a directory tree, or one file) and each tablespace directory."""
    for tree in (output, *places.values()):
        sync_tree(tree)


def _verify_parts(parts: Sequence[Path], backups: Sequence[Path], pg_verifybackup: str) -> None:
    """pg_verifybackup over each unpacked backup, checksums included; only the last
    one's WAL is there to parse (it is the restored directory's)."""
    for i, part in enumerate(parts):
        verify_directory(part, pg_verifybackup, backups[i].name,
                         parse_wal=i == len(parts) - 1)


def sync_tree(path: Path) -> None:
    """fsync every file under ``path``, then every directory (deepest first); ``path``
    itself when it is a file."""
    if not path.is_dir():
        _fsync_file(str(path))
        return
    dirs = []
    for root, _, names in os.walk(path):
        dirs.append(root)
        for name in names:
            full = os.path.join(root, name)
            if not os.path.islink(full):
                _fsync_file(full)
    for root in reversed(dirs):
        fsync_dir(Path(root))


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def verify_directory(path: Path, pg_verifybackup: str, what: str, *, parse_wal: bool = True,
                     checksums: bool = True) -> None:
    """pg_verifybackup over an unpacked backup or a rebuilt data directory."""
    args = [pg_verifybackup, "--quiet"]
    if not parse_wal:
        args.append("--no-parse-wal")
    if not checksums:
        args.append("--skip-checksums")
    _run([*args, str(path)], f"pg_verifybackup ({what})")


def _run(args: list[str], name: str) -> None:
    out = subprocess.run(args, capture_output=True, text=True, check=False,
                         stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        lines = (out.stderr.strip() or out.stdout.strip()).splitlines()
        raise CombineFailed(f"{name} failed: {' / '.join(lines[-5:])}")
