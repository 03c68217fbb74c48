"""Connection strings: the one place they are parsed.

A :class:`ConnInfo` holds libpq parameters, password included. It never shows
the password: ``redacted`` is for logs, :meth:`argv_dsn` for command lines,
:meth:`scrub` for error messages; the password reaches a client program only
through :mod:`.client_env`'s private passfile.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

# libpq parameters that hold secrets: never on a command line or in a log.
SECRET_PARAMS = frozenset({"password", "sslpassword"})


class ConnInfoError(ValueError):
    """A connection string that libpq would not accept; the message never quotes it."""


@dataclass(frozen=True)
class ConnInfo(Mapping[str, str]):
    """Immutable libpq parameters (a read-only mapping)."""

    params: tuple[tuple[str, str], ...]

    # -- construction -------------------------------------------------------

    @classmethod
    def parse(cls, url: str) -> ConnInfo:
        """A libpq URI or ``key=value`` string; :class:`ConnInfoError` with a message that
        says how to fix it (and never repeats the password)."""
        from psycopg.conninfo import conninfo_to_dict

        try:
            raw = conninfo_to_dict(url)
        except Exception:  # psycopg's reason may quote the password: not repeated
            raise ConnInfoError(
                "not a valid libpq connection string; write "
                "postgresql://user:password@host:5432/dbname and percent-encode special "
                "characters in the password (@ as %40, : as %3A, space as %20)") from None
        params = {k: str(v) for k, v in raw.items() if v is not None}
        if "@" in params.get("host", ""):
            raise ConnInfoError("the host contains '@'; percent-encode '@' in the password "
                                "as %40")
        for port in (params.get("port") or "5432").split(","):
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise ConnInfoError(f'port "{port}" is not a port number (1-65535)')
        if not (params.get("dbname") or params.get("user")):
            raise ConnInfoError("no database name; write postgresql://user@host:5432/dbname")
        return cls.of(params)

    @classmethod
    def of(cls, params: Mapping[str, Any]) -> ConnInfo:
        return cls(tuple(sorted((k, str(v)) for k, v in params.items() if v is not None)))

    def with_dbname(self, dbname: str) -> ConnInfo:
        """The same server and credentials, another database."""
        return self.replace(dbname=dbname)

    def replace(self, **changes: str) -> ConnInfo:
        return ConnInfo.of({**dict(self.params), **changes})

    # -- mapping ------------------------------------------------------------

    def __getitem__(self, key: str) -> str:
        for k, v in self.params:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self.params)

    def __len__(self) -> int:
        return len(self.params)

    def __repr__(self) -> str:  # never the password, whoever prints this
        return f"ConnInfo({self.redacted!r})"

    # -- views --------------------------------------------------------------

    @property
    def dbname(self) -> str:
        return self.get("dbname") or self.get("user") or ""

    @property
    def password(self) -> str | None:
        return self.get("password")

    @property
    def server_key(self) -> tuple[str, str]:
        """(host, port): what identifies the database server (for per-server limits)."""
        return self.get("host", "") or self.get("hostaddr", ""), self.get("port", "")

    @property
    def redacted(self) -> str:
        """For logs: the connection string with the password as ``***``."""
        from psycopg.conninfo import make_conninfo

        shown = {k: ("***" if k in SECRET_PARAMS else v) for k, v in self.params}
        return make_conninfo("", **shown)

    def dsn(self, **extra: str) -> str:
        """The full connection string, password included: for psycopg in-process only."""
        from psycopg.conninfo import make_conninfo

        return make_conninfo("", **{**dict(self.params), **extra})

    def argv_dsn(self) -> str:
        """The connection string for a command line: without secrets."""
        from psycopg.conninfo import make_conninfo

        return make_conninfo("", **{k: v for k, v in self.params if k not in SECRET_PARAMS})

    def scrub(self, text: str) -> str:
        """``text`` without the password, whatever produced it."""
        text = text.strip()
        for key in SECRET_PARAMS:
            secret = self.get(key)
            if secret:
                text = text.replace(secret, "***")
        return text
