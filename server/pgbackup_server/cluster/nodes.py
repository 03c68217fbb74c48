"""The replicas of a cluster in the store: each registers, renews its heartbeat and
the leases of the runs it holds, and is listed with its heartbeat's age.

Times of leases and heartbeats are the store's (``now()`` of PostgreSQL), so the
hosts' clocks never have to agree; fire times follow the service's clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, delete, func, insert, select, text, update

from ..persistence.codec import aware
from ..persistence.schema import cluster_nodes, run_queue

# How long a replica that stopped heartbeating stays listed (and alerted on).
FORGET_AFTER_SECONDS = 86400.0


@dataclass(frozen=True, slots=True)
class NodeInfo:
    name: str
    started_at: datetime | None
    heartbeat_at: datetime | None
    heartbeat_age_seconds: float
    silent: bool
    run_ids: tuple[int, ...]
    this_replica: bool = False
    version: str = ""


def store_now(conn: Connection) -> datetime:
    """The store's clock, UTC-aware."""
    value = conn.execute(text("SELECT now() AT TIME ZONE 'UTC'")).scalar()
    stamp = aware(value)
    assert stamp is not None
    return stamp


class NodeRegistry:
    """This replica's row and its leases; every method is one short transaction."""

    def __init__(self, engine: Engine, name: str, *, lease_seconds: float, address: str = "",
                 version: str = "") -> None:
        self.engine = engine
        self.name = name
        self.lease_seconds = lease_seconds
        self.address = address
        self.version = version

    def register(self) -> None:
        """Join the cluster; a row left by a previous process of the same name is taken
        over (its leases expire as usual)."""
        with self.engine.begin() as conn:
            now = store_now(conn)
            conn.execute(delete(cluster_nodes).where(cluster_nodes.c.name == self.name))
            conn.execute(insert(cluster_nodes).values(
                name=self.name, started_at=now, heartbeat_at=now, address=self.address,
                version=self.version, running=0))

    def heartbeat(self, running: int) -> set[int]:
        """Renew this replica's heartbeat and its leases; return the runs it still
        holds (a run missing from the answer was taken over: stop executing it)."""
        with self.engine.begin() as conn:
            now = store_now(conn)
            done = conn.execute(update(cluster_nodes).where(cluster_nodes.c.name == self.name)
                                .values(heartbeat_at=now, running=running))
            if done.rowcount == 0:  # forgotten while silent: join again
                conn.execute(insert(cluster_nodes).values(
                    name=self.name, started_at=now, heartbeat_at=now, address=self.address,
                    version=self.version, running=running))
            held = conn.execute(update(run_queue).where(run_queue.c.node == self.name)
                                .values(heartbeat_at=now).returning(run_queue.c.run_id))
            return {int(r) for (r,) in held}

    def leave(self) -> None:
        """A clean stop: no longer listed, so no alert for a replica that is gone."""
        with self.engine.begin() as conn:
            conn.execute(delete(cluster_nodes).where(cluster_nodes.c.name == self.name))

    def nodes(self) -> list[NodeInfo]:
        """Every replica seen within a day, with the runs each holds."""
        with self.engine.connect() as conn:
            now = store_now(conn)
            held: dict[str, list[int]] = {}
            for run_id, node in conn.execute(select(run_queue.c.run_id, run_queue.c.node)
                                             .where(run_queue.c.node.is_not(None))
                                             .order_by(run_queue.c.run_id)):
                held.setdefault(node, []).append(int(run_id))
            rows = conn.execute(select(cluster_nodes).order_by(cluster_nodes.c.name)).all()
        out = []
        for row in rows:
            beat = aware(row.heartbeat_at)
            age = max(0.0, (now - beat).total_seconds()) if beat else 0.0
            if age > FORGET_AFTER_SECONDS:
                continue
            out.append(NodeInfo(name=row.name, started_at=aware(row.started_at),
                                heartbeat_at=beat, heartbeat_age_seconds=age,
                                silent=age > self.lease_seconds,
                                run_ids=tuple(held.get(row.name, ())),
                                this_replica=row.name == self.name,
                                version=row.version))
        return out

    def forget_old(self) -> None:
        """Drop rows of replicas silent for more than a day (host names with old pids)."""
        with self.engine.begin() as conn:
            now = store_now(conn)
            conn.execute(delete(cluster_nodes).where(
                cluster_nodes.c.heartbeat_at < now - timedelta(seconds=FORGET_AFTER_SECONDS)))

    def alive_others(self) -> int:
        """Replicas other than this one whose heartbeat is within the lease."""
        with self.engine.connect() as conn:
            now = store_now(conn)
            since = now - timedelta(seconds=self.lease_seconds)
            return int(conn.execute(select(func.count()).select_from(cluster_nodes).where(
                cluster_nodes.c.name != self.name, cluster_nodes.c.heartbeat_at >= since))
                .scalar() or 0)

