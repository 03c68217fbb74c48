#!/usr/bin/env python3
"""Benchmark the backup service against the bare PostgreSQL tools, as ratios in one run.

It starts an embedded PostgreSQL 18 with a pgbench database plus a table of text and
jsonb (pgbench's blank-padded filler alone compresses ~35x and flatters gzip), then
runs the service's own code path in-process (``BackupService.create_backup``,
``RestoreService.verify`` / ``restore``: what backupd runs behind gRPC and REST; the
RPC round trip measured under 0.05 s in issue 11) against the bare command with the
same flags, interleaved A/B then B/A after a warm-up, over the unix socket and TCP:

- plain and custom dumps vs ``pg_dump -Fp -f`` (+ fsync) / ``pg_dump -Fc -f``;
- ``compressBackup`` vs the read-side limit (``pg_dump -Fp -f /dev/null``) and vs
  ``pg_dump -Fc`` (gzip), with the output sizes;
- every dump case also vs the read-side limit;
- ``format: directory`` with ``jobs: auto`` vs the single-stream read limit;
- peak RSS growth of this process during the service's plain dump;
- quick verify in seconds per GB; deep verify and a restore (``jobs: 2``) vs bare
  ``pg_restore -j2`` of the same archive into a new database;
- off-site (issue 12, ``scripts/bench_offsite.py``): ``compressBackup`` age-encrypted to
  S3 (moto in a child process on loopback) vs the same to a local file; peak RSS growth
  during a plain backup to S3; the age stage's MB/s while another backup runs.

- physical (issue 13, ``scripts/bench_physical.py``, its own PostgreSQL with WAL
  summaries, ``--physical-scale``): full vs bare ``pg_basebackup``, an incremental vs a
  full, restoring a chain vs the full alone, physical vs logical.

- cluster (issue 15, ``scripts/bench_cluster.py``, replicas as subprocesses on their own
  PostgreSQL): failover after ``kill -9``, 1,000 schedules over 3 replicas, GetStats p99
  over 100,000 runs (``--quick``: 1 round, 100 schedules, 10,000 runs).

``--cases dumps,verify,offsite,physical,cluster`` picks the groups (default: all).

Prints a table, then JSON (``--json FILE``), with the machine, the load average and
PASS/FAIL per target. ``--quick`` is a small run (about a minute) proving it works.

    .venv/bin/python scripts/bench.py --quick [--cases offsite]
    .venv/bin/python scripts/bench.py --scale 100 --text-rows 1500000 --runs 3 \\
        --work-dir /var/tmp/bench --json bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

MB = 1 << 20
GB = 1 << 30
PASSWORD = "bench-Pa55:word"
DB = "bench"
TARGETS = {  # name: (goal text, check)
    "plain / bare": ("<= 1.05", lambda r: r <= 1.05),
    "custom / bare": ("<= 1.05", lambda r: r <= 1.05),
    "compressBackup / read limit": ("<= 1.10", lambda r: r <= 1.10),
    "compressBackup / pg_dump -Fc": ("<= 0.5", lambda r: r <= 0.5),
    "jobs:auto speed-up vs read limit": (">= 1.25 (>= 2 GB db)", lambda r: r >= 1.25),
    "RSS growth MB": ("<= 50", lambda r: r <= 50),
    "quick verify s/GB": ("<= 1.0", lambda r: r <= 1.0),
    "deep verify / pg_restore -j2": ("<= 1.3", lambda r: r <= 1.3),
    "restore / pg_restore -j2": ("<= 1.05", lambda r: r <= 1.05),
    "S3 zstd+age / local zstd": ("<= 1.2", lambda r: r <= 1.2),
    "RSS growth to S3 MB": ("<= 64 (>= 1 GB backup)", lambda r: r <= 64),
    "encryption MB/s beside a backup": (">= 300", lambda r: r >= 300),
}
# --cases; "all" is every one
CASES = ("dumps", "hashcost", "verify", "offsite", "physical", "cluster")


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load1() -> float:
    return os.getloadavg()[0]


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def vm_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


# -- the database ------------------------------------------------------------


def prepare(pg: Any, scale: int, text_rows: int) -> dict[str, Any]:
    """pgbench at ``scale`` plus ``text_rows`` rows of text and jsonb, reused when the
    database already has them (``--work-dir``)."""
    marker = f"{scale}:{text_rows}"
    have = pg.psql(f"SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                   f"WHERE datname = '{DB}'").strip()
    if have != marker:
        say(f"preparing pgbench scale {scale} + {text_rows} text/jsonb rows")
        pg.psql(f"DROP DATABASE IF EXISTS {DB}")
        pg.create_database(DB)
        pg.pgbench_init(DB, scale)
        pg.psql(f"""
