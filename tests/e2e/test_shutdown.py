"""Stopping always stops: backupd exits within server.shutdownGrace (plus a few
seconds) with code 0 after SIGTERM, whatever requests arrive meanwhile, and every
request sent while it stops gets UNAVAILABLE (HTTP 503 through Envoy), never silence.
Real backupd processes, a real pg_dump held mid-run by a table lock, real Envoy."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import psycopg
from conftest import DB, base_config
from procs import Backupd, wait_for

from pgbackup_client import BackupClient, BackupClientError
from pgbackup_server.persistence import open_store
from pgbackup_server.postgres.embedded import free_port

GRACE = 2.0  # server.shutdownGrace of these tests
SLACK = 6.0  # what stopping may take beyond the grace (gRPC drain, Envoy, store)


# gRPC core cancels the calls that reach the server in the same instant as its final
# stop (measured: a few a stop when hammered, within ~10 ms of it): CANCELLED is
# accepted only for calls that ended that close to the exit.
LAST_INSTANT = 1.0


@dataclass
class Traffic:
    """RPCs sent from threads until told to stop; what each got back, and when."""

    outcomes: list[tuple[str, str, str, float]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def run(self, name: str, call: Callable[[], object]) -> None:
        def loop() -> None:
            while not self.stop.is_set():
                try:
                    call()
                    code, detail = "OK", ""
                except (BackupClientError, RestError) as exc:
                    code, detail = exc.code, exc.details
                self.outcomes.append((name, code, detail, time.monotonic()))
                time.sleep(0.05)

        t = threading.Thread(target=loop, daemon=True)
        self.threads.append(t)
        t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)
            assert not t.is_alive(), "a client call hung"

    def wrong(self, exited_at: float) -> list[tuple[str, str, str, float]]:
        """Replies other than a success or UNAVAILABLE (HTTP 503 with a JSON body):
        silence (DEADLINE_EXCEEDED), INTERNAL, a non-JSON 503, ..."""
        return [o for o in self.outcomes if o[1] not in ("OK", "UNAVAILABLE", "503")
                and not (o[1] == "CANCELLED" and exited_at - o[3] < LAST_INSTANT)]

    def server_refusals(self) -> set[tuple[str, str]]:
        """(call, code) of the UNAVAILABLE replies of the stopping server itself,
        as opposed to a refused connection once it is gone."""
        return {(o[0], o[1]) for o in self.outcomes if "shutting down" in o[2]}


class RestError(Exception):
    def __init__(self, code: str, details: str) -> None:
        super().__init__(code, details)
        self.code, self.details = code, details


def rest_get(url: str) -> None:
    """GET through Envoy; raises RestError with the HTTP status unless 200 with JSON."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            json.loads(resp.read())
    except urllib.error.HTTPError as err:
        body = err.read().decode(errors="replace")
        err.close()
        try:
            message = json.loads(body)["message"]
        except (ValueError, KeyError, TypeError):
            message = f"not a JSON error body: {body[:200]!r}"
            raise RestError(f"{err.code}-not-json", message) from None
        raise RestError(str(err.code), message) from None
    except (urllib.error.URLError, OSError) as exc:  # Envoy gone: connection refused
        raise RestError("UNAVAILABLE", f"connection: {exc}") from None


def daemon_config(pg, root, *, envoy: bool) -> dict:
    cfg = base_config(pg, root)
    cfg["server"].update(grpcAddress=f"127.0.0.1:{free_port()}",
                         httpAddress=f"127.0.0.1:{free_port()}", envoy=envoy,
                         shutdownGrace=f"{GRACE:g}s")
    cfg["backup"]["maxQueued"] = 200  # the CreateBackup traffic is never turned away as too much
    cfg["log"] = {"level": "info"}
    return cfg


def wait_exit(daemon: Backupd, timeout: float) -> tuple[int, float]:
    """backupd's exit code and when it exited; kills it and fails if it is still
    running ``timeout`` s from now."""
    assert daemon.proc is not None
    try:
        code = daemon.proc.wait(timeout)
    except Exception:
        daemon.proc.kill()
        daemon.proc.wait()
        raise AssertionError(f"backupd still running {timeout:g} s after SIGTERM:\n"
                             + daemon.log()[-4000:]) from None
    return code, time.monotonic()


def hold_a_backup(pg, client: BackupClient) -> psycopg.Connection:
    """A backup RUNNING for as long as the returned connection holds its lock."""
    lock = psycopg.connect(pg.admin_conninfo(DB))
    lock.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
    run = client.create_backup(background=True).backup
    wait_for(lambda: client.get_backup(run.id).status == "RUNNING")
    return lock


def check_clean_stop(daemon: Backupd, traffic: Traffic, code: int, exited_at: float,
                     elapsed: float, limit: float) -> str:
    log = daemon.log()
    assert code == 0, log[-4000:]
    assert elapsed < limit, (elapsed, log[-4000:])
    assert not traffic.wrong(exited_at), (traffic.wrong(exited_at)[:5], log[-3000:])
    assert "Traceback" not in log, log[-4000:]
    assert "backupd stopped" in log, log[-2000:]
    return log


