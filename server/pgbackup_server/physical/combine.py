"""Rebuilding a data directory from a chain of physical backups.

Each backup of the chain is unpacked into a private scratch directory beside the
output (pg_combinebackup reads plain directories, not tars), combined with
``pg_combinebackup --link`` (the scratch copies are ours and removed afterwards,
so linking instead of copying is safe and saves a full copy), and the result is
checked with ``pg_verifybackup``. A single full backup is moved in place.
Whatever fails, no scratch directory and no half-built output is left behind.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path

from ..domain.errors import FailedPrecondition, InvalidArgument
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


def unpack(backup: Path, into: Path) -> None:
    """One physical backup (``base.tar.gz``, ``pg_wal.tar.gz``, ``backup_manifest``) as the
    plain directory pg_combinebackup and PostgreSQL read."""
    into.mkdir(mode=0o700)
    for name, where in (("base.tar", into), ("pg_wal.tar", into / "pg_wal")):
        archive = next((backup / f"{name}{ext}" for ext in (".gz", "")
                        if (backup / f"{name}{ext}").is_file()), None)
        if archive is None:
            if name == "base.tar":
                raise CombineFailed(f"{backup}: base.tar.gz is missing")
            continue
        where.mkdir(mode=0o700, exist_ok=True)
        try:
            with tarfile.open(archive, "r|*") as tar:
                tar.extractall(where, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise CombineFailed(f"{archive} cannot be unpacked: {exc}") from None
    shutil.copyfile(backup / MANIFEST, into / MANIFEST)


def rebuild(backups: Sequence[Path], output: Path, *, pg_combinebackup: str,
            pg_verifybackup: str) -> None:
    """The data directory of the last of ``backups`` (full backup first) in ``output``,
    verified. ``output`` is absent or empty; on failure it is left so."""
    existed = output.exists()
    scratch = output.parent / f".pgbackup-restore-{secrets.token_hex(4)}"
    scratch.mkdir(mode=0o700)
    try:
        parts = []
        for i, backup in enumerate(backups):
            part = scratch / str(i)
            unpack(backup, part)
            parts.append(part)
        if len(parts) == 1:
            if existed:
                output.rmdir()
            parts[0].rename(output)
        else:
            _run([pg_combinebackup, "--link", "-o", str(output), *map(str, parts)],
                 "pg_combinebackup")
        os.chmod(output, 0o700)
        verify_directory(output, pg_verifybackup)
    except BaseException:
        if output.exists():
            shutil.rmtree(output, ignore_errors=True)
            if existed:
                output.mkdir(mode=0o700)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def verify_directory(path: Path, pg_verifybackup: str) -> None:
    """pg_verifybackup over a data directory rebuilt from backups (with its WAL)."""
    _run([pg_verifybackup, "--quiet", str(path)], "pg_verifybackup")


def _run(args: list[str], name: str) -> None:
    out = subprocess.run(args, capture_output=True, text=True, check=False,
                         stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        lines = (out.stderr.strip() or out.stdout.strip()).splitlines()
        raise CombineFailed(f"{name} failed: {' / '.join(lines[-5:])}")