CREATE TABLE docs (id bigint PRIMARY KEY, title text, body text, attrs jsonb);
INSERT INTO docs SELECT i, 'document ' || md5(i::text),
  repeat(md5(random()::text) || ' ' || md5((i * 7)::text) || ' ', 3 + i % 6),
  jsonb_build_object('n', i, 'score', round(random()::numeric, 4), 'tags',
    jsonb_build_array(md5((i % 977)::text), i % 31, 'tag' || (i % 13)),
    'owner', jsonb_build_object('id', i % 1000, 'name', 'user ' || (i % 1000)))
FROM generate_series(1, {text_rows}) i;
VACUUM ANALYZE;
COMMENT ON DATABASE {DB} IS '{marker}';""", DB)
    size = int(pg.psql(f"SELECT pg_database_size('{DB}')", DB))
    return {"scale": scale, "text_rows": text_rows, "database_mb": round(size / MB)}


# -- the service, in-process -------------------------------------------------


class Service:
    """BackupService and RestoreService over one store, per configuration."""

    def __init__(self, root: Path, url: str, binaries: list[Any], *,
                 extra: dict[str, Any] | None = None, env: dict[str, str] | None = None,
                 **backup: Any) -> None:
        """``backup``: the ``backup:`` section; ``extra``: more top-level sections
        (``destinations``, ``encryption``); ``env``: what the config's variables name."""
        from pgbackup_server.backup.service import BackupService
        from pgbackup_server.domain.ports import utc_now
        from pgbackup_server.observability.events import EventHub
        from pgbackup_server.persistence import open_store
        from pgbackup_server.restore import RestoreService
        from pgbackup_server.settings import build_settings
        from pgbackup_server.storage.registry import Destinations

        root.mkdir(parents=True, exist_ok=True)
        self.backups_dir = root / "backups"
        cfg = {"database": {"url": url},
               "backup": {"directory": str(self.backups_dir), "cleanupOld": False, **backup},
               "server": {"envoy": False, "dataDirectory": str(root / "data")},
               "log": {"level": "warning"}, **(extra or {})}
        settings = build_settings(cfg, base=root, env=env or {})
        self._store = open_store(f"sqlite:///{root}/store.sqlite3")
        self.store = self._store.runs
        runtime = root / "run"
        runtime.mkdir(mode=0o700, exist_ok=True)
        # Wired as app.py wires them: the real destinations and fan-out.
        destinations = Destinations.from_configs(settings.destinations, settings.environment)
        self.backups = BackupService(settings, self.store, EventHub(), copies=self._store.copies,
                                     binaries=binaries, runtime_dir=runtime, clock=utc_now,
                                     destinations=dict(destinations))
        self.restores = RestoreService(settings, self.store, self._store.restores, EventHub(),
                                       targets=self.backups.targets, binaries=binaries,
                                       runtime_dir=runtime, clock=utc_now,
                                       destinations=destinations)

    def dump(self) -> Any:
        return self.backups.create_backup().run

    def close(self) -> None:
        self.restores.shutdown(5)
        self.backups.shutdown(5)
        self._store.close()


def remove(path: str | Path) -> None:
    p = Path(path)
    shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)


# -- measuring ---------------------------------------------------------------


WARM_UP = True


def interleaved(sides: dict[str, Callable[[], float]], runs: int) -> dict[str, list[float]]:
    """Each side once to warm up, then ``runs`` rounds, the order reversed every round."""
    for fn in sides.values() if WARM_UP else ():
        fn()
    times: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for i in range(runs):
        for name in (names if i % 2 == 0 else names[::-1]):
            times[name].append(sides[name]())
    return times


