"""``backupd``: the service's entry point. The only place that exits the process.

It wires config, store, service, scheduler, the gRPC server (with health and
reflection) and a supervised Envoy child serving REST, then waits for
SIGTERM/SIGINT and shuts down gracefully.
"""

from __future__ import annotations

import argparse
import faulthandler
import ipaddress
import json
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from . import __version__, logs, pgtools
from .config import Config, load_config
from .errors import BackupError, ConfigError, PgDumpNotFound
from .runner import check_compression_support
from .service import BackupService, Clock, utc_now

log = structlog.get_logger("pgbackup")
SERVICE_NAME = "backup.v1.BackupService"


def find_pg_dump(config: Config) -> list[pgtools.PgBinary]:
    """Every usable pg_dump; a startup error when there is none."""
    binaries = pgtools.discover(config.backup.pg_dump_path)
    if config.backup.pg_dump_path and not binaries:
        raise PgDumpNotFound(
            f"backup.pgDumpPath: {config.backup.pg_dump_path} is not a working pg_dump; "
            "point it at the pg_dump binary of your PostgreSQL client tools")
    if not binaries:
        raise PgDumpNotFound(
            "pg_dump not found: install the PostgreSQL client tools (Debian/Ubuntu: "
            "apt install postgresql-client), make sure pg_dump is on PATH, or set "
            "backup.pgDumpPath")
    return binaries


