#!/usr/bin/env python3
"""Benchmark backupd against bare pg_dump, and its API under a large run history.

It starts an embedded PostgreSQL with a pgbench database, runs backupd as a
subprocess (as an operator runs it) and measures, each against a target:

- dump cases, interleaved A/B: bare ``pg_dump`` with the same flags (output to a
  file in the same filesystem, then fsynced like the service) versus the service's
  CreateBackup through gRPC: wall time, client-side CPU, output size, backupd's peak
  RSS; for the compressed case also ``pg_dump -Fp`` to /dev/null, the read side's
  limit, which bounds any speed-up;
- GetStats and ListBackups latency through gRPC with 100,000 recorded runs;
- Cleanup of 10,000 expired backups.

It prints a table, then JSON (to ``--json FILE`` or stdout), with the machine's
description and PASS/FAIL per target. Everything it starts is stopped by pid, and
its temporary directory is removed (unless ``--work-dir`` is given).

    .venv/bin/python scripts/bench.py --scale 20 --runs 3
    .venv/bin/python scripts/bench.py --scale 115 --runs 7 --work-dir /var/tmp/bench --json a.json
    .venv/bin/python scripts/bench.py --scale 115 --text-rows 1500000 --work-dir /var/tmp/bench
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pgbackup_client import BackupClient
    from pgbackup_server.embedded import EmbeddedPostgres

MB = 1024 * 1024
GB = 1024 * MB
PASSWORD = "bench-Pa55:word"
DBNAME = "bench"
TARGET_OVERHEAD = 1.05
TARGET_SPEEDUP = 2.0
TARGET_SPEEDUP_ZSTD = 2.5
TARGET_RSS_GROWTH_MB = 50.0
TARGET_MEMORY_DUMP_BYTES = GB
TARGET_STATS_P99_MS = 5.0
TARGET_LIST_P99_MS = 10.0
TARGET_CLEANUP_S = 3.0


def say(message: str) -> None:
    """Progress goes to stderr; stdout is kept for the results."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


# -- machine ------------------------------------------------------------------


def machine_info(pg_dump: str, workdir: Path) -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    version = subprocess.run([pg_dump, "--version"], capture_output=True, text=True,
                             check=False).stdout.strip()
    fs = subprocess.run(["df", "--output=fstype", str(workdir)], capture_output=True,
                        text=True, check=False).stdout.split()
    try:
        import zstandard
        zstd_version = zstandard.__version__
    except ImportError:
        zstd_version = ""
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pg_dump": pg_dump,
        "pg_dump_version": version,
        "zstandard": zstd_version,
        "filesystem": fs[-1] if fs else "",
    }


def source_info() -> dict[str, Any]:
    """The checkout measured: commit and uncommitted changes to the service."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                             check=False)
        return out.stdout.rstrip("\n") if out.returncode == 0 else ""

    changed = git("status", "--porcelain", "--", "server", "client").splitlines()
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted_service_files": sorted(line[3:] for line in changed)}


def load_average() -> float:
    """1-minute load average: other work on the machine skews the timings."""
    return float(Path("/proc/loadavg").read_text().split()[0])


# -- processes ----------------------------------------------------------------


def proc_status_kb(pid: int, key: str) -> int | None:
    """A ``VmRSS``-style field of /proc/<pid>/status, in kB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and of its children it has waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Samples a process's VmRSS every ``interval`` seconds in a thread; also resets
    and reads the kernel's peak (VmHWM) so short spikes between samples count."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.samples = 0
        self.peak_kb = 0
        self.hwm_reset = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        try:  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            self.hwm_reset = True
        except OSError:
            pass
        self._thread.start()
        return self

    def _sample(self) -> None:
        value = proc_status_kb(self.pid, "VmRSS")
        if value is not None:
            self.samples += 1
            self.peak_kb = max(self.peak_kb, value)

    def _run(self) -> None:
        self._sample()
        while not self._stop.wait(self.interval):
            self._sample()

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        hwm = proc_status_kb(self.pid, "VmHWM") if self.hwm_reset else None
        if hwm is not None:
            self.peak_kb = max(self.peak_kb, hwm)