def dump_cases(pg: Any, root: Path, transport: str, url: str, env: dict[str, str],
               binaries: list[Any], runs: int, jobs_case: bool) -> dict[str, Any]:
    pg_dump = binaries[0].path
    out = root / f"bare-{transport}"
    out.mkdir(parents=True, exist_ok=True)
    conn = ["--no-password", f"--dbname={env.pop('DSN')}"]
    result: dict[str, Any] = {}
    sizes: dict[str, int] = {}

    def bare(*flags: str, target: str = "", sync: bool = False) -> Callable[[], float]:
        def run() -> float:
            path = out / "dump"
            remove(path)
            t0 = time.perf_counter()
            subprocess.run([pg_dump, *flags, *conn, f"--file={target or path}"], env=env,
                           check=True, stdout=subprocess.DEVNULL)
            if sync:
                fsync_file(path)
            took = time.perf_counter() - t0
            if not target:
                sizes[" ".join(flags)] = (sum(f.stat().st_size for f in path.iterdir())
                                          if path.is_dir() else path.stat().st_size)
            return took
        return run

    def service(svc: Service, key: str) -> Callable[[], float]:
        def run() -> float:
            t0 = time.perf_counter()
            r = svc.dump()
            took = time.perf_counter() - t0
            if r.status != "SUCCEEDED":
                raise SystemExit(f"backup failed: {r.error}")
            sizes[key] = r.size_bytes
            remove(r.file_path)
            return took
        return run

    limit = bare("-Fp", target="/dev/null")
    cases = [("plain", {"format": "plain"}, bare("-Fp", sync=True), "-Fp"),
             ("custom", {"format": "custom"}, bare("-Fc", "--compress=0"), "-Fc --compress=0"),
             ("compressBackup", {"compressBackup": True}, bare("-Fc"), "-Fc")]
    if jobs_case:
        cases.append(("jobs:auto", {"format": "directory", "jobs": "auto"}, None, ""))
    for name, backup, bare_fn, bare_flags in cases:
        say(f"{transport}: {name}")
        svc = Service(root / f"svc-{transport}-{name.replace(':', '')}", url, binaries, **backup)
        try:
            sides = {"service": service(svc, name), "read limit": limit}
            if bare_fn is not None:
                sides["bare"] = bare_fn
            times = interleaved(sides, runs)
        finally:
            svc.close()
        med = {k: statistics.median(v) for k, v in times.items()}
        entry: dict[str, Any] = {"median_s": {k: round(v, 3) for k, v in med.items()},
                                 "runs_s": {k: [round(x, 3) for x in v]
                                            for k, v in times.items()},
                                 "vs read limit": round(med["service"] / med["read limit"], 3),
                                 "service_mb": round(sizes[name] / MB, 1)}
        if bare_fn is not None:
            entry["vs bare"] = round(med["service"] / med["bare"], 3)
            entry["bare_mb"] = round(sizes[bare_flags] / MB, 1)
        if name == "jobs:auto":
            entry["speed-up vs read limit"] = round(med["read limit"] / med["service"], 3)
        result[name] = entry
    return result


def rss_growth(root: Path, url: str, binaries: list[Any]) -> dict[str, Any]:
    """Peak RSS growth of this process while the service dumps plain SQL (streamed
    through zstd: the path that buffers in-process)."""
    svc = Service(root / "svc-rss", url, binaries, compressBackup=True)
    try:
        before = vm_kb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM
        run = svc.dump()
        peak = vm_kb("VmHWM")
        remove(run.file_path)
    finally:
        svc.close()
    return {"growth_mb": round(max(0, peak - before) / 1024, 1)}