class App:
    """The running service: start(), then stop() from any thread."""

    def __init__(self, config: Config, *, clock: Clock = utc_now) -> None:
        self.config = config
        self.clock = clock
        self.grpc_port = 0
        self.upstream_port = 0  # where Envoy sends requests (clear text on loopback)
        self.http_port = 0
        self.envoy: Any = None
        self._server: Any = None
        self._gate: Any = None
        self._started = False  # start() completed: its stop is logged
        self._stop_lock = threading.Lock()
        self._stopping = False
        # A plain flag, not an Event: a signal handler runs on the main thread between
        # two bytecodes, possibly while that thread holds the very lock Event.set() takes.
        self._stop_asked = False
        self._stopped = threading.Event()  # set once everything is stopped
        # Separate from _stopped: a restarted Envoy dies with the watcher thread that
        # started it, so the watcher must outlive the service's shutdown grace.
        self._envoy_done = threading.Event()
        self._envoy_watch: threading.Thread | None = None

    def start(self) -> None:
        import grpc
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc
        from grpc_reflection.v1alpha import reflection

        from pgbackup_api.backup.v1 import backup_pb2, backup_pb2_grpc

        from .auth import AuthInterceptor
        from .observability import start_observability
        from .restore import RestoreService, VerifyAfterBackup
        from .restore.store import SqlRestoreStore
        from .scheduler import Scheduler
        from .servicer import BackupServicer, ErrorInterceptor, ShutdownGate

        cfg = self.config
        check_exposure(cfg)
        binaries = find_pg_dump(cfg)
        check_compression_support(cfg.backup, binaries, pgtools.supports_compression)
        for binary in binaries:
            log.debug("pg_dump found", path=binary.path, version=binary.version)
        runtime = cfg.server.data_directory / "run"
        try:
            runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(cfg.server.data_directory, 0o700)
            os.chmod(runtime, 0o700)
        except OSError as exc:
            raise ConfigError(f"server.dataDirectory: cannot use {cfg.server.data_directory}: "
                              f"{exc.strerror or exc}") from None
        self.store = open_store(cfg.store_url)
        self.service = BackupService(cfg, self.store, binaries=binaries, runtime_dir=runtime,
                                     clock=self.clock)
        self.restore = RestoreService(cfg, self.store, SqlRestoreStore(self.store.engine),
                                      binaries=binaries, runtime_dir=runtime, clock=self.clock,
                                      events=self.service.events,
                                      conninfo_for=self.service.conninfo_for)
        self.restore.recover()
        self.service.events.add(VerifyAfterBackup(self.restore))

        b = cfg.backup
        workers = b.max_concurrent + b.max_queued + 32
        interceptors: list[Any] = [ErrorInterceptor()]
        if cfg.auth.token_sha256:
            interceptors.insert(0, AuthInterceptor(cfg.auth.token_sha256))
        # Outermost: while stopping, every caller gets UNAVAILABLE, authenticated or not.
        self._gate = ShutdownGate()
        interceptors.insert(0, self._gate)
        self._server = grpc.server(ThreadPoolExecutor(max_workers=workers,
                                                      thread_name_prefix="grpc"),
                                   interceptors=interceptors,
                                   options=[("grpc.so_reuseport", 0)])
        backup_pb2_grpc.add_BackupServiceServicer_to_server(
            BackupServicer(self.service, self.restore), self._server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        names = (backup_pb2.DESCRIPTOR.services_by_name["BackupService"].full_name,
                 health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self._server)
        try:
            if cfg.server.tls is None:
                self.grpc_port = self._server.add_insecure_port(cfg.server.grpc_address)
                self.upstream_port = self.grpc_port
            else:
                self.grpc_port = self._server.add_secure_port(cfg.server.grpc_address,
                                                              _server_credentials(cfg))
                # Envoy reaches the service over loopback in clear text; clients
                # reach Envoy and the gRPC port over TLS. Tokens apply on both.
                self.upstream_port = self._server.add_insecure_port("127.0.0.1:0")
        except RuntimeError as exc:
            raise ConfigError(f"server.grpcAddress: cannot listen on {cfg.server.grpc_address} "
                              f"({exc}); is another backupd running?") from None
        self._server.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("gRPC server listening", address=_with_port(cfg.server.grpc_address,
                                                             self.grpc_port))

        def set_serving(ok: bool) -> None:
            status = (health_pb2.HealthCheckResponse.SERVING if ok
                      else health_pb2.HealthCheckResponse.NOT_SERVING)
            for name in ("", SERVICE_NAME):
                self.health.set(name, status)

        # Before the scheduler: missed fires are reported as it starts.
        self.observability = start_observability(cfg, self.service, self.store, set_serving,
                                                 self.clock)
        # After the listeners: runs interrupted by a crash are notified and counted too.
        self.service.recover()
        self.scheduler = Scheduler(cfg, self.service, self.clock)
        self.service.schedules_provider = self.scheduler.schedules
        self.scheduler.start()

        if cfg.server.envoy:
            self._start_envoy(runtime)
        self._started = True
        log.info("backupd started", version=__version__, database=cfg.database.redacted_url,
                 backup_dir=str(b.directory), schedules=len(cfg.schedules))

    def _start_envoy(self, runtime: Path) -> None:
        from .embedded import free_port
        from .envoy import (
            DESCRIPTOR_PATH,
            TEMPLATE_PATH,
            EnvoyProcess,
            TlsFiles,
            find_envoy,
            render_config,
        )

        cfg = self.config.server
        http_host, _, http_port = cfg.http_address.rpartition(":")
        if http_host == "localhost":
            http_host = "127.0.0.1"
        grpc_host = cfg.grpc_address.rpartition(":")[0]
        if grpc_host in ("0.0.0.0", "[::]", "::", "localhost") or cfg.tls is not None:
            grpc_host = "127.0.0.1"
        self.http_port = int(http_port) or free_port()
        admin_port = cfg.envoy_admin_port or free_port()
        try:
            yaml_text = render_config(TEMPLATE_PATH.read_text(), http_host=http_host,
                                      http_port=self.http_port, grpc_host=grpc_host.strip("[]"),
                                      grpc_port=self.upstream_port,
                                      descriptor=str(DESCRIPTOR_PATH), admin_port=admin_port,
                                      tls=None if cfg.tls is None else TlsFiles(
                                          str(cfg.tls.cert), str(cfg.tls.key),
                                          str(cfg.tls.client_ca) if cfg.tls.client_ca
                                          else None))
        except ValueError as exc:
            raise ConfigError(f"server.httpAddress: {exc}; use an IP address such as "
                              "127.0.0.1:8000") from None
        find_envoy()
        self.envoy = EnvoyProcess(yaml_text, runtime, admin_port)
        # After a crash the previous Envoy may still be letting go of the port
        # (it dies with its parent, but not instantly): retry for a while.
        deadline = time.monotonic() + 15
        while True:
            self.envoy.start()
            try:
                self.envoy.wait_ready(30)
                break
            except RuntimeError as exc:
                if "Address already in use" in str(exc) and time.monotonic() < deadline:
                    time.sleep(0.25)
                    continue
                raise ConfigError(f"server.httpAddress: Envoy did not start on "
                                  f"{cfg.http_address}: {exc}") from None
        log.info("REST gateway (Envoy) listening", address=f"{http_host}:{self.http_port}")
        self._envoy_watch = threading.Thread(target=self._watch_envoy, daemon=True)
        self._envoy_watch.start()

    def _watch_envoy(self) -> None:
        """Restart Envoy if it dies on its own; REST must not silently vanish."""
        while not self._envoy_done.wait(1.0):
            if self.envoy is not None and self.envoy.poll() is not None:
                log.error("Envoy exited unexpectedly; restarting", exit_code=self.envoy.poll(),
                          envoy_log=self.envoy.log_tail(5))
                try:
                    self.envoy.start()
                    self.envoy.wait_ready(30)
                except Exception as exc:  # keep trying; gRPC still serves
                    log.error("Envoy restart failed", error=str(exc))

    def request_stop(self) -> None:
        """Ask for a stop; :meth:`wait` then stops the service. Safe in a signal
        handler: it takes no lock."""
        self._stop_asked = True

    @property
    def stop_requested(self) -> bool:
        """A stop was asked for, or is under way."""
        return self._stop_asked or self._stopping

    def wait_for_stop_request(self) -> None:
        """Block until :meth:`request_stop` or :meth:`stop` was called."""
        while not self.stop_requested:
            time.sleep(0.1)  # polled: Event.wait() would need a lock request_stop() may not take

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
        grace = self.config.server.shutdown_grace_seconds
        # A start that failed part-way is undone quietly: its error says what happened.
        say = log.info if self._started else log.debug
        say("backupd shutting down" if self._started else "Undoing a failed start",
            grace_seconds=grace)
        # 1. New RPCs get UNAVAILABLE at once; health checks answer NOT_SERVING.
        if self._gate is not None:
            self._gate.close()
        if hasattr(self, "health"):
            self.health.enter_graceful_shutdown()
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
        if restores is not None:
            restores.join()
        if hasattr(self, "observability"):
            self.observability.stop()
        # 3. RPCs still in flight (their runs just ended) send their replies, through
        # Envoy too; only then does Envoy go, and then the gRPC server.
        if self._gate is not None and not self._gate.wait_idle(
                max(deadline - time.monotonic(), 0) + 2):
            log.warning("RPCs still running after the shutdown grace; cutting them off")
        self._envoy_done.set()
        if self.envoy is not None:
            self.envoy.stop()
        if self._server is not None:
            self._server.stop(grace=1).wait(5)
        if hasattr(self, "store"):
            self.store.close()
        say("backupd stopped")


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name may resolve to anything


def check_exposure(config: Config) -> None:
    """Refuse to serve beyond this host without tokens, unless told to explicitly."""
    if config.auth.token_sha256 or config.auth.allow_unauthenticated:
        return
    exposed = [(key, addr) for key, addr in (("server.grpcAddress", config.server.grpc_address),
                                             ("server.httpAddress", config.server.http_address))
               if not _is_loopback(addr.rpartition(":")[0])
               and (key != "server.httpAddress" or config.server.envoy)]
    if exposed:
        key, addr = exposed[0]
        raise ConfigError(
            f"{key}: refusing to listen on {addr} without authentication; add token digests "
            "to auth.tokenSha256 (backupctl token new prints one), listen on 127.0.0.1, or "
            "set auth.allowUnauthenticated: true to accept unauthenticated access explicitly")


def open_store(url: str) -> Any:
    """The run store, or a ConfigError naming store.url."""
    from sqlalchemy.exc import SQLAlchemyError

    from .store import SqlRunStore

    try:
        return SqlRunStore(url)
    except (SQLAlchemyError, OSError) as exc:
        from sqlalchemy.engine import make_url

        try:
            shown = repr(make_url(url))  # the URL's repr masks its password
        except SQLAlchemyError:
            shown = "the configured URL"
        raise ConfigError(f"store.url: cannot open {shown}: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200]}") from None


def _server_credentials(config: Config) -> Any:
    import grpc

    tls = config.server.tls
    assert tls is not None
    key, cert = tls.key.read_bytes(), tls.cert.read_bytes()
    ca = tls.client_ca.read_bytes() if tls.client_ca else None
    for name, data in (("cert", cert), ("key", key), ("clientCa", ca)):
        if data is not None and b"-----BEGIN" not in data:
            raise ConfigError(f"server.tls.{name}: not a PEM file")
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                       require_client_auth=ca is not None)


