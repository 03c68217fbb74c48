"""Asking a database server about itself: its version, a database's size, and
the databases it holds."""

from __future__ import annotations

from dataclasses import dataclass

from ..domain.errors import Unavailable
from .conninfo import ConnInfo


@dataclass(frozen=True, slots=True)
class ServerInfo:
    version_num: int
    version: str
    database_size: int

    @property
    def major(self) -> int:
        return self.version_num // 10000 if self.version_num >= 100000 else self.version_num // 100


def _connect_timeout(conninfo: ConnInfo, timeout: float) -> str:
    return conninfo.get("connect_timeout") or str(max(1, int(timeout)))


def query_server(conninfo: ConnInfo, timeout: float = 10.0) -> ServerInfo:
    """The server's version and the database's size; UNAVAILABLE when unreachable."""
    import psycopg

    try:
        with psycopg.connect(conninfo.dsn(connect_timeout=_connect_timeout(conninfo, timeout)),
                             autocommit=True) as conn:
            num, size = conn.execute(
                "SELECT current_setting('server_version_num')::int, "
                "pg_database_size(current_database())").fetchone() or (0, 0)
    except psycopg.Error as exc:
        raise Unavailable(f"cannot connect to the database: {conninfo.scrub(str(exc))}") from None
    major, minor = (num // 10000, num % 10000) if num >= 100000 else (num // 100, num % 100)
    return ServerInfo(version_num=num, version=f"{major}.{minor}", database_size=int(size))


def list_databases(conninfo: ConnInfo, timeout: float = 10.0) -> list[str]:
    """Every database of the server that can be backed up (not templates)."""
    import psycopg

    try:
        with psycopg.connect(conninfo.dsn(connect_timeout=_connect_timeout(conninfo, timeout)),
                             autocommit=True) as conn:
            rows = conn.execute("SELECT datname FROM pg_database WHERE NOT datistemplate "
                                "AND datallowconn ORDER BY datname").fetchall()
    except psycopg.Error as exc:
        raise Unavailable(f"cannot list the server's databases: "
                          f"{conninfo.scrub(str(exc))}") from None
    return [str(r[0]) for r in rows]


_TABLE_SIZES = """
SELECT coalesce(sum(s), 0), coalesce(max(s), 0) FROM (
  SELECT pg_table_size(c.oid) AS s FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind = 'r' AND n.nspname <> 'information_schema'
    AND n.nspname NOT LIKE 'pg\\_%') t"""


def table_sizes(conninfo: ConnInfo, timeout: float = 10.0) -> tuple[int, int]:
    """Bytes of table data pg_dump would read (heap and TOAST of user tables): the
    total and the largest table's; UNAVAILABLE when unreachable."""
    import psycopg

    try:
        with psycopg.connect(conninfo.dsn(connect_timeout=_connect_timeout(conninfo, timeout)),
                             autocommit=True) as conn:
            total, largest = conn.execute(_TABLE_SIZES).fetchone() or (0, 0)
    except psycopg.Error as exc:
        raise Unavailable(f"cannot read the database's table sizes: "
                          f"{conninfo.scrub(str(exc))}") from None
    return int(total), int(largest)
