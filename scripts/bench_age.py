#!/usr/bin/env python3
"""Encryption throughput of the pipeline's age stage while another backup runs.

Pushes ``--size`` MiB of incompressible bytes (what a zstd stage hands on) through
:class:`EncryptingSink` into a counting downstream sink, on one thread, while another
thread does what a backup does in this daemon: reads a child's pipe, compresses with
zstd, hashes and writes a file. Cases, each the median of ``--runs``:

- bare ``age -r`` from a file to /dev/null (the tool alone, the ceiling);
- the stage with the age command, idle, then next to the backup thread (the target),
  then with a SHA-256-hashing downstream (what a destination adds on the same thread);
- the stage with the pyrage worker process, next to the backup thread;
- in-process ``pyrage.encrypt_io`` next to the backup thread;
- the stage and in-process pyrage next to a thread running pure Python (holding the
  GIL): why the bytes go through a child.

    .venv/bin/python scripts/bench_age.py --size 512 --runs 3 [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import zstandard

from pgbackup_server.domain.models import Stored
from pgbackup_server.storage.age import EncryptingSink, Engine

MiB = 1 << 20
TARGET_MBPS = 300.0


class NullSink:
    """A downstream sink that only counts: the stage's own cost."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> int:
        self.size += len(chunk)
        return len(chunk)

    def finish(self) -> list[Stored]:
        return [Stored("bench", self.size, self.h.hexdigest())]

    def abort(self, reason: str) -> None:
        pass


class HashingSink(NullSink):
    """A downstream sink that hashes and drops (a destination without the disk)."""

    def write(self, chunk: bytes) -> int:
        self.h.update(chunk)
        self.size += len(chunk)
        return len(chunk)


class BackupLike(threading.Thread):
    """Reads a child's output, compresses, hashes and writes it, until stopped."""

    def __init__(self, work: Path) -> None:
        super().__init__(daemon=True)
        self.work = work
        self.stop = threading.Event()
        self.bytes = 0

    def run(self) -> None:
        source = self.work / "table.txt"
        if not source.exists():  # text-like rows: compressible, as a plain dump
            rows = b"".join(b"%d\tcustomer %d\t2026-01-15 14:30:25\t%d.50\n" % (i, i * 7, i % 997)
                            for i in range(200_000))
            source.write_bytes(rows * 4)
        cctx = zstandard.ZstdCompressor(level=3)
        while not self.stop.is_set():
            proc = subprocess.Popen(["cat", str(source)], stdout=subprocess.PIPE)
            assert proc.stdout is not None
            h = hashlib.sha256()
            with open(self.work / "backup.zst", "wb") as out:
                comp = cctx.compressobj()
                while not self.stop.is_set() and (chunk := proc.stdout.read(256 * 1024)):
                    self.bytes += len(chunk)
                    data = comp.compress(chunk)
                    h.update(data)
                    out.write(data)
                out.write(comp.flush())
            proc.kill()
            proc.wait()
            proc.stdout.close()


class Spinner(threading.Thread):
    """Pure Python work that holds the GIL (a busy request handler, say)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            for i in range(10_000):
                n += i * i


def _timed(fn: Callable[[], None]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def push(recipient: str, size: int, engine: Engine, hashing: bool = False) -> None:
    block = os.urandom(MiB)
    sink = EncryptingSink([recipient], HashingSink() if hashing else NullSink(),
                          prefer=engine)
    for _ in range(size):
        sink.write(block)
    sink.finish()


def inprocess_pyrage(recipient: str, size: int) -> None:
    import pyrage

    class Source(io.RawIOBase):
        def __init__(self) -> None:
            self.left = size * MiB
            self.block = os.urandom(MiB)

        def readable(self) -> bool:
            return True

        def readinto(self, b):  # type: ignore[no-untyped-def]
            n = min(len(b), self.left, MiB)
            b[:n] = self.block[:n]
            self.left -= n
            return n

    out = NullSink()
    pyrage.encrypt_io(io.BufferedReader(Source()), out,
                      [pyrage.x25519.Recipient.from_str(recipient)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512, help="MiB per case")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-age-") as tmp:
        work = Path(tmp)
        subprocess.run(["age-keygen", "-o", str(work / "key.txt")], check=True,
                       capture_output=True)
        recipient = subprocess.run(["age-keygen", "-y", str(work / "key.txt")], check=True,
                                   capture_output=True, text=True).stdout.strip()
        plain = work / "plain.bin"
        with plain.open("wb") as f:
            block = os.urandom(MiB)
            for _ in range(args.size):
                f.write(block)

        def bare() -> None:
            subprocess.run(["age", "-r", recipient, "-o", "/dev/null", str(plain)], check=True)

        def busy(fn: Callable[[], None], spin: bool = False) -> Callable[[], float]:
            def run() -> float:
                other: BackupLike | Spinner = Spinner() if spin else BackupLike(work)
                other.start()
                time.sleep(0.2)  # the backup is under way
                try:
                    return _timed(fn)
                finally:
                    other.stop.set()
                    other.join()
            return run

        small = max(16, args.size // 8)  # in-process pyrage is slow when busy
        cases: dict[str, tuple[int, Callable[[], float]]] = {
            "bare age -r, file to /dev/null": (args.size, lambda: _timed(bare)),
            "stage (age command), idle": (
                args.size, lambda: _timed(lambda: push(recipient, args.size, Engine.CLI))),
            "stage (age command), next to a backup": (
                args.size, busy(lambda: push(recipient, args.size, Engine.CLI))),
            "stage (age command) + sha256 downstream, next to a backup": (
                args.size, busy(lambda: push(recipient, args.size, Engine.CLI, True))),
            "stage (pyrage worker), next to a backup": (
                args.size, busy(lambda: push(recipient, args.size, Engine.PYTHON))),
            "in-process pyrage.encrypt_io, next to a backup": (
                small, busy(lambda: inprocess_pyrage(recipient, small))),
        }
        cases["stage (age command), next to a GIL-holding thread"] = (
            args.size, busy(lambda: push(recipient, args.size, Engine.CLI), spin=True))
        cases["in-process pyrage.encrypt_io, next to a GIL-holding thread"] = (
            small, busy(lambda: inprocess_pyrage(recipient, small), spin=True))
        results = {}
        for name, (mib, case) in cases.items():
            times = [case() for _ in range(args.runs)]
            results[name] = round(mib * MiB / statistics.median(times) / 1e6, 1)
            print(f"{name:<60} {results[name]:>8.1f} MB/s", flush=True)
    target = results["stage (age command), next to a backup"]
    report = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": sys.version.split()[0], "loadavg": os.getloadavg()},
        "size_mib": args.size, "runs": args.runs, "mb_per_s": results,
        "target": {"encryption_next_to_a_backup_mb_per_s": TARGET_MBPS, "measured": target,
                   "pass": target >= TARGET_MBPS},
    }
    print(f"encryption next to a backup: {target:.0f} MB/s (target >= {TARGET_MBPS:.0f}): "
          f"{'PASS' if target >= TARGET_MBPS else 'FAIL'}; load {os.getloadavg()}")
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
