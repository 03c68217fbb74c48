"""Where plain-dump overhead goes: ``scripts/bench.py --cases hashcost``.

Issue 11 asks for plain and custom backups within 1.05 of bare ``pg_dump`` with the file's
SHA-256 recorded. This case takes the service's fast path apart on the same database and
connection, interleaved, so that each step's cost is seen on its own:

- ``bare``: ``pg_dump -Fp -f FILE``, then fsync (what the plain target compares against);
- ``no reader``: pg_dump writes through ``--file=/dev/fd/N --no-sync``, as the service
  does, and nothing reads the file; fsync after;
- ``read only``: the same, with the file read back as it grows (1 MiB reads), no digest;
- ``sha256``: read and SHA-256 (the service's fast path);
- ``blake3``: read and BLAKE3, when the ``blake3`` package is installed (the issue's
  "faster digest" option).

Each figure is the median wall time of the whole step, dump plus fsync, and its ratio
to ``bare``.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def _digest(name: str) -> Any:
    if name == "blake3":
        import blake3  # optional, not a dependency: the "faster digest" option

        return blake3.blake3()
    return hashlib.sha256()


def hashcost(pg_dump: str, dsn: str, env: dict[str, str], work: Path, runs: int,
             interleaved: Callable[[dict[str, Callable[[], float]], int],
                                   dict[str, list[float]]]) -> dict[str, Any]:
    """Median seconds and ratio to bare pg_dump of each step of the fast path."""
    work.mkdir(parents=True, exist_ok=True)
    out = work / "hashcost.sql"
    conn = ["--no-password", f"--dbname={dsn}"]

    def bare() -> float:
        t0 = time.perf_counter()
        subprocess.run([pg_dump, "-Fp", *conn, f"--file={out}"], env=env, check=True)
        fd = os.open(out, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        took = time.perf_counter() - t0
        out.unlink()
        return took

    def through_fd(reader: str) -> Callable[[], float]:
        def run() -> float:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            rfd = os.open(out, os.O_RDONLY)
            digest = _digest(reader) if reader in ("sha256", "blake3") else None
            t0 = time.perf_counter()
            try:
                proc = subprocess.Popen([pg_dump, "-Fp", "--no-sync", *conn,
                                         f"--file=/dev/fd/{fd}"], env=env, pass_fds=(fd,))
                while proc.poll() is None:
                    if reader != "none" and (data := os.read(rfd, CHUNK)):
                        if digest is not None:
                            digest.update(data)
                        continue
                    try:
                        proc.wait(0.05)
                    except subprocess.TimeoutExpired:
                        pass
                syncer = threading.Thread(target=os.fsync, args=(fd,))
                syncer.start()
                while reader != "none" and (data := os.read(rfd, CHUNK)):
                    if digest is not None:
                        digest.update(data)
                syncer.join()
                os.fsync(fd)
                took = time.perf_counter() - t0
            finally:
                os.close(fd)
                os.close(rfd)
                out.unlink(missing_ok=True)
            if proc.returncode != 0:
                raise SystemExit(f"pg_dump failed ({proc.returncode})")
            return took
        return run

    sides: dict[str, Callable[[], float]] = {
        "bare": bare, "no reader": through_fd("none"), "read only": through_fd("read"),
        "sha256": through_fd("sha256")}
    try:
        _digest("blake3")
        sides["blake3"] = through_fd("blake3")
    except ImportError:
        pass
    times = interleaved(sides, runs)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"median_s": {k: round(v, 3) for k, v in med.items()},
            "runs_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
            "vs bare": {k: round(v / med["bare"], 3) for k, v in med.items()}}
