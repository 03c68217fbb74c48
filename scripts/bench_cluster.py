"""Benchmark several backupd replicas on one PostgreSQL store (issue 15).

Three figures, each against its target (``scripts/bench.py --cases cluster`` runs them
and prints them with the other cases):

- **failover**: three replicas with the default lease (15 s); the replica executing
  a scheduled run (held mid-dump by a table lock) is killed with SIGKILL; the time
  until another replica takes the next run of the schedule. Target <= 15 s.
- **scheduling throughput**: 1,000 schedules of one target firing every minute over
  three replicas (4 dumps at once each, 12 across the cluster); per fire, the delay
  from its time to its run recorded and queued, and from the moment its run could
  start (its fire time, or the end of the run that freed one of the 12 places) to its
  start (``started_at``: taken by a replica and begun). Target: every fire within 2 s.
- **GetStats p99** on a PostgreSQL store holding 100,000 runs (one every 15 minutes
  over five databases, the last 30 days' present, each with a copy at an off-site
  destination), through gRPC on one replica. Target <= 10 ms.

Replicas run as subprocesses on an embedded PostgreSQL (store and backed-up
database alike); everything started is stopped by pid.

    .venv/bin/python scripts/bench.py --cases cluster         # all three, full size
    .venv/bin/python scripts/bench.py --cases cluster --quick  # 1 round, 100 schedules,
                                                               # 10,000 runs
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import yaml

ROOT = Path(__file__).resolve().parent.parent
TARGET_FAILOVER_S = 15.0
TARGET_FIRE_LAG_S = 2.0
TARGET_STATS_P99_MS = 10.0
# A replica on a clock SPEED times faster (fire times), shared by all replicas.
LAUNCH = """
import sys, time
from datetime import UTC, datetime, timedelta
from pgbackup_server.main import main
origin, start, speed = (float(a) for a in sys.argv[1:4])
base = datetime.fromtimestamp(start, UTC)
main(sys.argv[4:], clock=lambda: base + timedelta(seconds=(time.time() - origin) * speed))
"""


def say(message: str) -> None:
    print(f"[bench-cluster] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * pct / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def target(name: str, goal: str, measured: Any, ok: bool) -> dict[str, Any]:
    return {"target": name, "goal": goal, "measured": measured,
            "result": "PASS" if ok else "FAIL"}


def free_port() -> int:
    from pgbackup_server.postgres.embedded import free_port as fp

    return fp()


class Replica:
    def __init__(self, root: Path, cfg: dict[str, Any], clock: tuple[float, float, float]):
        root.mkdir(parents=True, exist_ok=True)
        self.root, self.cfg, self.clock = root, cfg, clock
        (root / "config.yaml").write_text(yaml.safe_dump(cfg))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return str(self.cfg["cluster"]["nodeName"])

    def spawn(self) -> Replica:
        env = {**os.environ, "GRPC_ENABLE_FORK_SUPPORT": "false", "GRPC_VERBOSITY": "ERROR"}
        with open(self.root / "backupd.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", LAUNCH, *map(repr, self.clock), "--config",
                 str(self.root / "config.yaml")], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=env)
        return self

    def ready(self, timeout: float = 90) -> None:
        from pgbackup_client import BackupClient

        deadline = time.monotonic() + timeout
        with BackupClient(self.cfg["server"]["grpcAddress"], timeout=2) as client:
            while True:
                try:
                    client.get_stats()
                    return
                except Exception:
                    assert self.proc is not None
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        log = (self.root / "backupd.log").read_text(errors="replace")
                        raise RuntimeError(f"{self.name} did not start:\n{log[-3000:]}") from None
                    time.sleep(0.2)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def replicas(root: Path, pg: Any, store: str, database: str, n: int, *, speed: float = 1.0,
             schedules: list[dict[str, Any]] | None = None, lease: str = "15s",
             backup: dict[str, Any] | None = None, max_per_server: int = 0) -> list[Replica]:
    now = time.time()
    out = []
    for i in range(n):
        r = root / f"r{i}"
        cfg = {
            "database": {"url": pg.url(database)},
            "backup": {"enabled": True, "directory": str(root / "backups"), "cleanupOld": False,
                       **(backup or {})},
            "schedules": schedules or [],
            "server": {"grpcAddress": f"127.0.0.1:{free_port()}", "envoy": False,
                       "dataDirectory": str(r / "data"), "shutdownGrace": "5s"},
            "store": {"url": store}, "log": {"level": "warning"},
            "cluster": {"enabled": True, "nodeName": f"node-{i}", "leaseTimeout": lease,
                        "maxPerServer": max_per_server},
        }
        out.append(Replica(r, cfg, (now, now, speed)))
    for r in out:
        r.spawn()
    for r in out:
        r.ready()
    return out


def new_store(pg: Any) -> tuple[str, str]:
    name = f"store_{int(time.time() * 1000) % 10**9}"
    pg.create_database(name)
    return pg.url(name).replace("postgresql://", "postgresql+psycopg://"), pg.admin_conninfo(name)


def poll(predicate: Callable[[], Any], timeout: float, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise RuntimeError(f"timed out after {timeout}s")


def rows(conninfo: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()


# -- the figures ------------------------------------------------------------------


def bench_failover(root: Path, pg: Any, rounds: int) -> tuple[dict[str, Any], list[dict]]:
    """Kill the replica running a scheduled backup; time until another takes the next."""
    times = []
    for i in range(rounds):
        store, conninfo = new_store(pg)
        lock = psycopg.connect(pg.admin_conninfo("bench"))
        lock.execute("LOCK TABLE pgbench_accounts IN ACCESS EXCLUSIVE MODE")
        trio = replicas(root / f"failover{i}", pg, store, "bench", 3, speed=30,
                        schedules=[{"name": "m", "cron": "* * * * *", "job": "DatabaseBackup"}])
        try:
            run_id, node = poll(lambda c=conninfo: rows(  # type: ignore[misc]
                c, "SELECT id, node FROM backup_runs WHERE status = 'RUNNING'"), 60)[0]
            time.sleep(1.0)  # well into the dump
            victim = next(r for r in trio if r.name == node)
            victim.stop(signal.SIGKILL)
            killed = time.monotonic()
            lock.rollback()
            poll(lambda c=conninfo, rid=run_id, n=node: rows(  # type: ignore[misc]
                c, "SELECT 1 FROM backup_runs WHERE id > %s AND node <> '' AND node <> %s",
                rid, n), 60, every=0.02)
            times.append(time.monotonic() - killed)
            say(f"failover round {i + 1}: {times[-1]:.2f} s")
        finally:
            lock.close()
            for r in trio:
                r.stop()
    worst = max(times)
    return ({"rounds": rounds, "seconds": [round(t, 2) for t in times],
             "median_s": round(statistics.median(times), 2), "max_s": round(worst, 2)},
            [target("Failover: kill -9 to the next run taken by another replica (lease 15 s)",
                    f"<= {TARGET_FAILOVER_S:g} s", round(worst, 2), worst <= TARGET_FAILOVER_S)])


def start_lags(conninfo: str, slots: int, first: datetime,
               last: datetime) -> tuple[list[float], list[float], int]:
    """(queued lags, start lags, runs measured) of the runs of the fires from ``first``
    to ``last``. A run's start lag is from the moment it could start to its start
    (``started_at``, set as the replica that took it begins): its fire time, or, when
    the cluster's ``slots`` places for its server were all taken then, the end of the
    run that freed one (the k-th start cannot come before the (k - slots)-th end)."""
    every = rows(conninfo, "SELECT r.started_at, r.finished_at, f.fire_time, r.queued_at, "
                           "f.fire_time BETWEEN %s AND %s FROM backup_runs r JOIN "
                           "schedule_fires f ON r.id::text = f.run_ids "
                           "WHERE r.started_at IS NOT NULL ORDER BY r.started_at",
                 first.replace(tzinfo=None), last.replace(tzinfo=None))
    ends = sorted(r[1] for r in every if r[1] is not None)
    queued, started = [], []
    for k, (start, _end, fire, queued_at, measured) in enumerate(every):
        ready = fire if k < slots else max(fire, ends[k - slots])
        if measured:
            queued.append((queued_at - fire).total_seconds())
            started.append((start - ready).total_seconds())
    return queued, started, len(started)


def bench_schedules(root: Path, pg: Any, n: int, minutes: int) -> tuple[dict, list[dict]]:
    """``n`` schedules of one target firing every minute over three replicas, on the
    real clock, each replica running up to 4 dumps (12 across the cluster)."""
    per_replica, replicas_n = 4, 3
    slots = per_replica * replicas_n
    store, conninfo = new_store(pg)
    schedules = [{"name": f"s{i:04d}", "cron": "* * * * *", "job": "DatabaseBackup"}
                 for i in range(n)]
    trio = replicas(root / "schedules", pg, store, "tiny", replicas_n, schedules=schedules,
                    backup={"maxConcurrent": per_replica, "maxQueued": 10000},
                    max_per_server=slots)
    try:
        first = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        last = first + timedelta(minutes=minutes - 1)
        say(f"schedules: {n} schedules, waiting for fires {first:%H:%M}..{last:%H:%M}")
        window = (first.replace(tzinfo=None), last.replace(tzinfo=None))
        try:
            poll(lambda: rows(conninfo, "SELECT count(*) FROM schedule_fires WHERE "
                                        "fire_time = %s", window[1])[0][0] >= n,
                 (last - datetime.now(UTC)).total_seconds() + 60, every=0.5)
        except RuntimeError:
            got = rows(conninfo, "SELECT fire_time, count(*) FROM schedule_fires GROUP BY 1 "
                                 "ORDER BY 1")
            say(f"fires claimed: {got}")
            raise
        lags = [float(x) for (x,) in rows(
            conninfo, "SELECT extract(epoch FROM claimed_at - fire_time) FROM schedule_fires "
                      "WHERE fire_time BETWEEN %s AND %s", *window)]
        t0 = time.monotonic()
        try:  # every run of the measured fires started and ended
            poll(lambda: rows(conninfo, "SELECT count(*) FROM backup_runs r JOIN "
                                        "schedule_fires f ON r.id::text = f.run_ids WHERE "
                                        "f.fire_time BETWEEN %s AND %s AND r.finished_at "
                                        "IS NOT NULL", *window)[0][0] >= n * minutes,
                 900, every=1.0)
        except RuntimeError:
            say("schedules: some runs did not finish within 900 s")
        say(f"schedules: {n * minutes} runs done {time.monotonic() - t0:.0f} s after the "
            "last fire was claimed")
        queued, started, measured = start_lags(conninfo, slots, first, last)
        executed_by = dict(rows(conninfo, "SELECT node, count(*) FROM backup_runs "
                                          "WHERE node <> '' GROUP BY node"))
        statuses = dict(rows(conninfo, "SELECT status, count(*) FROM backup_runs r JOIN "
                                       "schedule_fires f ON r.id::text = f.run_ids WHERE "
                                       "f.fire_time BETWEEN %s AND %s GROUP BY 1", *window))
        per_fire = rows(conninfo, "SELECT count(*) FROM schedule_fires GROUP BY schedule, "
                                  "fire_time HAVING count(*) > 1")
        nodes = dict(rows(conninfo, "SELECT node, count(*) FROM schedule_fires GROUP BY node"))
    finally:
        for r in trio:
            r.stop()
    worst_queued = max(queued) if queued else float("inf")
    worst = max(started) if started else float("inf")
    complete = not per_fire and measured == len(lags) == n * minutes
    return ({"schedules": n, "fires": len(lags), "duplicate_claims": len(per_fire),
             "slots": slots, "claims_by_replica": nodes, "runs_taken_by_replica": executed_by,
             "statuses": statuses, "claim_lag_max_s": round(max(lags), 3),
             "queued_lag_p50_s": round(percentile(queued, 50), 3),
             "queued_lag_max_s": round(worst_queued, 3),
             "start_lag_p50_s": round(percentile(started, 50), 3),
             "start_lag_p99_s": round(percentile(started, 99), 3),
             "start_lag_max_s": round(worst, 3)},
            [target(f"Scheduling: {n} schedules over 3 replicas, fire time to run queued",
                    f"every fire <= {TARGET_FIRE_LAG_S:g} s", round(worst_queued, 3),
                    worst_queued <= TARGET_FIRE_LAG_S and complete),
             target(f"Scheduling: {n} schedules over 3 replicas, run started once a place "
                    f"of {slots} is free", f"every run <= {TARGET_FIRE_LAG_S:g} s",
                    round(worst, 3), worst <= TARGET_FIRE_LAG_S and complete)])


def bench_stats(root: Path, pg: Any, n_runs: int, calls: int) -> tuple[dict, list[dict]]:
    """GetStats through gRPC on a replica whose PostgreSQL store holds ``n_runs`` runs."""
    from pgbackup_client import BackupClient
    from pgbackup_server.persistence import open_store

    store, conninfo = new_store(pg)
    open_store(store).close()  # the schema
    say(f"stats: inserting {n_runs} runs into the PostgreSQL store")
    # One every 15 minutes over five databases, 5% failed, the last 30 days present.
    recent = n_runs - 30 * 96
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO backup_runs (database, target, kind, status, trigger, schedule, "
            "backup_dir, file_path, temp_path, size_bytes, sha256, queued_at, started_at, "
            "finished_at, error, format, compression, pg_dump_version, server_version, "
            "file_state, present, bytes_written, estimated_total_bytes, verification, "
            "verification_reason, node) SELECT 'db' || (g %% 5), 'db' || (g %% 5), "
            "'DATABASE', CASE WHEN g %% 20 = 0 THEN 'FAILED' ELSE 'SUCCEEDED' END, "
            "'SCHEDULE', 'nightly', %s, '/b/backup_' || g || '.sql', '', 1000 + g, '', "
            "t, t, t + interval '1 minute', '', 'plain', 'none', '18', '18', "
            "CASE WHEN g %% 20 = 0 THEN 'NONE' WHEN g > %s THEN 'PRESENT' ELSE 'DELETED' "
            "END, g %% 20 <> 0 AND g > %s, 0, 0, '', '', 'node-' || (g %% 3) "
            "FROM generate_series(1, %s) g, LATERAL (SELECT (now() AT TIME ZONE 'UTC') - "
            "(%s - g) * interval '15 minutes' AS t) x",
            (str(root / "backups"), recent, recent, n_runs, n_runs))
        # And a copy of every backup at an off-site destination (usage per destination).
        conn.execute(
            "INSERT INTO backup_copies (run_id, destination, state, location, size_bytes, "
            "sha256, error, stored_at, file_state) SELECT id, 'offsite', 'SUCCEEDED', "
            "'b/' || id, size_bytes, '', '', finished_at, file_state FROM backup_runs "
            "WHERE status = 'SUCCEEDED'")
        conn.execute("VACUUM ANALYZE")
    open_store(store).close()  # derived totals rebuilt from the runs
    (replica,) = replicas(root / "stats", pg, store, "tiny", 1)
    try:
        with BackupClient(replica.cfg["server"]["grpcAddress"], timeout=30) as client:
            for _ in range(50):
                client.get_stats()
            ms = []
            for _ in range(calls):
                t0 = time.perf_counter()
                client.get_stats()
                ms.append((time.perf_counter() - t0) * 1000)
    finally:
        replica.stop()
    p99 = percentile(ms, 99)
    return ({"recorded_runs": n_runs, "calls": calls, "p50_ms": round(percentile(ms, 50), 2),
             "p99_ms": round(p99, 2), "max_ms": round(max(ms), 2)},
            [target(f"GetStats p99, PostgreSQL store, {n_runs} runs",
                    f"<= {TARGET_STATS_P99_MS:g} ms", round(p99, 2),
                    p99 <= TARGET_STATS_P99_MS)])


def run(work: Path, wanted: set[str], *, failover_rounds: int = 3, schedules: int = 1000,
        minutes: int = 2, runs: int = 100_000, calls: int = 1000) -> dict[str, Any]:
    """The figures in ``wanted`` (failover, schedules, stats) on an embedded PostgreSQL
    in ``work``; ``{"figures": …, "targets": […]}``."""
    sys.path.insert(0, str(ROOT / "server"))
    from pgbackup_server.postgres.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(work / "pg").start()
    report: dict[str, Any] = {"when": datetime.now(UTC).isoformat(),
                              "load_average_start": os.getloadavg()[0], "figures": {},
                              "targets": []}
    try:
        pg.create_database("tiny")
        pg.psql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)", "tiny")
        if "failover" in wanted:
            pg.create_database("bench")
            pg.pgbench_init("bench", scale=1)
            summary, targets = bench_failover(work, pg, failover_rounds)
            report["figures"]["failover"] = summary
            report["targets"] += targets
        if "schedules" in wanted:
            summary, targets = bench_schedules(work, pg, schedules, minutes)
            report["figures"]["schedules"] = summary
            report["targets"] += targets
        if "stats" in wanted:
            summary, targets = bench_stats(work, pg, runs, calls)
            report["figures"]["stats"] = summary
            report["targets"] += targets
    finally:
        report["load_average_end"] = os.getloadavg()[0]
        pg.destroy()
    return report
