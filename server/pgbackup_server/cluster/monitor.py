"""Watching the replicas: one replica at a time (the holder of a session advisory
lock) reports a replica whose heartbeat is older than ``cluster.leaseTimeout`` to
the listeners (the ``replica_silent`` alert), and reports it back when it beats
again or leaves cleanly. If the monitor dies, its lock goes with its connection
and another replica takes the role at its next heartbeat."""

from __future__ import annotations

from sqlalchemy import Connection, Engine, text

from ..domain.ports import Listener
from .nodes import NodeRegistry

_MONITOR_LOCK = 0x70676263_6D6F6E69  # "pgbcmoni"


class Monitor:
    def __init__(self, engine: Engine, registry: NodeRegistry, events: Listener) -> None:
        self.engine = engine
        self.registry = registry
        self.events = events
        self._conn: Connection | None = None
        self._seen: set[str] = set()

    @property
    def leading(self) -> bool:
        return self._conn is not None

    def _lead(self) -> bool:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                return True
            except Exception:  # the connection (and so the lock) is gone
                self.close()
        conn = self.engine.connect()
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _MONITOR_LOCK}).scalar()
        conn.commit()
        if got:
            self._conn = conn
            return True
        conn.close()
        return False

    def tick(self) -> None:
        if not self._lead():
            return
        nodes = self.registry.nodes()
        names = {n.name for n in nodes}
        for node in nodes:
            if node.silent and node.heartbeat_at is not None:
                self.events.on_replica_silent(node.name, node.heartbeat_at)
            else:
                self.events.on_replica_back(node.name)
        for gone in self._seen - names:  # left cleanly, or forgotten after a day
            self.events.on_replica_back(gone)
        self._seen = names

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: S110 - already broken
                pass
            self._conn = None