def test_sigterm_during_a_backup_with_requests_arriving(pg, tmp_path):
    """The issue's repro: a backup held mid-run, SIGTERM, then at once GetStats and
    CreateBackup calls. It used to hang for good: the interpreter began exiting while
    the stop ran, shut gRPC's executor down, and its serve thread died."""
    daemon = Backupd(tmp_path, daemon_config(pg, tmp_path, envoy=False)).start()
    traffic = Traffic()
    clients = [BackupClient(daemon.grpc_address, timeout=4) for _ in range(3)]
    lock = None
    try:
        lock = hold_a_backup(pg, clients[0])
        assert daemon.proc is not None
        t0 = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        traffic.run("GetStats", clients[1].get_stats)
        traffic.run("CreateBackup", lambda: clients[2].create_backup(background=True,
                                                                      timeout=4))
        code, exited_at = wait_exit(daemon, GRACE + SLACK)
        traffic.finish()
    finally:
        traffic.stop.set()
        if lock is not None:
            lock.close()
        for c in clients:
            c.close()
        daemon.stop()
    check_clean_stop(daemon, traffic, code, exited_at, exited_at - t0, GRACE + SLACK)
    # While the backup had its grace, the server itself answered UNAVAILABLE.
    assert traffic.server_refusals() == {("GetStats", "UNAVAILABLE"),
                                         ("CreateBackup", "UNAVAILABLE")}, traffic.outcomes[:10]


def test_start_stop_cycles_under_traffic(pg, tmp_path):
    """Starts and stops with RPCs arriving from threads all along: each stop is
    prompt, with code 0. The first cycle serves REST through Envoy with a backup
    running, so REST callers get 503 with a JSON body while it drains; a second
    SIGTERM, or a SIGINT, changes nothing."""
    for cycle, signals in enumerate(([signal.SIGTERM, signal.SIGTERM], [signal.SIGTERM],
                                     [signal.SIGINT], [signal.SIGTERM, signal.SIGINT])):
        root = tmp_path / f"cycle{cycle}"
        root.mkdir()
        cfg = daemon_config(pg, root, envoy=cycle == 0)
        daemon = Backupd(root, cfg).start()
        traffic = Traffic()
        clients = [BackupClient(daemon.grpc_address, timeout=4) for _ in range(2)]
        lock = None
        try:
            if cycle == 0:
                lock = hold_a_backup(pg, clients[0])
                http = f"http://{cfg['server']['httpAddress']}/api/v1"
                traffic.run("REST stats", partial(rest_get, f"{http}/backup/stats"))
                traffic.run("REST list", partial(rest_get, f"{http}/backups?page_size=5"))
            traffic.run("GetStats", clients[0].get_stats)
            traffic.run("CreateBackup", partial(clients[1].create_backup, background=True,
                                                timeout=4))
            time.sleep(0.3)  # traffic flowing before the stop
            assert daemon.proc is not None
            t0 = time.monotonic()
            for sig in signals:
                daemon.proc.send_signal(sig)
                time.sleep(0.1)
            code, exited_at = wait_exit(daemon, GRACE + SLACK)
            traffic.finish()
        finally:
            traffic.stop.set()
            if lock is not None:
                lock.close()
            for c in clients:
                c.close()
            daemon.stop()
        log = check_clean_stop(daemon, traffic, code, exited_at, exited_at - t0,
                               (GRACE if cycle == 0 else 0) + SLACK)
        if cycle == 0:
            assert {("REST stats", "503"), ("REST list", "503")} <= traffic.server_refusals(), \
                traffic.outcomes[:20]
            assert "Already shutting down" in log


def test_queued_runs_cancelled_by_the_stop_do_not_cost_the_grace(pg, start_app):
    """A run still queued at the stop is cancelled: the stop waits only for the running
    one (it used to wait out the whole grace), and a synchronous caller of the queued
    run gets UNAVAILABLE, not INTERNAL."""
    stack = start_app(envoy=False, server={"shutdownGrace": "20s"})
    client = stack.client()
    lock = hold_a_backup(pg, client)
    running = client.list_backups().backups[0]
    outcome: list[BaseException | None] = []

    def sync_create() -> None:
        try:
            with BackupClient(stack.grpc_address) as own:
                own.create_backup()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)

    caller = threading.Thread(target=sync_create)
    caller.start()
    wait_for(lambda: len(client.list_backups().backups) == 2)
    threading.Timer(1.0, lock.close).start()  # the running backup can finish in the grace
    t0 = time.monotonic()
    stack.app.stop()
    elapsed = time.monotonic() - t0
    caller.join(10)
    assert elapsed < 10, elapsed
    assert isinstance(outcome[0], BackupClientError), outcome
    assert outcome[0].code == "UNAVAILABLE"
    assert "before this run started" in outcome[0].details
    store = open_store(stack.app.settings.store_url).runs
    try:
        assert store.get(running.id).status.value == "SUCCEEDED"
        queued = [r for r in store.list_runs().runs if r.id != running.id]
        assert [(r.status.value, "before this run started" in r.error) for r in queued] == \
            [("FAILED", True)]
    finally:
        store.close()
