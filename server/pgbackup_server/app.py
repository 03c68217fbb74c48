"""The composition root: builds every object with what it needs, starts them in
order, and stops them in the reverse order. No logic of its own."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from . import __version__
from .backup.copies import RetryPolicy
from .backup.plan import check_compression_support
from .backup.service import BackupService
from .catalog import CatalogImporter
from .domain.errors import ConfigError
from .domain.models import AlertKind
from .domain.ports import Clock, utc_now
from .observability.events import EventHub
from .observability.setup import Observability, start_observability
from .persistence import Store, open_store
from .postgres.binaries import find_pg_dump, supports_compression
from .restore import RestoreService, VerifyAfterBackup
from .scheduling.scheduler import Scheduler
from .settings import Settings
from .settings.exposure import check_exposure
from .storage.registry import Destinations
from .transport.envoy import EnvoySupervisor
from .transport.grpc.server import GrpcServer
from .transport.grpc.servicer import BackupServicer
from .transport.http import App as WsgiApp
from .transport.http import HttpEndpoints, endpoints
from .transport.web import Site

if TYPE_CHECKING:
    from .cluster import Cluster
    from .cluster.scheduler import ClusterScheduler

log = structlog.get_logger("pgbackup")


class App:
    """The running service: ``start()``, then ``stop()`` from any thread (or
    ``request_stop()`` from a signal handler and ``wait()``)."""

    def __init__(self, settings: Settings, *, clock: Clock = utc_now,
                 copy_retry: RetryPolicy | None = None,
                 destination_options: Mapping[str, Any] | None = None) -> None:
        """``copy_retry``: how failed copies are retried; ``destination_options``: for
        the object stores (part size, request retries); tests make both quick."""
        self.settings = settings
        self.clock = clock
        self.copy_retry = copy_retry
        self.destination_options = dict(destination_options or {})
        self.http_port = 0  # Envoy's REST listener
        self.metrics_port = 0  # metrics.address's listener, when set
        self.store: Store | None = None
        self.cluster: Cluster | None = None
        self.grpc: GrpcServer | None = None
        self.envoy: EnvoySupervisor | None = None
        self.observability: Observability | None = None
        self._endpoints: list[HttpEndpoints] = []
        self._started = False
        self._stop_lock = threading.Lock()
        self._stopping = False
        # A plain flag, not an Event: a signal handler runs on the main thread between
        # two bytecodes, possibly while that thread holds the very lock Event.set() takes.
        self._stop_asked = False
        self._stopped = threading.Event()

    @property
    def grpc_port(self) -> int:
        return self.grpc.port if self.grpc else 0

    def _loopback_grpc(self) -> str:
        """Where a process on this host reaches the gRPC API (restore_command's wal-fetch)."""
        return f"127.0.0.1:{self.grpc.upstream_port if self.grpc else 0}"

    def start(self) -> None:
        s = self.settings
        check_exposure(s)
        binaries = find_pg_dump(str(s.backup.pg_dump_path) if s.backup.pg_dump_path else None)
        check_compression_support(s.backup.format, s.backup.compression, binaries,
                                  supports_compression)
        for binary in binaries:
            log.debug("pg_dump found", path=binary.path, version=binary.version)
        runtime = _private_runtime(s.server.data_directory)
        self.store = open_store(s.store_url, s.cluster.node if s.cluster.enabled else "")
        if self.store.alerts.import_legacy(s.server.data_directory / "alerts.json"):
            log.info("Alert state imported into the store from alerts.json")
        self.events = EventHub()
        runs = self.store.runs
        if s.cluster.enabled:
            from .cluster import Cluster
            from .cluster.retry import RetryingRunStore

            runs = RetryingRunStore(runs)  # type: ignore[assignment]
            self.cluster = Cluster(s, self.store.engine, runs, self.events, self.clock)
            self.cluster.join()
        self.destinations = Destinations.from_configs(s.destinations, s.environment,
                                                      **self.destination_options)
        threading.Thread(target=self.destinations.abort_unfinished_uploads, daemon=True,
                         name="abort-unfinished-uploads").start()
        self.catalog = CatalogImporter(self.store.runs, self.store.copies, self.destinations,
                                       self.clock)
        self.service = BackupService(
            s, runs, self.events, copies=self.store.copies, binaries=binaries,
            runtime_dir=runtime, clock=self.clock, destinations=dict(self.destinations),
            retry=self.copy_retry,
            queue_factory=self.cluster.make_queue if self.cluster else None,
            exclusive=self.cluster.exclusive if self.cluster else None)
        self.restore = RestoreService(s, self.store.runs, self.store.restores, self.events,
                                      targets=self.service.targets, binaries=binaries,
                                      runtime_dir=runtime, clock=self.clock,
                                      destinations=self.destinations,
                                      address=self._loopback_grpc)
        if self.cluster is None or self.cluster.alone():
            # In a cluster, unfinished restores and scratch databases may be another
            # live replica's: settled only by a replica that starts alone.
            self.restore.recover()
        self.events.add(VerifyAfterBackup(self.restore))
        self.scheduler: Scheduler | ClusterScheduler = (
            self.cluster.make_scheduler(self._fire_queued, self.service.plan_scheduled,
                                        self.service.targets) if self.cluster else
            Scheduler(s, fire=self.service.run_scheduled, store=self.store.runs,
                      events=self.events, clock=self.clock))
        self.grpc = GrpcServer(s, BackupServicer(
            self.service, self.restore, self.scheduler, self.store.alerts,
            catalog=self.catalog, cluster=self.cluster.info if self.cluster else None))
        self.grpc.start()
        # Before the scheduler: missed fires are reported as it starts.
        self.observability = start_observability(s, self.events, self.store.runs,
                                                 self.store.alerts, self.grpc.set_serving,
                                                 self.clock)
        self._serve_http()
        # After the listeners: runs interrupted by a crash are notified and counted too.
        if self.cluster:
            self.observability.metrics.registry.register(self.cluster.collector())
            self.cluster.start(stop_run=self.service.executor.stop_run)
            self.cluster.recover(runtime)
        else:
            self.service.recover()
        self.scheduler.start()
        self.service.wal.start()
        if self.service.wal.targets:
            self.observability.alerts.add_check(AlertKind.WAL_ARCHIVING,
                                                self.service.wal.alerts)
            if s.metrics.enabled:
                self.observability.metrics.registry.register(self.service.wal.collector())
        if s.server.envoy:
            self._start_envoy(runtime)
        self._started = True
        log.info("backupd started", version=__version__, database=s.database.redacted_url,
                 backup_dir=str(s.backup.directory), schedules=len(s.schedules))

    def _serve_http(self) -> None:
        """The dashboard and /metrics for Envoy on loopback; /metrics on metrics.address
        when set. The dashboard is served whenever Envoy is, metrics or not."""
        s = self.settings
        registry = (self.observability.metrics.registry
                    if s.metrics.enabled and self.observability is not None else None)
        listeners: list[tuple[str, str, WsgiApp]] = []
        if s.server.envoy:
            listeners.append(("127.0.0.1:0", "server.httpAddress",
                              endpoints(registry, s.auth.token_sha256, site=Site())))
        if registry is not None and s.metrics.address:
            listeners.append((s.metrics.address, "metrics.address",
                              endpoints(registry, s.auth.token_sha256)))
        for address, key, app in listeners:
            listener = HttpEndpoints(app, address, key=key)
            self._endpoints.append(listener)
            port = listener.start()
            if key == "metrics.address":
                self.metrics_port = port
                log.info("Metrics listening", address=f"{address.rpartition(':')[0]}:{port}",
                         path="/metrics")

    def _start_envoy(self, runtime: Path) -> None:
        from .postgres.embedded import free_port
        from .transport.envoy import EnvoyProcess, EnvoySpec, TlsFiles, find_envoy, render_config

        s = self.settings.server
        assert self.grpc is not None
        http_host, _, http_port = s.http_address.rpartition(":")
        http_host = "127.0.0.1" if http_host == "localhost" else http_host
        grpc_host = s.grpc_address.rpartition(":")[0]
        if grpc_host in ("0.0.0.0", "[::]", "::", "localhost") or s.tls is not None:
            grpc_host = "127.0.0.1"
        self.http_port = int(http_port) or free_port()
        admin_port = s.envoy_admin_port or free_port()
        internal = next((e.port for e in self._endpoints if e.key == "server.httpAddress"), None)
        tls = None if s.tls is None else TlsFiles(
            str(s.tls.cert), str(s.tls.key), str(s.tls.client_ca) if s.tls.client_ca else None)
        try:
            text = render_config(EnvoySpec(http_host=http_host, http_port=self.http_port,
                                           grpc_host=grpc_host.strip("[]"),
                                           grpc_port=self.grpc.upstream_port,
                                           admin_port=admin_port, tls=tls,
                                           http_upstream_port=internal))
        except ValueError as exc:
            raise ConfigError(f"server.httpAddress: {exc}; use an IP address such as "
                              "127.0.0.1:8000") from None
        find_envoy()
        self.envoy = EnvoySupervisor(EnvoyProcess(text, runtime, admin_port),
                                     address=s.http_address)
        try:
            self.envoy.start()
        except RuntimeError as exc:
            raise ConfigError(f"server.httpAddress: Envoy did not start on {s.http_address}: "
                              f"{exc}") from None
        log.info("REST gateway (Envoy) listening", address=f"{http_host}:{self.http_port}")

    def _fire_queued(self, schedule: str, target: str) -> list[int]:
        """A claimed fire (cluster): queue its run(s) for any replica."""
        result = self.service.queue_scheduled(schedule, target)
        return [r.id for r in result.runs or (result.run,)]

    # -- stopping -----------------------------------------------------------

    def request_stop(self) -> None:
        """Ask for a stop; :meth:`wait` then stops. Safe in a signal handler: no lock."""
        self._stop_asked = True

    @property
    def stop_requested(self) -> bool:
        return self._stop_asked or self._stopping

    def wait_for_stop_request(self) -> None:
        while not self.stop_requested:
            time.sleep(0.1)  # polled: Event.wait() needs a lock request_stop() may not take

    def wait(self) -> None:
        """Block until a stop is requested, then stop; returns once fully stopped."""
        self.wait_for_stop_request()
        self.stop()

    def stop(self) -> None:
        """Stop everything, in order, within server.shutdownGrace plus a few seconds.
        Safe from any thread and more than once: later calls wait for the first."""
        with self._stop_lock:
            first = not self._stopping
            self._stopping = True
        if not first:
            self._stopped.wait()
            return
        try:
            self._shutdown()
        finally:
            self._stopped.set()

    def _shutdown(self) -> None:
        grace = self.settings.server.shutdown_grace_seconds
        # A start that failed part-way is undone quietly: its error says what happened.
        say = log.info if self._started else log.debug
        say("backupd shutting down" if self._started else "Undoing a failed start",
            grace_seconds=grace)
        # 1. New RPCs get UNAVAILABLE at once; health checks answer NOT_SERVING.
        if self.grpc is not None:
            self.grpc.refuse_new_calls()
        # 2. No new scheduled fires; runs in progress get the grace, together.
        if hasattr(self, "scheduler"):
            self.scheduler.shutdown()
        deadline = time.monotonic() + grace
        restores = None
        if hasattr(self, "restore"):
            restores = threading.Thread(target=self.restore.shutdown, args=(grace,),
                                        name="restore-shutdown", daemon=True)
            restores.start()
        if hasattr(self, "service"):
            self.service.shutdown(grace)
            self.service.wal.stop()
        if self.cluster is not None:
            self.cluster.stop()
        if restores is not None:
            restores.join()
        if self.observability is not None:
            self.observability.stop()
        # 3. RPCs still in flight (their runs just ended) send their replies, through
        # Envoy too; only then does Envoy go, and then the gRPC server.
        if self.grpc is not None and not self.grpc.wait_idle(
                max(deadline - time.monotonic(), 0) + 2):
            log.warning("RPCs still running after the shutdown grace; cutting them off")
        if self.envoy is not None:
            self.envoy.stop()
        for listener in self._endpoints:
            listener.stop()
        if self.grpc is not None:
            self.grpc.stop()
        if self.store is not None:
            self.store.close()
        say("backupd stopped")


def _private_runtime(data_directory: Path) -> Path:
    """``<dataDirectory>/run``, 0700: passfiles, Envoy's config and log."""
    runtime = data_directory / "run"
    try:
        runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(data_directory, 0o700)
        os.chmod(runtime, 0o700)
    except OSError as exc:
        raise ConfigError(f"server.dataDirectory: cannot use {data_directory}: "
                          f"{exc.strerror or exc}") from None
    return runtime
