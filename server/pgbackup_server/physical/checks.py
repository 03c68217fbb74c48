"""What a physical target's server must allow, checked before a run starts.

Each problem is one clear error naming the setting and the fix, so an operator
never learns about ``wal_level`` from a pg_basebackup stack of messages.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..domain.errors import FailedPrecondition, Unavailable
from ..postgres.conninfo import ConnInfo

INCREMENTAL_MIN_MAJOR = 17


@dataclass(frozen=True, slots=True)
class PhysicalServer:
    """What the checks read from the server."""

    version_num: int
    wal_level: str
    max_wal_senders: int
    summarize_wal: bool | None  # None: the server predates WAL summaries (< 17)
    role: str
    can_replicate: bool
    system_identifier: str
    database_size: int

    @property
    def major(self) -> int:
        return self.version_num // 10000

    @property
    def version(self) -> str:
        return f"{self.major}.{self.version_num % 10000}"


def read_server(conninfo: ConnInfo, timeout: float = 10.0) -> PhysicalServer:
    """Ask the server (over a normal connection) what physical backups depend on."""
    import psycopg

    try:
        with psycopg.connect(conninfo.dsn(connect_timeout=str(max(1, int(timeout)))),
                             autocommit=True) as conn:
            row = conn.execute(
                "SELECT current_setting('server_version_num')::int, "
                "current_setting('wal_level'), current_setting('max_wal_senders')::int, "
                "current_setting('summarize_wal', true), current_user, "
                "(SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user),"
                " (SELECT system_identifier::text FROM pg_control_system()), "
                "(SELECT sum(pg_database_size(oid))::bigint FROM pg_database)").fetchone()
    except psycopg.Error as exc:
        raise Unavailable(f"cannot connect to the database: {conninfo.scrub(str(exc))}") from None
    assert row is not None
    num, level, senders, summarize, role, repl, sysid, size = row
    return PhysicalServer(int(num), str(level), int(senders),
                          None if summarize is None else summarize == "on", str(role),
                          bool(repl), str(sysid), int(size or 0))


def check_server(server: PhysicalServer, *, incremental: bool, wal_stream: bool) -> None:
    """FAILED_PRECONDITION naming the first setting that stops a physical backup."""
    problems = problems_of(server, incremental=incremental, wal_stream=wal_stream)
    if problems:
        raise FailedPrecondition("; ".join(problems))


def problems_of(server: PhysicalServer, *, incremental: bool, wal_stream: bool) -> list[str]:
    """Every problem, each naming the setting and its fix."""
    out: list[str] = []
    if server.wal_level == "minimal":
        out.append("wal_level is minimal on the server; physical backups need wal_level = "
                   "replica (or logical): set it in postgresql.conf and restart the server")
    if not server.can_replicate:
        out.append(f'role "{server.role}" has no replication permission; run ALTER ROLE '
                   f'"{server.role}" REPLICATION and allow it in pg_hba.conf (a "replication" '
                   "line for this role and host)")
    # pg_basebackup streams WAL on a second connection; pg_receivewal needs one more.
    needed = 2 + (1 if wal_stream else 0)
    if server.max_wal_senders < needed:
        out.append(f"max_wal_senders is {server.max_wal_senders} on the server; a physical "
                   f"backup{' with WAL streaming' if wal_stream else ''} needs at least "
                   f"{needed}: set max_wal_senders = {max(needed, 10)} in postgresql.conf and "
                   "restart the server")
    if incremental:
        if server.major < INCREMENTAL_MIN_MAJOR:
            out.append(f"incremental backups need PostgreSQL {INCREMENTAL_MIN_MAJOR} or later "
                       f"(pg_basebackup --incremental and WAL summaries); this server is "
                       f"PostgreSQL {server.version}: take full backups (type: full) or "
                       "upgrade the server")
        elif not server.summarize_wal:
            out.append("summarize_wal is off on the server; incremental backups need it: "
                       "run ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf(); "
                       "(no restart needed), then take a full backup to start the chain")
    return out
