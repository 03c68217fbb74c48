"""The databases restores work with: connecting, creating, inspecting, renaming
and dropping them on a target's server. ``server`` is a backup's libpq
parameters (see RestoreService._server); its ``dbname`` is the configured one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ..domain.errors import FailedPrecondition, Unavailable
from ..postgres.conninfo import ConnInfo
from .models import TableRows, ToolFailed

_USER_OBJECTS_SQL = """
SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%')
     + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema'))
     + (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND t.typtype IN ('e', 'd', 'r', 'm'))
     + (SELECT count(*) FROM pg_namespace WHERE nspname NOT IN ('pg_catalog',
          'information_schema', 'public') AND nspname NOT LIKE 'pg\\_toast%'
          AND nspname NOT LIKE 'pg\\_temp%')
     + (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql')
"""


@contextlib.contextmanager
def connect(server: ConnInfo, dbname: str) -> Iterator[Any]:
    import psycopg

    params = server.with_dbname(dbname)
    defaults = {k: v for k, v in (("connect_timeout", "10"),
                                  ("application_name", "backupd-restore")) if k not in params}
    try:
        conn = psycopg.connect(params.dsn(**defaults), autocommit=True)
    except psycopg.Error as exc:
        raise Unavailable(f'cannot connect to database "{dbname}": '
                          f"{params.scrub(str(exc))}") from None
    with conn:
        yield conn


def _admin(server: ConnInfo, *busy: str) -> contextlib.AbstractContextManager[Any]:
    """A connection for CREATE/DROP DATABASE: to the configured database, or to
    ``postgres`` when that is one of the databases being changed."""
    own = server.get("dbname") or server.get("user") or "postgres"
    return connect(server, "postgres" if own in busy else own)


def _execute(server: ConnInfo, conn: Any, statement: Any, action: str) -> None:
    import psycopg

    try:
        conn.execute(statement)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise FailedPrecondition(f"{action}: {_first_line(exc)}; the database user needs "
                                 "the CREATEDB privilege (and to own replaced "
                                 "databases)") from None
    except psycopg.Error as exc:
        raise ToolFailed(f"{action}: {server.scrub(_first_line(exc))}") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def database_exists(server: ConnInfo, name: str) -> bool:
    with _admin(server, name) as conn:
        return conn.execute("SELECT FROM pg_database WHERE datname = %s",
                            [name]).fetchone() is not None


def database_state(server: ConnInfo, name: str) -> str | None:
    """None (no such database), "empty" (no user objects) or "used"."""
    with _admin(server, name) as conn:
        row = conn.execute("SELECT datallowconn FROM pg_database WHERE datname = %s",
                           [name]).fetchone()
    if row is None:
        return None
    if not row[0]:
        raise FailedPrecondition(f'database "{name}" does not allow connections; choose '
                                 "another target_database")
    with connect(server, name) as conn:
        used = conn.execute(_USER_OBJECTS_SQL).fetchone()
    return "used" if used and used[0] else "empty"


def create_database(server: ConnInfo, name: str) -> None:
    from psycopg import sql

    # template0: a dump expects a pristine database, not template1's local additions.
    with _admin(server, name) as conn:
        _execute(server, conn, sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(
            sql.Identifier(name)), f'cannot create database "{name}"')


def drop_database(server: ConnInfo, name: str) -> None:
    from psycopg import sql

    with _admin(server, name) as conn:
        # FORCE (13+) ends sessions a killed pg_restore may have left behind.
        force = sql.SQL(" WITH (FORCE)") if conn.info.server_version >= 130000 else sql.SQL("")
        _execute(server, conn, sql.SQL("DROP DATABASE IF EXISTS {}{}").format(
            sql.Identifier(name), force), f'cannot drop database "{name}"')


def rename_database(server: ConnInfo, staging: str, target: str) -> None:
    from psycopg import sql

    with _admin(server, staging, target) as conn:
        _execute(server, conn, sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
            sql.Identifier(staging), sql.Identifier(target)),
            f'restored into "{staging}" but cannot rename it to "{target}"')


def row_counts(server: ConnInfo, dbname: str) -> tuple[TableRows, ...]:
    """Every user table in ``dbname`` with its number of rows."""
    from psycopg import sql

    with connect(server, dbname) as conn:
        tables = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg\\_toast%' ORDER BY 1, 2").fetchall()
        counts = []
        for schema, table in tables:
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(
                sql.Identifier(schema), sql.Identifier(table))).fetchone()
            counts.append(TableRows(schema, table, int(row[0]) if row else 0))
    return tuple(counts)
