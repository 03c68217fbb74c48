"""Several backupd replicas on one PostgreSQL store (``cluster.enabled``).

- :mod:`.scheduler`: each fire claimed once by a unique key (``schedule_fires``);
- :mod:`.queue`: runs queued in the store, taken with ``FOR UPDATE SKIP LOCKED``
  within ``backup.maxConcurrent`` per replica and ``cluster.maxPerServer`` per
  database server across the cluster;
- :mod:`.leases`: heartbeats, fencing, and taking over a dead replica's runs;
- :mod:`.nodes`: the replicas, for ``GetCluster`` and metrics;
- :mod:`.monitor`: one replica at a time reports silent replicas (an alert).

Like ``persistence``, this package is an edge (it speaks SQL); the domain sees it
only through the queue and scheduler faces it is given by ``app.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import structlog
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, create_engine, func, select, text

from .. import __version__
from ..backup import files
from ..domain.ports import Clock, Listener, RunStore
from ..domain.targets import Targets
from ..persistence.schema import run_queue
from ..settings import Settings
from .fires import FireClaims
from .leases import Leases
from .monitor import Monitor
from .nodes import NodeInfo, NodeRegistry
from .queue import ClusterQueue, Execute, server_name
from .scheduler import ClusterScheduler, Plan

__all__ = ["Cluster", "ClusterInfo", "NodeInfo"]
log = structlog.get_logger("pgbackup")
_RETENTION_LOCK = 0x70676263_6C65616E  # "pgbclean": retention on one replica at a time
CreateScheduled = Callable[[str, str], list[int]]  # (schedule, target) -> queued run ids
StopRun = Callable[[int, str], None]  # (run id, reason)


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    """What GetCluster answers."""

    enabled: bool
    node: str = ""
    nodes: tuple[NodeInfo, ...] = ()
    lease_timeout_seconds: float = 0.0
    queued_runs: int = 0


class Cluster:
    """This replica's membership: built by app.py when ``cluster.enabled``."""

    def __init__(self, settings: Settings, engine: Engine, store: RunStore,
                 events: Listener, clock: Clock) -> None:
        c = settings.cluster
        self.settings = settings
        self.engine = engine
        self.store = store
        self.events = events
        self.clock = clock
        self.node = c.node
        # Heartbeats, leases and the monitor have connections of their own: under load
        # the service's pool can be busy for longer than a lease.
        self.lease_engine = create_engine(engine.url, pool_size=3, max_overflow=2,
                                          pool_pre_ping=True, pool_timeout=5)
        self.registry = NodeRegistry(self.lease_engine, self.node,
                                     lease_seconds=c.lease_timeout_seconds,
                                     address=settings.server.grpc_address, version=__version__)
        self.claims = FireClaims(engine, self.node)
        self.queue: ClusterQueue | None = None
        self.leases: Leases | None = None
        self.monitor = Monitor(self.lease_engine, self.registry, events, store, clock)

    def join(self) -> None:
        self.registry.register()
        log.info("Joined the cluster", node=self.node,
                 lease_timeout_seconds=self.registry.lease_seconds)

    def alone(self) -> bool:
        """No other replica heartbeats within its lease."""
        return self.registry.alive_others() == 0

    def make_queue(self, targets: Targets, execute: Execute) -> ClusterQueue:
        """The backup service's queue (given to it at construction)."""
        b = self.settings.backup
        self.queue = ClusterQueue(self.engine, self.store, targets, execute, node=self.node,
                                  max_concurrent=b.max_concurrent, max_queued=b.max_queued,
                                  max_per_server=self.settings.cluster.max_per_server,
                                  clock=self.clock)
        return self.queue

    def make_scheduler(self, create: CreateScheduled, plan: Plan,
                       targets: Targets) -> ClusterScheduler:
        """``plan`` gives a fire's jobs (claimed and queued in one transaction);
        ``create`` queues a fire whose jobs could not be planned (recording why)."""
        queue = self.queue
        assert queue is not None, "make_queue() first"
        return ClusterScheduler(self.settings, self.claims, fire=create, plan=plan,
                                server_of=lambda t: server_name(targets.server_key(t)),
                                queued=queue.wake, store=self.store, events=self.events,
                                clock=self.clock)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Retention on one replica at a time (a session advisory lock)."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _RETENTION_LOCK})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _RETENTION_LOCK})
                conn.commit()

    def recover(self, runtime_dir: Path) -> None:
        """At start: settle runs whose lease expired (a replica died, maybe this one
        under another pid), and passfiles a SIGKILL left here. Runs of live replicas,
        and their temporary files in shared directories, are left alone."""
        for stale in runtime_dir.glob("pgpass-*"):
            files.remove_quietly(stale)
        if self.leases is not None:
            self.leases.take_over()

    def start(self, stop_run: StopRun) -> None:
        assert self.queue is not None, "make_queue() first"
        self.leases = Leases(self.lease_engine, self.registry, self.store, self.events,
                             clock=self.clock, executing=self.queue.executing,
                             stop_run=stop_run, wake=self.queue.wake, fenced=self.queue.fenced,
                             after=self.monitor.tick)
        self.queue.start()
        self.leases.take_over()
        self.leases.start()

    def stop(self) -> None:
        """After the queue's shutdown: stop heartbeating and leave the cluster."""
        if self.leases is not None:
            self.leases.stop()
        self.monitor.close()
        try:
            self.registry.leave()
        except Exception:  # the store is gone: the row goes silent, then is forgotten
            log.warning("Could not leave the cluster cleanly", node=self.node)
        self.lease_engine.dispose()

    def info(self) -> ClusterInfo:
        with self.engine.connect() as conn:
            queued = int(conn.execute(select(func.count()).select_from(run_queue).where(
                run_queue.c.node.is_(None))).scalar() or 0)
        return ClusterInfo(enabled=True, node=self.node, nodes=tuple(self.registry.nodes()),
                           lease_timeout_seconds=self.registry.lease_seconds,
                           queued_runs=queued)

    def collector(self) -> Collector:
        return _ClusterMetrics(self)


class _ClusterMetrics(Collector):
    """Read at scrape time from the store: replicas, heartbeat ages, queue depth."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def collect(self) -> Iterator[Metric]:
        try:
            info = self.cluster.info()
        except Exception:  # the store is away: no cluster figures in this scrape
            return
        age = GaugeMetricFamily("backup_cluster_heartbeat_age_seconds",
                                "Seconds since each replica's last heartbeat.", labels=["node"])
        held = GaugeMetricFamily("backup_cluster_runs_held",
                                 "Runs each replica holds a lease on.", labels=["node"])
        replicas = GaugeMetricFamily("backup_cluster_replicas",
                                     "Replicas by state (silent: missed its lease).",
                                     labels=["state"])
        counts = {"alive": 0, "silent": 0}
        for n in info.nodes:
            age.add_metric([n.name], n.heartbeat_age_seconds)
            held.add_metric([n.name], len(n.run_ids))
            counts["silent" if n.silent else "alive"] += 1
        for state, count in counts.items():
            replicas.add_metric([state], count)
        yield age
        yield held
        yield replicas
        yield GaugeMetricFamily("backup_cluster_queued_runs",
                                "Runs waiting in the cluster queue.", value=info.queued_runs)