def verify_and_restore(pg: Any, root: Path, url: str, binaries: list[Any],
                       runs: int) -> dict[str, Any]:
    pg_restore = binaries[0].sibling("pg_restore")
    result: dict[str, Any] = {}
    svc = Service(root / "svc-verify", url, binaries, format="custom")
    zsvc = Service(root / "svc-verify-zst", url, binaries, compressBackup=True)
    try:
        archive, zst = svc.dump(), zsvc.dump()
        for label, s, r in (("custom", svc, archive), ("plain zstd", zsvc, zst)):
            took = [timed(lambda s=s, r=r: s.restores.verify(r.id)) for _ in range(runs)]
            gb = r.size_bytes / GB
            result[f"quick verify {label}"] = {
                "size_mb": round(r.size_bytes / MB, 1), "median_s": round(
                    statistics.median(took), 3),
                "s_per_gb": round(statistics.median(took) / gb, 3)}

        counter = iter(range(1000))

        def bare_restore() -> float:
            name = f"bench_bare_{next(counter)}"
            pg.psql(f"DROP DATABASE IF EXISTS {name}")
            t0 = time.perf_counter()
            pg.create_database(name)
            subprocess.run([pg_restore, "--exit-on-error", "--jobs=2", "--no-password",
                            f"--dbname={pg.admin_conninfo(name)}", archive.file_path],
                           check=True)
            took = time.perf_counter() - t0
            pg.psql(f"DROP DATABASE {name}")
            return took

        def deep() -> float:
            t0 = time.perf_counter()
            res = svc.restores.verify(archive.id, deep=True)
            if not res.ok:
                raise SystemExit(f"deep verify failed: {res.reason}")
            return time.perf_counter() - t0

        def restore() -> float:
            name = f"bench_api_{next(counter)}"
            pg.psql(f"DROP DATABASE IF EXISTS {name}")
            t0 = time.perf_counter()
            svc.restores.restore(archive.id, target_database=name, jobs=2)
            took = time.perf_counter() - t0
            pg.psql(f"DROP DATABASE {name}")
            return took

        say("deep verify and restore vs pg_restore -j2")
        times = interleaved({"deep verify": deep, "restore": restore,
                             "pg_restore -j2": bare_restore}, runs)
        med = {k: statistics.median(v) for k, v in times.items()}
        result["restore"] = {"median_s": {k: round(v, 3) for k, v in med.items()},
                             "runs_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
                             "deep / bare": round(med["deep verify"] / med["pg_restore -j2"], 3),
                             "restore / bare": round(med["restore"] / med["pg_restore -j2"], 3)}
        remove(archive.file_path)
        remove(zst.file_path)
    finally:
        svc.close()
        zsvc.close()
    return result


def targets(report: dict[str, Any], big: bool) -> list[dict[str, Any]]:
    out = []

    def add(name: str, where: str, value: float | None, applies: bool = True) -> None:
        goal, check = TARGETS[name]
        ok = None if value is None or not applies else bool(check(value))
        out.append({"target": name, "where": where, "goal": goal, "measured": value,
                    "result": "n/a" if ok is None else "PASS" if ok else "FAIL"})

    for transport, cases in report.get("dumps", {}).items():
        add("plain / bare", transport, cases["plain"]["vs bare"])
        add("custom / bare", transport, cases["custom"]["vs bare"])
        add("compressBackup / read limit", transport, cases["compressBackup"]["vs read limit"])
        add("compressBackup / pg_dump -Fc", transport, cases["compressBackup"]["vs bare"])
        if "jobs:auto" in cases:
            add("jobs:auto speed-up vs read limit", transport,
                cases["jobs:auto"]["speed-up vs read limit"], applies=big)
    if "rss" in report:
        add("RSS growth MB", "unix", report["rss"]["growth_mb"])
    if vr := report.get("verify"):
        add("quick verify s/GB", "custom", vr["quick verify custom"]["s_per_gb"])
        add("quick verify s/GB", "plain zstd", vr["quick verify plain zstd"]["s_per_gb"])
        add("deep verify / pg_restore -j2", "unix", vr["restore"]["deep / bare"])
        add("restore / pg_restore -j2", "unix", vr["restore"]["restore / bare"])
    if off := report.get("offsite"):
        add("S3 zstd+age / local zstd", "unix", off["s3 vs local"]["ratio"])
        rss = off["rss to s3"]
        add("RSS growth to S3 MB", f"{rss['backup_mb']:.0f} MB", rss["growth_mb"],
            applies=rss["backup_mb"] >= 1024)
        add("encryption MB/s beside a backup", "age cmd",
            off["encryption"]["mb_per_s"]["stage (age command), next to a backup"])
    for t in report.get("physical", {}).get("targets", ()):  # bench_physical's own checks
        out.append({"target": t["name"], "where": "physical", "goal": t["goal"],
                    "measured": t["measured"],
                    "result": {True: "PASS", False: "FAIL", None: "n/a"}[t["ok"]]})
    for t in report.get("cluster", {}).get("targets", ()):  # bench_cluster's own checks
        out.append({**t, "where": "cluster"})
    return out