class Backupd:
    """backupd in a subprocess with its own config, data and backup directories."""

    def __init__(self, root: Path, pg: EmbeddedPostgres, *, pg_dump: str,
                 backup: dict[str, Any] | None = None, store_url: str | None = None,
                 database: str = DBNAME) -> None:
        from pgbackup_server.embedded import free_port

        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.backup_dir = root / "backups"
        self.address = f"127.0.0.1:{free_port()}"
        cfg: dict[str, Any] = {
            "database": {"url": pg.url(database)},
            "backup": {"enabled": False, "directory": str(self.backup_dir),
                       "pgDumpPath": pg_dump, **(backup or {})},
            "server": {"grpcAddress": self.address, "envoy": False,
                       "dataDirectory": str(root / "data")},
            "metrics": {"enabled": False},
            "auth": {"allowUnauthenticated": True},
            "log": {"level": "info"},
        }
        if store_url:
            cfg["store"] = {"url": store_url}
        self.config_path = root / "config.yaml"
        self.config_path.write_text(json.dumps(cfg, indent=2))  # JSON is YAML
        self.config_path.chmod(0o600)
        self.log_path = root / "backupd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_rss_kb = 0  # idle RSS right after start, before any backup

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60) -> Backupd:
        from pgbackup_client import BackupClient

        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pgbackup_server.app", "--config", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        with BackupClient(self.address, timeout=2) as client:
            while True:
                try:
                    client.get_stats()
                    time.sleep(0.5)  # let start-up settle before the idle reading
                    self.started_rss_kb = self.rss_kb()
                    return self
                except Exception:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        self.stop()
                        tail = self.log_path.read_text(errors="replace")[-3000:]
                        raise RuntimeError(f"backupd did not start:\n{tail}") from None
                    time.sleep(0.1)

    def client(self, timeout: float | None = 600) -> BackupClient:
        from pgbackup_client import BackupClient

        return BackupClient(self.address, timeout=timeout)

    def rss_kb(self) -> int:
        return proc_status_kb(self.pid, "VmRSS") or 0

    def stop(self) -> None:
        """SIGTERM, then SIGKILL: only this process, by its pid."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Cleanup:
    """Stops what the benchmark started, in reverse order, whatever happens."""

    def __init__(self) -> None:
        self._actions: list[Callable[[], None]] = []

    def push(self, action: Callable[[], None]) -> None:
        self._actions.append(action)

    def run(self) -> None:
        while self._actions:
            action = self._actions.pop()
            try:
                action()
            except Exception as exc:  # keep cleaning up
                say(f"cleanup step failed: {exc}")


# -- database -----------------------------------------------------------------


# Text and jsonb with natural-language-like redundancy (a skewed 20,000-word vocabulary),
# unlike pgbench's blank-padded filler, which compresses ~100x.
DOCS_SQL = """
CREATE TABLE bench_docs (id bigint PRIMARY KEY, title text NOT NULL, body text NOT NULL,
                         attrs jsonb NOT NULL, created timestamptz NOT NULL);
INSERT INTO bench_docs
SELECT g,
       'Document ' || g || ' ' || substr(md5(g::text), 1, 10),
       (SELECT string_agg(substr(md5((random() ^ 2 * 20000)::int::text), 1, 2 + (i + g) % 8),
                          ' ')
          FROM generate_series(1, 10 + g % 40) i),
       jsonb_build_object('customer', 'c' || (random() * 100000)::int,
                          'total', round((random() * 1000)::numeric, 2),
                          'status', (ARRAY['new', 'paid', 'shipped', 'returned'])[1 + g % 4],
                          'tags', jsonb_build_array('t' || g % 13, 't' || g % 7)),
       now() - random() * interval '365 days'
  FROM generate_series(1, {rows}) g;
VACUUM ANALYZE bench_docs;
"""


def prepare_text_table(pg: EmbeddedPostgres, rows: int) -> None:
    """``rows`` rows of text and jsonb in ``bench_docs`` (0: no such table)."""
    try:
        current = int(pg.psql("SELECT count(*) FROM bench_docs", DBNAME).strip())
    except (RuntimeError, ValueError):
        current = -1
    if current == rows or (current == -1 and rows == 0):
        return
    pg.psql("DROP TABLE IF EXISTS bench_docs", DBNAME)
    if rows:
        say(f"generating {rows} rows of text and jsonb (bench_docs) ...")
        t0 = time.perf_counter()
        pg.psql(DOCS_SQL.format(rows=int(rows)), DBNAME)
        pg.psql("CHECKPOINT")
        say(f"bench_docs generated in {time.perf_counter() - t0:.0f} s")


def prepare_database(pg: EmbeddedPostgres, scale: int, text_rows: int = 0) -> dict[str, Any]:
    """A pgbench database of ``scale`` (plus ``text_rows`` rows of text and jsonb);
    reused when one of that shape exists."""
    exists = pg.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DBNAME}'").strip()
    current = 0
    if exists:
        try:
            current = int(pg.psql("SELECT count(*) FROM pgbench_branches", DBNAME).strip())
        except (RuntimeError, ValueError):
            current = 0
    init_seconds = 0.0
    if current != scale:
        if exists:
            pg.psql(f'DROP DATABASE "{DBNAME}"')
        pg.create_database(DBNAME)
        say(f"pgbench -i -s {scale} (about {scale * 15} MB; this takes a while) ...")
        t0 = time.perf_counter()
        pg.pgbench_init(DBNAME, scale)
        pg.psql("CHECKPOINT")
        init_seconds = time.perf_counter() - t0
        say(f"pgbench initialised in {init_seconds:.0f} s")
    else:
        say(f"reusing pgbench database at scale {scale}")
    prepare_text_table(pg, text_rows)
    size = int(pg.psql(f"SELECT pg_database_size('{DBNAME}')").strip())
    version = pg.psql("SHOW server_version").strip()
    say(f"database {DBNAME}: {size / MB:.0f} MB (pg_database_size), PostgreSQL {version}")
    return {"name": DBNAME, "pgbench_scale": scale, "text_rows": text_rows,
            "size_bytes": size,
            "server_version": version, "init_seconds": round(init_seconds, 1)}


def choose_pg_dump(pg: EmbeddedPostgres, configured: str | None) -> str:
    """The pg_dump the service would pick (or ``configured``)."""
    from pgbackup_server import pgtools

    binaries = pgtools.discover(configured)
    if not binaries:
        raise SystemExit(f"no working pg_dump found{f' at {configured}' if configured else ''}")
    num = int(pg.psql("SHOW server_version_num").strip())
    return str(pgtools.choose(binaries, num // 10000, str(num)).path)


# -- dump cases ---------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One comparison: bare pg_dump flags versus a backupd backup config."""

    name: str
    bare_label: str
    bare_args: tuple[str, ...]
    service_label: str
    backup_cfg: dict[str, Any]
    target: str  # "overhead" (service/bare <= 1.05) or "speedup" (bare/service >= 2)


