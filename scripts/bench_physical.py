"""Benchmark physical backups (issue 13) as ratios measured in one run.

It starts an embedded PostgreSQL 18 with WAL summaries on and a pgbench database,
runs backupd in-process with one physical target (and one logical target on the
same database), and measures, interleaved where it compares:

- a full physical backup through the service versus bare ``pg_basebackup`` with
  the same options (target: <= 1.05 of the time);
- an incremental after 2% of the rows changed versus a full backup (target: <= 15%
  of the time and <= 10% of the size), with a bare ``pg_basebackup --incremental``
  against the same parent beside each, to show what the service adds;
- the restore of a full backup plus 3 incrementals versus the restore of the full
  backup alone (target: <= 1.3x), both checked alike (every input byte against the
  backup manifests' checksums once, the result's structure and WAL) and synced;
- a full physical backup versus a logical one (``compressBackup``) of the same
  database: the speed ratio, reported, and the restore of each (the README says
  where each wins).

The default scale is 70 (~1 GB of cluster): at a few hundred MB the fixed costs of
a backup (checkpoint, WAL switch, connections) dominate the ratios the issue asks
about, which are about real sizes.

Imported by ``scripts/bench.py`` (``--cases physical``), which prints the table and
JSON with the machine's load:

    .venv/bin/python scripts/bench.py --cases physical --runs 1   # scale 70, ~1 GB
    .venv/bin/python scripts/bench.py --cases physical --physical-scale 20 --runs 3
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

TARGET_OVERHEAD = 1.05
TARGET_INCR_TIME = 0.15
TARGET_INCR_SIZE = 0.10
TARGET_RESTORE_CHAIN = 1.3


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def load() -> float:
    return os.getloadavg()[0]


def bench(scale: int, runs: int, workdir: Path) -> dict[str, Any]:
    from pgbackup_server.app import App
    from pgbackup_server.observability import logs
    from pgbackup_server.physical.basebackup import COMPRESS
    from pgbackup_server.postgres.embedded import EmbeddedPostgres
    from pgbackup_server.settings import build_settings

    logs.configure("warning", "console")  # to stderr; stdout is for the results
    pg = EmbeddedPostgres(workdir / "pg", password="bench-Pa55:word").start()
    try:
        pg.psql("ALTER SYSTEM SET summarize_wal = on")
        pg.psql("SELECT pg_reload_conf()")
        pg.create_database("bench")
        say(f"pgbench -i -s {scale}")
        pg.pgbench_init("bench", scale)
        db_bytes = int(pg.psql("SELECT sum(pg_database_size(oid)) FROM pg_database"))
        cfg = {
            "databases": [
                {"name": "cluster", "url": pg.url("postgres"), "kind": "physical"},
                {"name": "bench", "url": pg.url("bench")}],
            "backup": {"directory": str(workdir / "backups"), "cleanupOld": False,
                       "compressBackup": True},
            "server": {"grpcAddress": "127.0.0.1:0", "envoy": False,
                       "dataDirectory": str(workdir / "data")},
            "metrics": {"enabled": False},
            "log": {"level": "warning"},
        }
        app = App(build_settings(cfg, base=workdir, env={}))
        app.start()
        from pgbackup_client import BackupClient

        client = BackupClient(f"127.0.0.1:{app.grpc_port}", timeout=None)
        pg_basebackup = str(pg.bin / "pg_basebackup")
        try:
            return _measure(pg, client, pg_basebackup, COMPRESS, runs, workdir, db_bytes)
        finally:
            client.close()
            app.stop()
    finally:
        pg.destroy()


def _measure(pg: Any, client: Any, pg_basebackup: str, compress: str, runs: int,
             workdir: Path, db_bytes: int) -> dict[str, Any]:
    bare_t, service_t, full_sizes, logical_t = [], [], [], []
    for i in range(runs):  # interleaved: bare, service, logical
        out = workdir / f"bare{i}"
        t = time.monotonic()
        subprocess.run([pg_basebackup, f"--pgdata={out}", "--format=tar",
                        f"--compress={compress}", "--wal-method=stream", "--checkpoint=fast",
                        "--no-password", f"--dbname={pg.admin_conninfo()}"], check=True)
        subprocess.run(["gzip", "-1", str(out / "pg_wal.tar")], check=True)  # as the service
        subprocess.run(["sync", "-f", str(out)], check=True)
        bare_t.append(time.monotonic() - t)
        shutil.rmtree(out)
        t = time.monotonic()
        full = client.create_backup(database="cluster").backup
        service_t.append(time.monotonic() - t)
        full_sizes.append(full.size_bytes)
        t = time.monotonic()
        logical = client.create_backup(database="bench").backup
        logical_t.append(time.monotonic() - t)
        say(f"run {i}: bare {bare_t[-1]:.2f}s service {service_t[-1]:.2f}s "
            f"logical {logical_t[-1]:.2f}s ({logical.size_bytes >> 20} MB) load {load():.1f}")
    # Incrementals: 2% of the accounts (a contiguous range, as new and recent rows
    # are) change before each. Spread evenly (aid % 50), 2% of the rows touch every
    # page, and an incremental is then as large as a full backup.
    accounts = int(pg.psql("SELECT count(*) FROM pgbench_accounts", "bench"))
    incr_t, incr_sizes, chain_ids, bare_incr_t = [], [], [full.id], []
    parent = Path(full.file_path)
    step = accounts // 50
    for i in range(3):
        pg.psql(f"UPDATE pgbench_accounts SET abalance = abalance + 1 "
                f"WHERE aid > {i * step} AND aid <= {(i + 1) * step}", "bench")
        out = workdir / f"bare-incr{i}"  # the same parent, the same changes
        t = time.monotonic()
        subprocess.run([pg_basebackup, f"--incremental={parent / 'backup_manifest'}",
                        f"--pgdata={out}", "--format=tar", f"--compress={compress}",
                        "--wal-method=stream", "--checkpoint=fast", "--no-password",
                        f"--dbname={pg.admin_conninfo()}"], check=True)
        subprocess.run(["gzip", "-1", str(out / "pg_wal.tar")], check=True)
        subprocess.run(["sync", "-f", str(out)], check=True)
        bare_incr_t.append(time.monotonic() - t)
        shutil.rmtree(out)
        t = time.monotonic()
        incr = client.create_backup(database="cluster", type="incremental").backup
        incr_t.append(time.monotonic() - t)
        incr_sizes.append(incr.size_bytes)
        chain_ids.append(incr.id)
        parent = Path(incr.file_path)
        assert incr.kind == "PHYSICAL_INCREMENTAL", incr.type_reason
        say(f"incremental {i}: {incr_t[-1]:.2f}s {incr.size_bytes >> 20} MB "
            f"(bare {bare_incr_t[-1]:.2f}s)")
    restore_full, restore_chain = [], []
    # Restores run where the database server is not busy: it is stopped meanwhile. (It
    # runs with fsync=off: its checkpoints after the updates and backups would leave
    # gigabytes to write back while the restores write theirs.)
    pg.stop()
    # One untimed restore of each first. On a freshly booted VM the first write into
    # memory the guest never touched costs the host a page fault per page (touching
    # 14 GB took 48 s here, 3.4 s/GB): whichever restore came first paid it, and the
    # chain, which writes more, paid more. A running host has long touched its memory.
    for which in (full.id, chain_ids[-1]):
        out = workdir / f"restore-warmup-{which}"
        client.restore_backup(which, target_directory=str(out))
        shutil.rmtree(out)
    for i in range(runs):
        pair = [(full.id, restore_full), (chain_ids[-1], restore_chain)]
        for which, into in pair if i % 2 == 0 else pair[::-1]:  # A/B, then B/A
            out = workdir / f"restore-{which}-{i}"
            # Each starts with nothing left to write back from the steps before (the
            # backups, the previous restore): the restores' own writing is timed.
            subprocess.run(["sync", "-f", str(workdir)], check=True)
            t = time.monotonic()
            client.restore_backup(which, target_directory=str(out))
            into.append(time.monotonic() - t)
            shutil.rmtree(out)
        say(f"restore {i}: full {restore_full[-1]:.2f}s, full+3 {restore_chain[-1]:.2f}s")
    pg.start()
    t = time.monotonic()  # the logical backup restored into a new database, once
    client.restore_backup(logical.id, target_database="bench_restored")
    logical_restore_t = time.monotonic() - t
    pg.psql("DROP DATABASE bench_restored")
    say(f"logical restore: {logical_restore_t:.2f}s")
    med = statistics.median
    overhead = med(service_t) / med(bare_t)
    incr_time = med(incr_t) / med(service_t)
    incr_size = med(incr_sizes) / med(full_sizes)
    restore_ratio = med(restore_chain) / med(restore_full)
    return {
        "database_bytes": db_bytes, "accounts": accounts, "runs": runs,
        "load_average_end": load(), "cpus": os.cpu_count(),
        "full": {"bare_s": bare_t, "service_s": service_t, "bytes": full_sizes},
        "logical_compressed_s": logical_t, "logical_bytes": logical.size_bytes,
        "incremental": {"s": incr_t, "bytes": incr_sizes, "bare_s": bare_incr_t},
        "restore": {"full_s": restore_full, "full_plus_3_s": restore_chain,
                    "logical_s": logical_restore_t},
        "targets": [
            {"name": "full physical vs bare pg_basebackup", "goal": f"<= {TARGET_OVERHEAD}",
             "measured": round(overhead, 3), "ok": overhead <= TARGET_OVERHEAD},
            {"name": "incremental after 2% changed, time vs full",
             "goal": f"<= {TARGET_INCR_TIME}", "measured": round(incr_time, 3),
             "ok": incr_time <= TARGET_INCR_TIME},
            {"name": "incremental after 2% changed, size vs full",
             "goal": f"<= {TARGET_INCR_SIZE}", "measured": round(incr_size, 3),
             "ok": incr_size <= TARGET_INCR_SIZE},
            {"name": "restore full+3 incrementals vs full alone",
             "goal": f"<= {TARGET_RESTORE_CHAIN}", "measured": round(restore_ratio, 3),
             "ok": restore_ratio <= TARGET_RESTORE_CHAIN},
            {"name": "physical full vs logical compressBackup, time", "goal": "reported",
             "measured": round(med(service_t) / med(logical_t), 3), "ok": None},
            {"name": "physical restore (full) vs logical restore, time", "goal": "reported",
             "measured": round(med(restore_full) / logical_restore_t, 3), "ok": None},
        ],
    }