def render(report: dict[str, Any]) -> str:
    lines = [f"backupd benchmark {report['when']}  load1 {report['load_before']:.2f} -> "
             f"{report['load_after']:.2f}  db {report['data'].get('database_mb', '-')} MB",
             f"{'case':<34}{'service s':>10}{'bare s':>9}{'limit s':>9}{'/bare':>8}"
             f"{'/limit':>8}{'MB':>9}"]
    for transport, cases in report.get("dumps", {}).items():
        for name, c in cases.items():
            m = c["median_s"]
            lines.append(f"{transport + ' ' + name:<34}{m['service']:>10.2f}"
                         f"{m.get('bare', float('nan')):>9.2f}{m['read limit']:>9.2f}"
                         f"{c.get('vs bare', float('nan')):>8.2f}{c['vs read limit']:>8.2f}"
                         f"{c['service_mb']:>9.1f}")
    if hc := report.get("hashcost"):
        for name, ratio in hc["vs bare"].items():
            lines.append(f"{'unix plain, ' + name:<34}{hc['median_s'][name]:>10.2f}"
                         f"{hc['median_s']['bare']:>9.2f}{'':>9}{ratio:>8.2f}")
    if off := report.get("offsite"):
        m = off["s3 vs local"]["median_s"]
        lines.append(f"{'S3 zstd+age vs local zstd':<34}{m['s3 zstd+age']:>10.2f}"
                     f"{m['local zstd']:>9.2f}{'':>9}{off['s3 vs local']['ratio']:>8.2f}")
        for name, mbps in off["encryption"]["mb_per_s"].items():
            lines.append(f"  {name:<62}{mbps:>8.1f} MB/s")
    lines.append("")
    for t in report["targets"]:
        lines.append(f"{t['result']:<5} {t['target']:<46} {t['where']:<11} "
                     f"{t['measured']!s:>8}  goal {t['goal']}")
    return "\n".join(lines)


@contextmanager
def work_directory(path: str | None) -> Iterator[Path]:
    if path:
        p = Path(path).resolve()
        p.mkdir(parents=True, exist_ok=True)
        yield p
        return
    tmp = Path(tempfile.mkdtemp(prefix="pgbackup-bench-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def machine() -> dict[str, Any]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in
                Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "python": platform.python_version(),
            "kernel": platform.release(), "commit": commit}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="small data, 1 run per side: proves the bench works (~1 min)")
    ap.add_argument("--scale", type=int, default=100, help="pgbench scale (default 100)")
    ap.add_argument("--text-rows", type=int, default=1_500_000,
                    help="rows of text and jsonb (default 1,500,000)")
    ap.add_argument("--runs", type=int, default=3, help="measured runs per side (default 3)")
    ap.add_argument("--transports", default="unix,tcp", help="unix, tcp or both")
    ap.add_argument("--work-dir", help="keep PostgreSQL and the data here between runs")
    ap.add_argument("--json", help="write the JSON report to this file")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    ap.add_argument("--physical-scale", type=int, default=70,
                    help="pgbench scale of the physical cases' own database (default 70: "
                         "~1 GB)")
    ap.add_argument("--cases", default="all",
                    help=f"comma-separated, of {', '.join(CASES)} (default all)")
    args = ap.parse_args(argv)
    args.cases = set(CASES) if args.cases == "all" else set(args.cases.split(","))
    if unknown := args.cases - set(CASES):
        ap.error(f"--cases: unknown {', '.join(sorted(unknown))}; known: {', '.join(CASES)}")
    if args.quick:
        global WARM_UP
        args.scale, args.text_rows, args.runs, WARM_UP = 5, 100_000, 1, False
        args.physical_scale = 5
    return args