def _with_port(address: str, port: int) -> str:
    return f"{address.rpartition(':')[0]}:{port}"


# --demo's listeners: the defaults of server.grpcAddress, server.httpAddress and
# metrics.address unless these are set (HOST:PORT), e.g. to run two demos.
DEMO_ADDRESS_ENV = {"BACKUPD_DEMO_GRPC_ADDRESS": ("server", "grpcAddress"),
                    "BACKUPD_DEMO_HTTP_ADDRESS": ("server", "httpAddress"),
                    "BACKUPD_DEMO_METRICS_ADDRESS": ("metrics", "address")}


def _demo_config(root: Path) -> Path:
    """Start an embedded PostgreSQL with sample data and write a config for it."""
    from .config_values import as_address
    from .embedded import EmbeddedPostgres, seed_sample

    addresses: dict[tuple[str, str], str] = {}
    for var, key in DEMO_ADDRESS_ENV.items():
        if value := os.environ.get(var):
            try:
                addresses[key] = as_address(value)
            except ValueError:
                raise ConfigError(f"{var}={value!r}: expected HOST:PORT, "
                                  f"e.g. 127.0.0.1:8001") from None
    pg = EmbeddedPostgres(root / "postgres", password="demo-password", port=0)
    print(f"backupd --demo: PostgreSQL runs as {pg.runs_as}; its data: {pg.pgdata}",
          file=sys.stderr)
    _DEMO_SERVERS.append(pg)  # stopped by main() however the rest goes
    pg.start()
    exists = pg.psql("SELECT 1 FROM pg_database WHERE datname = 'my_db'").strip()
    if not exists:
        seed_sample(pg, "my_db")
    # JSON strings are YAML strings: the values cannot break out of their line.
    listeners = "".join(f"  {name}: {json.dumps(value)}\n"
                        for (section, name), value in addresses.items() if section == "server")
    if ("metrics", "address") in addresses:
        listeners += f"metrics:\n  address: {json.dumps(addresses['metrics', 'address'])}\n"
    path = root / "config.yaml"
    path.write_text(f"""# Written by backupd --demo; the database is an embedded PostgreSQL.
database:
  url: "{pg.url('my_db')}"
backup:
  enabled: true
  directory: backups
  retentionDays: 30
  cleanupOld: true
  compressBackup: false
  # The seed's create-custom example writes here.
  allowedDirectories: ["/custom/backup/path"]
scheduler:
  timezone: UTC
schedules:
  - name: nightly
    cron: "0 2 * * *"
    job: DatabaseBackup
    isEnabled: true
server:
  dataDirectory: data
{listeners}""")
    path.chmod(0o600)
    return path


