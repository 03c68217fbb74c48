"""Persistence: the SQL store behind the domain's ports (SQLAlchemy Core, Alembic).

:func:`open_store` opens the database named by ``store.url``, migrates it, and
returns the stores the domain uses. Only this package imports SQLAlchemy.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from ..domain.errors import ConfigError
from .alerts import SqlAlertStore
from .copies import SqlCopyStore
from .engine import open_engine, shown_url
from .restores import SqlRestoreStore
from .runs import SqlRunStore

__all__ = ["SqlAlertStore", "SqlCopyStore", "SqlRestoreStore", "SqlRunStore", "Store",
           "open_store"]


@dataclass(frozen=True)
class Store:
    """The stores over one database."""

    engine: Engine
    runs: SqlRunStore
    restores: SqlRestoreStore
    alerts: SqlAlertStore
    copies: SqlCopyStore

    def close(self) -> None:
        self.engine.dispose()


def open_store(url: str, node: str = "") -> Store:
    """The store at ``url``, migrated; a ConfigError naming store.url otherwise.
    ``node``: the cluster replica this process is (empty without a cluster)."""
    try:
        engine = open_engine(url)
        runs = SqlRunStore(engine)
        return Store(engine, runs, SqlRestoreStore(engine, node), SqlAlertStore(engine),
                     SqlCopyStore(engine, runs.write_lock))
    except (SQLAlchemyError, OSError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(f"store.url: cannot open {shown_url(url)}: {type(exc).__name__}: "
                          f"{first}") from None