def shared_cases(args: argparse.Namespace, root: Path, report: dict[str, Any]) -> None:
    """The cases on one PostgreSQL with the pgbench + text/jsonb data: dumps, verify,
    offsite."""
    from pgbackup_server.postgres.binaries import discover
    from pgbackup_server.postgres.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(root / "pg", password=PASSWORD).start()
    try:
        report["data"] = prepare(pg, args.scale, args.text_rows)
        binaries = [b for b in discover(None) if b.major >= 18]
        for transport in args.transports.split(",") if "dumps" in args.cases else ():
            if transport == "unix":
                url = f"postgresql://postgres@/{DB}?host={pg.socket_dir}&port={pg.port}"
                env = {**os.environ, "DSN": pg.admin_conninfo(DB)}
            else:
                url = pg.url(DB)
                env = {**os.environ, "PGPASSWORD": PASSWORD,
                       "DSN": f"host=127.0.0.1 port={pg.port} user=postgres dbname={DB}"}
            report["dumps"][transport] = dump_cases(
                pg, root / "work", transport, url, env, binaries, args.runs, True)
        unix = f"postgresql://postgres@/{DB}?host={pg.socket_dir}&port={pg.port}"
        if "hashcost" in args.cases:  # where the plain fast path's overhead goes
            from bench_hashcost import hashcost
            say("hash cost (unix socket)")
            report["hashcost"] = hashcost(binaries[0].path, pg.admin_conninfo(DB),
                                          dict(os.environ), root / "work", args.runs,
                                          interleaved)
        if "dumps" in args.cases:
            say("RSS growth")
            report["rss"] = rss_growth(root / "work", unix, binaries)
        if "verify" in args.cases:
            report["verify"] = verify_and_restore(pg, root / "work", unix, binaries, args.runs)
        if "offsite" in args.cases:
            from bench_offsite import offsite_cases
            report["offsite"] = offsite_cases(root / "work" / "offsite", unix, binaries,
                                              args.runs, args.quick, Service, interleaved,
                                              vm_kb, say)
    finally:
        pg.stop("immediate") if args.work_dir else pg.destroy()
        shutil.rmtree(root / "work", ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pgbackup_server.observability import logs

    logs.configure("warning", "console")
    report: dict[str, Any] = {"when": datetime.now(UTC).isoformat(timespec="seconds"),
                              "machine": machine(), "data": {}, "load_before": load1(),
                              "runs": args.runs, "dumps": {}}
    with work_directory(args.work_dir) as root:
        if args.cases & {"dumps", "hashcost", "verify", "offsite"}:
            shared_cases(args, root, report)
        if "physical" in args.cases:  # its own PostgreSQL, WAL summaries on
            from bench_physical import bench as physical
            say(f"physical (issue 13), pgbench scale {args.physical_scale}")
            work = root / "physical"
            work.mkdir(parents=True, exist_ok=True)
            try:
                report["physical"] = physical(args.physical_scale, args.runs, work)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        if "cluster" in args.cases:  # replicas as subprocesses on their own PostgreSQL
            from bench_cluster import run as cluster
            say("cluster (issue 15)")
            work = root / "cluster"
            work.mkdir(parents=True, exist_ok=True)
            sizes = (dict(failover_rounds=1, schedules=100, minutes=1, runs=10_000, calls=200)
                     if args.quick else dict(failover_rounds=args.runs))
            try:
                report["cluster"] = cluster(work, {"failover", "schedules", "stats"}, **sizes)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    report["load_after"] = load1()
    report["targets"] = targets(report, report["data"].get("database_mb", 0) >= 2048)
    print(render(report))
    text = json.dumps(report, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    else:
        print(text)
    failed = [t for t in report["targets"] if t["result"] == "FAIL"]
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
