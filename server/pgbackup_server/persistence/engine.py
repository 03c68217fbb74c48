"""The store's database: the engine, and its schema brought up to date by Alembic.

SQLite (the default) runs in WAL mode with a busy timeout, so that the scheduler,
the backup workers and many API readers never see "database is locked". On
PostgreSQL, migrations run under an advisory lock, so replicas starting together
migrate once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from ..domain.errors import ConfigError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The revision that reproduces the schema of backupd 0.1.0, which had no Alembic.
BASELINE = "0001"
_LOCK_KEY = 0x70676261636B7570  # "pgbackup": one migration at a time per PostgreSQL store


def shown_url(url: str) -> str:
    """The URL for messages: SQLAlchemy's repr masks the password."""
    try:
        return repr(make_url(url))
    except SQLAlchemyError:
        return "the configured URL"


def open_engine(url: str) -> Engine:
    """An engine for ``url`` with the schema migrated to the newest revision."""
    try:
        parsed = make_url(url)
    except SQLAlchemyError:
        raise ConfigError("store.url: not a SQLAlchemy URL; write sqlite:///path/to/file "
                          "or postgresql+psycopg://user@host/db") from None
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    sqlite = parsed.get_backend_name() == "sqlite"
    if sqlite:
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    engine = create_engine(url, **kwargs)
    if sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        migrate(engine)
    except ConfigError:
        engine.dispose()
        raise
    return engine


def reading(engine: Engine) -> Connection:
    """A connection for reads outside a transaction: returned to the pool without a
    ROLLBACK, a round trip fewer for each read (statistics, on every dashboard load)."""
    return engine.connect().execution_options(isolation_level="AUTOCOMMIT")


def migrate(engine: Engine) -> str:
    """Bring the schema to the newest revision; return it. A store written by a newer
    backupd is refused, never downgraded or half-understood."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    script = ScriptDirectory.from_config(config)
    head = script.get_current_head()
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            # Batch migrations copy backup_runs and drop the old table; with foreign
            # keys on, that drop would cascade and delete every backup's copies. The
            # pragma only takes effect before the first write, so first; the engine is
            # disposed afterwards so no pooled connection keeps it off.
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        _lock(conn)
        # Held until this transaction commits.
        current = MigrationContext.configure(conn).get_current_revision()
        if current is None and inspect(conn).has_table("backup_runs"):
            current = BASELINE  # written by 0.1.0, before migrations existed
            config.attributes["connection"] = conn
            command.stamp(config, BASELINE)
        if current is not None and current not in {r.revision for r in
                                                   script.walk_revisions()}:
            raise ConfigError(
                f"store.url: {shown_url(str(engine.url))} was written by a newer "
                f"backupd (schema revision {current}; this one knows up to {head}); "
                "upgrade backupd, or point store.url at another store")
        if current != head:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    if engine.dialect.name == "sqlite":
        engine.dispose()
    return str(head)


def _lock(conn: Connection) -> None:
    """One migration at a time on PostgreSQL. A transaction lock: released by the
    commit, so the next replica sees the migrated schema (a session lock released
    before the commit let it see the old one and migrate again)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    # FULL: a recorded run must survive a power cut, not only a crash.
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
