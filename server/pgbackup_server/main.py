"""``backupd``: the entry point. Parses the arguments, loads the settings, runs the
service until SIGTERM/SIGINT, and is the only place that exits the process."""

from __future__ import annotations

import argparse
import faulthandler
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import structlog

from . import __version__
from .demo import SERVERS, demo_config
from .domain.errors import BackupError, ConfigError, PgDumpNotFound
from .domain.ports import Clock
from .observability import logs
from .postgres.binaries import find_pg_dump, supports_compression
from .settings import load_settings
from .settings.exposure import check_exposure

log = structlog.get_logger("pgbackup")


def main(argv: list[str] | None = None, *, clock: Clock | None = None) -> None:
    """``clock``: the service's clock (tests run replicas on a compressed one)."""
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
            config_path: Path | None = demo_config(demo_root)
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
            config = load_settings(config_path)
        except ConfigError as exc:
            if config_path is None:  # say why every setting is missing
                exc.message = f"no config file ({missing}), so defaults apply; {exc.message}"
            raise
        logs.configure(config.log.level, config.log.format)
        check_exposure(config)
        if args.check_config:
            binaries = find_pg_dump(str(config.backup.pg_dump_path)
                                    if config.backup.pg_dump_path else None)
            from .backup.plan import check_compression_support

            check_compression_support(config.backup.format, config.backup.compression,
                                      binaries, supports_compression)
            found = ", ".join(f"{b.version} ({b.path})" for b in binaries)
            print(f"config file: {source}")
            print(f"configuration OK; pg_dump: {found}")
            sys.exit(0)
        log.info("Configuration loaded", config_file=source)
        from .app import App  # the whole service: imported once the settings are good

        app = App(config, clock=clock) if clock is not None else App(config)

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
        for pg in SERVERS:
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