def make_cases(names: list[str], zstd_capable: bool) -> list[Case]:
    compressed_label = ("custom, zstd:1 in pg_dump" if zstd_capable
                        else "plain via zstandard:1 in-process (.sql.zst)")
    known = {
        "plain": Case("plain", "pg_dump -Fp -f FILE; fsync", ("--format=plain",),
                      "format plain, compression none (.sql)",
                      {"format": "plain", "compressBackup": False}, "overhead"),
        "compressed": Case("compressed", "pg_dump -Fc -f FILE (default gzip); fsync",
                           ("--format=custom",), f"compressBackup: true -> {compressed_label}",
                           {"compressBackup": True}, "speedup"),
        "custom": Case("custom", "pg_dump -Fc --compress=0 -f FILE; fsync",
                       ("--format=custom", "--compress=0"),
                       "format custom, compression none (.dump)",
                       {"format": "custom", "compression": "none"}, "overhead"),
    }
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown case(s): {', '.join(unknown)}; known: {', '.join(known)}")
    return [known[n] for n in names]


@dataclass
class Sample:
    seconds: float
    size_bytes: int
    run_seconds: float = 0.0  # the run's own duration_seconds (service only)
    load: float = 0.0  # 1-minute load average before the run
    cpu_seconds: float = 0.0  # client side: pg_dump (bare) or backupd + its pg_dump (service)
    idle_rss_kb: int = 0
    peak_rss_kb: int = 0
    rss_samples: int = 0