_DEMO_SERVERS: list[Any] = []


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="backupd", description="PostgreSQL backup scheduler: gRPC on server.grpcAddress, "
                                    "REST through Envoy on server.httpAddress.")
    parser.add_argument("--config", "-c", help="path to config.yaml (default: ./config.yaml)")
    parser.add_argument("--demo", action="store_true",
                        help="start an embedded PostgreSQL with sample data (database my_db) "
                             "and serve it; state goes to ./demo (or --demo-dir)")
    parser.add_argument("--demo-dir", default="demo", help="where --demo keeps its state")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the configuration and pg_dump, then exit")
    parser.add_argument("--version", action="version", version=f"backupd {__version__}")
    args = parser.parse_args(argv)
    # pg_dump is started with fork/exec from worker threads; gRPC's fork handlers
    # are not needed for that and only print warnings.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

    try:
        if args.demo:
            demo_root = Path(args.demo_dir).resolve()
            demo_root.mkdir(parents=True, exist_ok=True, mode=0o700)
            print(f"backupd --demo: starting an embedded PostgreSQL in {demo_root} ...",
                  file=sys.stderr)
            config_path: Path | None = _demo_config(demo_root)
        elif args.config:
            config_path = Path(args.config)
        elif Path("config.yaml").exists():
            config_path = Path("config.yaml")
        else:
            config_path = None
        missing = f"{Path.cwd() / 'config.yaml'} not found and no --config given"
        source = (str(config_path.resolve()) if config_path is not None
                  else f"none ({missing}; defaults apply)")
        try:
            config = load_config(config_path)
        except ConfigError as exc:
            if config_path is None:  # say why every setting is missing
                exc.message = f"no config file ({missing}), so defaults apply; {exc.message}"
            raise
        logs.configure(config.log.level, config.log.format)
        check_exposure(config)
        if args.check_config:
            binaries = find_pg_dump(config)
            check_compression_support(config.backup, binaries, pgtools.supports_compression)
            found = ", ".join(f"{b.version} ({b.path})" for b in binaries)
            print(f"config file: {source}")
            print(f"configuration OK; pg_dump: {found}")
            sys.exit(0)
        log.info("Configuration loaded", config_file=source)
        app = App(config)

        signals = [0]  # how many arrived; the stop watchdog reports repeats

        def on_signal(_signum: int, _frame: Any) -> None:
            # Runs on the main thread, wherever it is: flags only, no lock, no log.
            signals[0] += 1
            app.request_stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        deadline = config.server.shutdown_grace_seconds + STOP_MARGIN_SECONDS
        try:
            app.start()
        except BaseException:
            _watch_stop(deadline, signals)
            app.stop()
            raise
        if args.demo:
            print(f"\nbackupd --demo is serving database my_db.\n"
                  f"  curl -X POST http://localhost:{app.http_port}/api/v1/backup/create\n"
                  f"  curl -X GET http://localhost:{app.http_port}/api/v1/backup/stats\n"
                  f"Press Ctrl-C to stop.\n", file=sys.stderr)
        app.wait_for_stop_request()
        _watch_stop(deadline, signals)
        app.stop()
        # Stopped: a late signal must not turn the clean exit into death by SIGTERM
        # (the interpreter drops Python handlers while it exits, not ignored ones).
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
    except (ConfigError, PgDumpNotFound) as exc:
        print(f"backupd: {exc.message}", file=sys.stderr)
        sys.exit(2)
    except BackupError as exc:
        print(f"backupd: {exc.message}", file=sys.stderr)
        sys.exit(1)
    finally:
        for pg in _DEMO_SERVERS:
            pg.stop()


# Beyond server.shutdownGrace: pg_dump's SIGKILL delay (10 s), Envoy's and gRPC's stop,
# delivering queued notifications. Only a hang ever reaches it.
STOP_MARGIN_SECONDS = 30.0


def _watch_stop(seconds: float, signals: list[int]) -> None:
    """Stopping must always stop: if the process is still alive ``seconds`` from now
    (a stop step or a leftover thread hangs), dump every thread's stack and exit 1;
    children die with the process and the next start settles unfinished runs.
    Meanwhile, say that a repeated signal changes nothing."""
    def watchdog() -> None:
        end = time.monotonic() + seconds
        seen = signals[0]
        while time.monotonic() < end:
            time.sleep(0.2)
            if signals[0] > seen:
                seen = signals[0]
                log.warning("Already shutting down; waiting for running work to stop",
                            at_most_seconds=round(end - time.monotonic()))
        log.error("backupd did not stop in time; exiting anyway", seconds=seconds,
                  threads=sorted(t.name for t in threading.enumerate()))
        faulthandler.dump_traceback(all_threads=True)
        os._exit(1)

    threading.Thread(target=watchdog, name="stop-watchdog", daemon=True).start()


if __name__ == "__main__":
    main()
