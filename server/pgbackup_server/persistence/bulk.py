"""Many rows in one statement on PostgreSQL: each column as one array, through ``unnest``.

The statement's text is the same whatever the number of rows, so it is parsed once
and costs one round trip and little Python; an INSERT of N rows as N ``VALUES``
tuples (or N statements) costs Python work per value and a new statement per size.
A cluster queues a whole instant's scheduled fires this way (``cluster/fires.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import cache
from typing import Any

from sqlalchemy import Column, Connection, Table
from sqlalchemy.engine import Dialect


def full_rows(table: Table, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with the columns' client-side defaults filled in (what an INSERT
    through SQLAlchemy would have added)."""
    defaults = {c.name: c.default.arg for c in table.columns  # type: ignore[attr-defined]
                if c.default is not None and c.default.is_scalar}
    return [{**defaults, **row} for row in rows]


def rows_select(conn: Connection, table: Table, columns: Sequence[str],
                rows: Sequence[dict[str, Any]], prefix: str = "") -> tuple[str, dict[str, Any]]:
    """``SELECT ... FROM unnest(CAST(:a AS type[]), ...)``: ``rows`` as a query whose
    result columns are named as ``columns``, values as the columns' types bind them,
    and its parameters (named ``prefix`` + position). A column with the same value in
    every row is sent once, not as an array."""
    arrays: list[str] = []
    items: list[str] = []
    params: dict[str, Any] = {}
    for i, name in enumerate(columns):
        cast, bind = _column(conn.dialect, table.c[name])
        key = f"{prefix}c{i}"
        values = [row[name] for row in rows]
        if bind is not None:
            values = [bind(v) for v in values]
        quoted = conn.dialect.identifier_preparer.quote(name)
        if arrays and all(v == values[0] for v in values):  # the first: one row per row
            params[key] = values[0]
            items.append(f"CAST(:{key} AS {cast}) AS {quoted}")
        else:
            params[key] = values
            arrays.append(f"CAST(:{key} AS {cast}[])")
            items.append(f"u.a{len(arrays)} AS {quoted}")
    aliases = ", ".join(f"a{n + 1}" for n in range(len(arrays)))
    return (f"SELECT {', '.join(items)} FROM unnest({', '.join(arrays)}) AS u({aliases})",
            params)


def names(conn: Connection, columns: Iterable[str]) -> str:
    """``columns``, quoted where SQL needs it, comma-separated."""
    return ", ".join(conn.dialect.identifier_preparer.quote(c) for c in columns)


@cache
def _column(dialect: Dialect, column: Column[Any]) -> tuple[str, Callable[[Any], Any] | None]:
    """The SQL type of ``column`` and its bind processor (None: values as they are)."""
    return column.type.compile(dialect=dialect), column.type.bind_processor(dialect)