@dataclass
class CaseResult:
    case: Case
    bare: list[Sample] = field(default_factory=list)
    service: list[Sample] = field(default_factory=list)
    limit: list[Sample] = field(default_factory=list)  # pg_dump -Fp to /dev/null


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BareDump:
    """pg_dump run directly, connected and authenticated as the service does it."""

    def __init__(self, pg_dump: str, url: str, workdir: Path) -> None:
        from psycopg.conninfo import conninfo_to_dict

        from pgbackup_server.runner import child_env, dbname_argument

        conninfo = {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
        self.pg_dump = pg_dump
        self.dbname = dbname_argument(conninfo)
        self.out_dir = workdir / "bare"
        self.out_dir.mkdir(mode=0o700, exist_ok=True)
        # Same password route as the service: a private passfile, --no-password.
        self.env, self.passfile = child_env(conninfo, str(workdir))
        self.proc: subprocess.Popen[bytes] | None = None

    def run(self, args: tuple[str, ...], *, null: bool = False) -> Sample:
        """Dump to a file in the benchmark's filesystem and fsync it; with ``null``,
        to /dev/null: the read side's limit, what no output method can beat."""
        out = Path(os.devnull) if null else self.out_dir / "dump.out"
        if not null:
            out.unlink(missing_ok=True)
        load = load_average()
        argv = [self.pg_dump, *args, "--no-password", f"--dbname={self.dbname}", "-f", str(out)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=self.env)
        _, err = self.proc.communicate()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if self.proc.returncode != 0:
            raise RuntimeError(f"pg_dump failed ({self.proc.returncode}): {err.decode()[-2000:]}")
        if not null:
            fsync_path(out)
            fsync_path(self.out_dir)
        elapsed = time.perf_counter() - t0
        self.proc = None
        size = 0 if null else out.stat().st_size
        if not null:
            out.unlink()
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return Sample(elapsed, size, load=load, cpu_seconds=cpu)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.passfile:
            Path(self.passfile).unlink(missing_ok=True)


def service_dump(backupd: Backupd, measure_memory: bool) -> Sample:
    """One CreateBackup through gRPC, timed client-side; the file is removed after."""
    with backupd.client(timeout=None) as client:
        client.get_stats()  # connect the channel outside the timed call
        load = load_average()
        idle = backupd.rss_kb()
        sampler = RssSampler(backupd.pid) if measure_memory else None
        cpu0 = process_cpu_seconds(backupd.pid)
        t0 = time.perf_counter()
        if sampler is not None:
            with sampler:
                result = client.create_backup()
        else:
            result = client.create_backup()
        elapsed = time.perf_counter() - t0
        cpu = process_cpu_seconds(backupd.pid) - cpu0
    b = result.backup
    Path(b.file_path).unlink(missing_ok=True)
    return Sample(elapsed, b.size_bytes, run_seconds=b.duration_seconds, load=load,
                  idle_rss_kb=idle, peak_rss_kb=sampler.peak_kb if sampler else 0,
                  rss_samples=sampler.samples if sampler else 0, cpu_seconds=cpu)


def run_dump_cases(cases: list[Case], instances: dict[str, Backupd], bare: BareDump,
                   runs: int, measure_memory: bool) -> list[CaseResult]:
    """Warm up once, then ``runs`` interleaved A/B iterations (order alternates)."""
    results = [CaseResult(c) for c in cases]
    for res in results:
        say(f"[{res.case.name}] warm-up: bare pg_dump, then backupd")
        bare.run(res.case.bare_args)
        service_dump(instances[res.case.name], False)
    for i in range(runs):
        for res in results:
            order = ("bare", "service") if i % 2 == 0 else ("service", "bare")
            for side in order:
                if side == "bare":
                    s = bare.run(res.case.bare_args)
                    res.bare.append(s)
                else:
                    s = service_dump(instances[res.case.name], measure_memory)
                    res.service.append(s)
                say(f"[{res.case.name}] run {i + 1}/{runs} {side:7s} {s.seconds:7.2f} s "
                    f"{s.size_bytes / MB:9.1f} MB"
                    + (f"  rss idle {s.idle_rss_kb / 1024:.0f} MB peak "
                       f"{s.peak_rss_kb / 1024:.0f} MB" if s.peak_rss_kb else ""))
            if res.case.target == "speedup":
                s = bare.run(("--format=plain",), null=True)
                res.limit.append(s)
                say(f"[{res.case.name}] run {i + 1}/{runs} pg_dump -Fp to /dev/null "
                    f"{s.seconds:7.2f} s")
    return results


def summarize_case(res: CaseResult, zstd_capable: bool, plain_bytes: int,
                   started_rss_kb: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Medians, ratios and the case's targets. The ratio of the fastest runs is shown
    too: other load on the machine only ever adds time."""
    b_t = median([s.seconds for s in res.bare])
    s_t = median([s.seconds for s in res.service])
    b_min = min(s.seconds for s in res.bare)
    s_min = min(s.seconds for s in res.service)
    b_size = int(median([s.size_bytes for s in res.bare]))
    s_size = int(median([s.size_bytes for s in res.service]))
    peaks = [s.peak_rss_kb for s in res.service if s.peak_rss_kb]
    summary: dict[str, Any] = {
        "case": res.case.name,
        "bare": res.case.bare_label,
        "service": res.case.service_label,
        "bare_seconds": [round(s.seconds, 3) for s in res.bare],
        "service_seconds": [round(s.seconds, 3) for s in res.service],
        "service_run_duration_seconds": [round(s.run_seconds, 3) for s in res.service],
        "bare_median_s": round(b_t, 3),
        "service_median_s": round(s_t, 3),
        "service_over_bare": round(s_t / b_t, 3),
        "bare_over_service": round(b_t / s_t, 3),
        "service_over_bare_fastest": round(s_min / b_min, 3),
        "bare_cpu_median_s": round(median([s.cpu_seconds for s in res.bare]), 2),
        "service_cpu_median_s": round(median([s.cpu_seconds for s in res.service]), 2),
        "bare_size_bytes": b_size,
        "service_size_bytes": s_size,
        "rss_at_start_mb": round(started_rss_kb / 1024, 1),
        "rss_idle_mb": [round(s.idle_rss_kb / 1024, 1) for s in res.service if s.peak_rss_kb],
        "rss_peak_mb": [round(p / 1024, 1) for p in peaks],
        # Over the idle RSS right after start: memory kept after a backup counts too.
        "rss_growth_mb_max": round((max(peaks) - started_rss_kb) / 1024, 1) if peaks else None,
        "stream_bytes": plain_bytes,
        "load_average_before_runs": [s.load for s in res.bare + res.service],
    }
    targets: list[dict[str, Any]] = []
    # Per-run fixed costs (server check, store writes, cleanup) weigh on small dumps.
    small = (f"; a {plain_bytes / MB:.0f} MB dump: fixed per-run costs weigh"
             if plain_bytes < TARGET_MEMORY_DUMP_BYTES else "")
    if res.case.target == "overhead":
        ratio = s_t / b_t
        targets.append(target(f"overhead, {res.case.name}: service / bare pg_dump",
                              f"<= {TARGET_OVERHEAD}", round(ratio, 3),
                              ratio <= TARGET_OVERHEAD,
                              f"fastest runs: {s_min / b_min:.3f}{small}"))
    else:
        goal = TARGET_SPEEDUP_ZSTD if zstd_capable else TARGET_SPEEDUP
        speedup = b_t / s_t
        note = f"fastest runs: {b_min / s_min:.2f}{small}"
        if res.limit:
            limit = median([s.seconds for s in res.limit])
            summary["read_limit_median_s"] = round(limit, 3)
            summary["read_limit_seconds"] = [round(s.seconds, 3) for s in res.limit]
            summary["speedup_ceiling"] = round(b_t / limit, 2)
            note += f"; ceiling, gzip / pg_dump -Fp to /dev/null: {b_t / limit:.2f}"
        targets.append(target("compressBackup speed: pg_dump -Fc gzip / service",
                              f">= {goal}", round(speedup, 2), speedup >= goal, note))
        targets.append(target("compressBackup size: service / pg_dump -Fc gzip", "<= 1.0",
                              round(s_size / b_size, 3), s_size <= b_size))
    return summary, targets


def target(name: str, goal: str, measured: Any, ok: bool | None,
           note: str = "") -> dict[str, Any]:
    verdict = "SKIP" if ok is None else ("PASS" if ok else "FAIL")
    return {"target": name, "goal": goal, "measured": measured, "result": verdict,
            "note": note}


# -- stats and list -----------------------------------------------------------


def run_row(i: int, when: datetime, database: str, status: str, backup_dir: Path,
            present: bool, file_state: str) -> dict[str, Any]:
    """One backup_runs row, shaped like the service writes them."""
    stamp = when.strftime("%Y-%m-%d_%H-%M-%S")
    ok = status == "SUCCEEDED"
    return {
        "database": database, "status": status, "trigger": "SCHEDULE", "schedule": "nightly",
        "backup_dir": str(backup_dir),
        "file_path": str(backup_dir / f"backup_{database}_{stamp}.sql") if ok else "",
        "temp_path": "", "size_bytes": 1000 + i % 997 if ok else 0,
        "sha256": f"{i:064x}" if ok else "", "queued_at": when, "started_at": when,
        "finished_at": when + timedelta(seconds=60),
        "error": "" if ok else "pg_dump exited with code 1: connection refused",
        "format": "plain", "compression": "none", "pg_dump_version": "18.6",
        "server_version": "18.6", "file_state": file_state, "present": present,
        "bytes_written": 1000 if ok else 0, "estimated_total_bytes": 1000,
        "verification": "", "verification_reason": "", "verified_at": None,
    }


def insert_rows(url: str, rows: list[dict[str, Any]]) -> None:
    """Insert through the store, keeping only columns its schema has."""
    from pgbackup_server import store as store_module

    columns = set(store_module.runs.c.keys())
    if "target" in columns:  # multi-database schema: the target is the database here
        for row in rows:
            row.setdefault("target", row["database"])
    rows = [{k: v for k, v in row.items() if k in columns} for row in rows]
    store = store_module.SqlRunStore(url)
    try:
        for start in range(0, len(rows), 5000):
            store.bulk_insert(rows[start:start + 5000])
    finally:
        store.close()


def latency_ms(call: Callable[[], object], n: int, warmup: int = 50) -> list[float]:
    for _ in range(warmup):
        call()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def bench_stats(root: Path, pg: EmbeddedPostgres, pg_dump: str, n_runs: int, calls: int,
                cleanup: Cleanup) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """GetStats and ListBackups (first page) with ``n_runs`` recorded runs: one every
    15 minutes over five databases, 5% failed; successful runs of the last 30 days
    are present on disk, older ones deleted by retention."""
    backup_dir = root / "backups"
    backup_dir.mkdir(parents=True, mode=0o700)
    url = f"sqlite:///{root / 'data' / 'backupd.sqlite3'}"
    now = datetime.now(UTC).replace(microsecond=0)
    cutoff = now - timedelta(days=30)
    rows = []
    for i in range(n_runs):
        when = now - timedelta(minutes=15 * (n_runs - i))
        status = "FAILED" if i % 20 == 0 else "SUCCEEDED"
        present = status == "SUCCEEDED" and when >= cutoff
        state = "NONE" if status == "FAILED" else ("PRESENT" if present else "DELETED")
        row = run_row(i, when, f"db{i % 5}", status, backup_dir, present, state)
        if present:
            Path(row["file_path"]).write_bytes(b"-- bench\n")
        rows.append(row)
    present_count = sum(1 for r in rows if r["present"])
    say(f"stats: inserting {n_runs} runs ({present_count} present on disk)")
    insert_rows(url, rows)
    backupd = Backupd(root, pg, pg_dump=pg_dump, store_url=url).start()
    cleanup.push(backupd.stop)
    with backupd.client(timeout=30) as client:
        stats = client.get_stats()
        if stats.succeeded_runs + stats.failed_runs != n_runs:
            raise RuntimeError(f"store holds {stats.succeeded_runs + stats.failed_runs} runs, "
                               f"expected {n_runs}")
        say(f"stats: {calls} GetStats and {calls} ListBackups calls")
        stats_ms = latency_ms(client.get_stats, calls)
        page = client.list_backups()
        list_ms = latency_ms(client.list_backups, calls)
    backupd.stop()

    def dist(v: list[float]) -> dict[str, float]:
        return {"p50_ms": round(percentile(v, 50), 2), "p99_ms": round(percentile(v, 99), 2),
                "max_ms": round(max(v), 2), "mean_ms": round(statistics.fmean(v), 2)}

    summary = {"recorded_runs": n_runs, "present_backups": present_count, "calls": calls,
               "page_size": len(page.backups), "get_stats": dist(stats_ms),
               "list_backups_first_page": dist(list_ms)}
    s99, l99 = percentile(stats_ms, 99), percentile(list_ms, 99)
    targets = [
        target(f"GetStats p99, {n_runs} runs", f"<= {TARGET_STATS_P99_MS} ms", round(s99, 2),
               s99 <= TARGET_STATS_P99_MS if n_runs >= 100_000 else None,
               "" if n_runs >= 100_000 else "fewer than 100,000 runs"),
        target(f"ListBackups first page p99, {n_runs} runs", f"<= {TARGET_LIST_P99_MS} ms",
               round(l99, 2), l99 <= TARGET_LIST_P99_MS if n_runs >= 100_000 else None,
               "" if n_runs >= 100_000 else "fewer than 100,000 runs"),
    ]
    return summary, targets


# -- cleanup ------------------------------------------------------------------


def bench_cleanup(root: Path, pg: EmbeddedPostgres, pg_dump: str, n_files: int, repeats: int,
                  cleanup: Cleanup) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Cleanup RPC over ``n_files`` expired backups (100+ days old) plus one recent,
    with retentionDays 30; each repeat on a fresh store and directory."""
    times: list[float] = []
    dry_times: list[float] = []
    for rep in range(repeats):
        base = root / f"rep{rep}"
        backup_dir = base / "backups"
        backup_dir.mkdir(parents=True, mode=0o700)
        url = f"sqlite:///{base / 'data' / 'backupd.sqlite3'}"
        now = datetime.now(UTC).replace(microsecond=0)
        old = now - timedelta(days=100)
        rows = []
        for i in range(n_files):
            when = old - timedelta(minutes=i)
            rows.append(run_row(i, when, "shop", "SUCCEEDED", backup_dir, True, "PRESENT"))
        rows.append(run_row(n_files, now - timedelta(hours=1), "shop", "SUCCEEDED", backup_dir,
                            True, "PRESENT"))
        for row in rows:
            Path(row["file_path"]).write_bytes(b"-- expired bench backup\n" * 40)
        insert_rows(url, rows)
        os.sync()  # old backups are long on disk: no writeback pending when they go
        backupd = Backupd(base, pg, pg_dump=pg_dump, store_url=url, database="shop",
                          backup={"retentionDays": 30}).start()
        cleanup.push(backupd.stop)
        with backupd.client(timeout=600) as client:
            t0 = time.perf_counter()
            dry = client.cleanup(dry_run=True)
            dry_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            result = client.cleanup()
            times.append(time.perf_counter() - t0)
        backupd.stop()
        left = sorted(p.name for p in backup_dir.iterdir())
        if dry.deleted_files != n_files or result.deleted_files != n_files or len(left) != 1:
            raise RuntimeError(f"cleanup deleted {result.deleted_files} (dry run: "
                               f"{dry.deleted_files}), {len(left)} files left; expected "
                               f"{n_files} deleted and 1 left")
        say(f"cleanup {rep + 1}/{repeats}: {n_files} expired backups deleted in "
            f"{times[-1]:.2f} s (dry run {dry_times[-1]:.2f} s)")
    med = median(times)
    summary = {"expired_backups": n_files, "repeats": repeats,
               "cleanup_seconds": [round(t, 3) for t in times],
               "dry_run_seconds": [round(t, 3) for t in dry_times],
               "median_s": round(med, 3), "max_s": round(max(times), 3)}
    ok = med <= TARGET_CLEANUP_S if n_files >= 10_000 else None
    return summary, [target(f"Cleanup of {n_files} expired backups (median)",
                            f"<= {TARGET_CLEANUP_S} s", round(med, 3), ok,
                            "" if n_files >= 10_000 else "fewer than 10,000 backups")]


# -- output -------------------------------------------------------------------


def render_table(report: dict[str, Any]) -> str:
    m = report["machine"]
    db = report.get("database", {})
    lines = [
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gb']} GB RAM, "
        f"{m['filesystem']}, Linux {m['kernel']}, Python {m['python']}",
        f"pg_dump: {m['pg_dump_version']} ({m['pg_dump']}); zstandard {m['zstandard']}",
    ]
    if db:
        docs = f" + {db['text_rows']} text/jsonb rows" if db.get("text_rows") else ""
        lines.append(f"Database: pgbench scale {db['pgbench_scale']}{docs}, "
                     f"{db['size_bytes'] / MB:.0f} MB, PostgreSQL {db['server_version']}")
    if report.get("dumps"):
        lines += ["", f"Dumps (median of {report['runs']} interleaved runs; wall seconds "
                      "client-side, output fsynced; CPU s of pg_dump, or backupd + pg_dump):",
                  f"{'case':11s} {'bare s':>7s} {'svc s':>7s} {'svc/bare':>8s} "
                  f"{'CPU bare':>8s} {'CPU svc':>8s} {'bare MB':>8s} {'svc MB':>8s} "
                  f"{'RSS start→peak MB':>18s}"]
        for d in report["dumps"]:
            rss = (f"{d['rss_at_start_mb']:.0f}→{max(d['rss_peak_mb']):.0f} "
                   f"(+{d['rss_growth_mb_max']:.0f})" if d["rss_peak_mb"] else "-")
            lines.append(f"{d['case']:11s} {d['bare_median_s']:7.2f} {d['service_median_s']:7.2f}"
                         f" {d['service_over_bare']:8.3f} {d['bare_cpu_median_s']:8.2f} "
                         f"{d['service_cpu_median_s']:8.2f} {d['bare_size_bytes'] / MB:8.1f} "
                         f"{d['service_size_bytes'] / MB:8.1f} {rss:>18s}")
        for d in report["dumps"]:
            lines.append(f"  {d['case']}: bare = {d['bare']}; service = {d['service']}")
            if "read_limit_median_s" in d:
                lines.append(f"  {d['case']}: pg_dump -Fp to /dev/null (read-side limit): "
                             f"{d['read_limit_median_s']:.2f} s")
    if report.get("stats"):
        s = report["stats"]
        lines += ["", f"API latency through gRPC ({s['calls']} calls each, "
                      f"{s['recorded_runs']} runs, {s['present_backups']} present):"]
        for key, label in (("get_stats", "GetStats"),
                           ("list_backups_first_page", f"ListBackups ({s['page_size']}/page)")):
            v = s[key]
            lines.append(f"  {label:24s} p50 {v['p50_ms']:6.2f} ms  p99 {v['p99_ms']:6.2f} ms  "
                         f"max {v['max_ms']:6.2f} ms")
    if report.get("cleanup"):
        c = report["cleanup"]
        lines += ["", f"Cleanup of {c['expired_backups']} expired backups: "
                      f"median {c['median_s']:.2f} s, max {c['max_s']:.2f} s "
                      f"(runs: {', '.join(f'{t:.2f}' for t in c['cleanup_seconds'])})"]
    lines += ["", f"{'Target':58s} {'goal':>10s} {'measured':>10s}  result"]
    for t in report["targets"]:
        lines.append(f"{t['target']:58s} {t['goal']:>10s} {str(t['measured']):>10s}  "
                     f"{t['result']}{'  (' + t['note'] + ')' if t['note'] else ''}")
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------


@contextmanager
def work_directory(path: str | None, keep: bool) -> Iterator[Path]:
    if path:
        root = Path(path).resolve()
        root.mkdir(parents=True, exist_ok=True)
        yield root
        return
    root = Path(tempfile.mkdtemp(prefix="backupd-bench-"))
    try:
        yield root
    finally:
        if keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=int, default=20,
                   help="pgbench scale (default 20; 115 gives a >= 1 GiB plain dump)")
    p.add_argument("--text-rows", type=int, default=0,
                   help="add a table of this many rows of text and jsonb (default 0; pgbench "
                        "data alone compresses ~35x, which flatters gzip)")
    p.add_argument("--runs", type=int, default=3, help="measured runs per side (default 3)")
    p.add_argument("--cases", default="plain,compressed,custom",
                   help="dump cases: plain, compressed, custom (default: all)")
    p.add_argument("--json", metavar="FILE", help="write the JSON report here (default stdout)")
    p.add_argument("--skip-memory", action="store_true", help="do not sample backupd's RSS")
    p.add_argument("--skip-dumps", action="store_true", help="no database, no dump cases")
    p.add_argument("--skip-stats", action="store_true", help="skip GetStats/ListBackups")
    p.add_argument("--skip-cleanup", action="store_true", help="skip the Cleanup benchmark")
    p.add_argument("--stats-runs", type=int, default=100_000, help="recorded runs (100000)")
    p.add_argument("--calls", type=int, default=1000, help="calls per RPC for latency (1000)")
    p.add_argument("--cleanup-files", type=int, default=10_000, help="expired backups (10000)")
    p.add_argument("--cleanup-repeats", type=int, default=3, help="cleanup repetitions (3)")
    p.add_argument("--pg-dump", help="pg_dump to use for both sides (default: the one the "
                                     "service picks for the server)")
    p.add_argument("--work-dir", help="keep PostgreSQL here and reuse its pgbench database "
                                      "across invocations (default: a temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    args = p.parse_args(argv)
    if args.runs < 3:
        p.error("--runs must be at least 3")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Before gRPC is imported: this process forks pg_dump and backupd.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from pgbackup_server import pgtools
    from pgbackup_server.embedded import EmbeddedPostgres

    cleanup = Cleanup()
    report: dict[str, Any] = {"generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
                              "runs": args.runs, "targets": []}
    try:
        with work_directory(args.work_dir, args.keep) as root:
            say(f"work directory {root}")
            for stale in ("svc", "stats", "cleanup", "bare"):  # only PostgreSQL is reused
                shutil.rmtree(root / stale, ignore_errors=True)
            pg = EmbeddedPostgres(root / "postgres", password=PASSWORD)
            cleanup.push(pg.stop)
            pg.start()
            pg_dump = choose_pg_dump(pg, args.pg_dump)
            zstd_capable = pgtools.supports_compression(pg_dump, "zstd")
            report["machine"] = machine_info(pg_dump, root)
            report["machine"]["pg_dump_zstd"] = zstd_capable
            report["source"] = source_info()
            say(f"pg_dump {pg_dump} (zstd: {'yes' if zstd_capable else 'no'})")

            if not args.skip_dumps:
                report["database"] = prepare_database(pg, args.scale, args.text_rows)
                cases = make_cases([c.strip() for c in args.cases.split(",") if c.strip()],
                                   zstd_capable)
                instances: dict[str, Backupd] = {}
                for case in cases:
                    b = Backupd(root / "svc" / case.name, pg, pg_dump=pg_dump,
                                backup=case.backup_cfg)
                    cleanup.push(b.stop)
                    instances[case.name] = b.start()
                bare = BareDump(pg_dump, pg.url(DBNAME), root)
                cleanup.push(bare.kill)
                results = run_dump_cases(cases, instances, bare, args.runs,
                                         not args.skip_memory)
                for b in instances.values():
                    b.stop()
                plain = next((r for r in results if r.case.name == "plain"), None)
                plain_bytes = int(median([s.size_bytes for s in plain.bare])) if plain else 0
                report["dumps"] = []
                for res in results:
                    summary, targets = summarize_case(
                        res, zstd_capable, plain_bytes, instances[res.case.name].started_rss_kb)
                    report["dumps"].append(summary)
                    report["targets"] += targets
                report["targets"].append(memory_target(report["dumps"], plain_bytes,
                                                       args.skip_memory))
            if not args.skip_stats:
                report["stats"], targets = bench_stats(root / "stats", pg, pg_dump,
                                                       args.stats_runs, args.calls, cleanup)
                report["targets"] += targets
            if not args.skip_cleanup:
                report["cleanup"], targets = bench_cleanup(
                    root / "cleanup", pg, pg_dump, args.cleanup_files, args.cleanup_repeats,
                    cleanup)
                report["targets"] += targets
            cleanup.run()
    finally:
        cleanup.run()

    print(render_table(report))
    text = json.dumps(report, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
        say(f"JSON written to {args.json}")
    else:
        print()
        print(text)
    failed = [t for t in report["targets"] if t["result"] == "FAIL"]
    return 1 if failed and args.strict else 0


def memory_target(dumps: list[dict[str, Any]], plain_bytes: int,
                  skipped: bool) -> dict[str, Any]:
    """Peak RSS growth over idle, across cases; applies to a >= 1 GB dump."""
    growth = [d["rss_growth_mb_max"] for d in dumps if d["rss_growth_mb_max"] is not None]
    name = "backupd peak RSS growth over idle during a backup"
    goal = f"<= {TARGET_RSS_GROWTH_MB:.0f} MB"
    if skipped or not growth:
        return target(name, goal, None, None, "--skip-memory")
    worst = max(growth)
    if plain_bytes < TARGET_MEMORY_DUMP_BYTES:
        return target(name, goal, worst, None,
                      f"dump is {plain_bytes / MB:.0f} MB; the target needs >= 1 GB (--scale)")
    return target(name, goal, worst, worst <= TARGET_RSS_GROWTH_MB,
                  f"{plain_bytes / MB:.0f} MB dump")


if __name__ == "__main__":
    sys.exit(main())
