"""The configured targets by name, with their connection parameters, and how API
names map onto them.

The name the operator configures is a run's identity: the target's name for a
single-database target, ``<target>.<db>`` for each database an allDatabases
target finds, ``<target>-globals`` for its globals (see README, "Several
databases").
"""

from __future__ import annotations

from collections.abc import Sequence

from ..postgres.conninfo import ConnInfo
from ..settings import TargetConfig
from .errors import InvalidArgument
from .validation import refuse_control_characters

ServerKey = tuple[str, str]  # (host, port)


class Targets:
    """Immutable after construction; safe from any thread."""

    def __init__(self, targets: Sequence[TargetConfig]) -> None:
        self.all = tuple(targets)
        self.by_name = {t.name: t for t in targets}
        self._conninfo = {t.name: t.database.conninfo for t in targets}

    @property
    def names(self) -> list[str]:
        return list(self.by_name)

    def __contains__(self, name: object) -> bool:
        return name in self.by_name

    def resolve(self, name: str = "") -> TargetConfig:
        """The target called ``name`` (empty: the first). A name that is no target's but
        the PostgreSQL database of exactly one single-database target means that target."""
        if not name:
            return self.all[0]
        if name in self.by_name:
            return self.by_name[name]
        refuse_control_characters("database", name)
        by_dbname = [t for t in self.all if not t.all_databases and t.database.dbname == name]
        if len(by_dbname) == 1:
            return by_dbname[0]
        raise InvalidArgument(f"database: unknown target {name!r}; configured: "
                              f"{', '.join(self.by_name)}")

    def conninfo(self, target: str, dbname: str = "") -> ConnInfo:
        """libpq parameters for ``dbname`` on ``target``'s server (password included: pass
        it on only through postgres.clients.client_env)."""
        info = self._conninfo[self.resolve(target).name]
        return info.with_dbname(dbname) if dbname else info

    def server_key(self, target: str) -> ServerKey:
        return self._conninfo[self.resolve(target).name].server_key

    def servers(self) -> set[ServerKey]:
        return {c.server_key for c in self._conninfo.values()}

    def source_dbname(self, target: str, database: str) -> str | None:
        """The PostgreSQL database a run of ``target`` named ``database`` dumped; None
        when the target is no longer configured."""
        config = self.by_name.get(target)
        if config is None:
            return None
        if config.all_databases:
            return database.removeprefix(f"{config.name}.")
        return config.database.dbname
