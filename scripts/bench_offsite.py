"""Off-site copies and encryption cases of ``scripts/bench.py`` (issue 12).

Imported by ``bench.py`` (``--cases offsite``), not run on its own. S3 is moto's server
in a **child process** on loopback (``python -m moto.server``): its in-memory objects
and its request handling then count neither in the service's RSS nor against its GIL,
as with a real store. The service runs in-process, as in the other cases:

- a ``compressBackup`` backup, age-encrypted, to S3 only, against the same backup
  compressed to a local file, interleaved;
- peak RSS growth of this process during an uncompressed plain backup to S3 only (the
  most bytes through the upload path; the target asks for >= 1 GB);
- throughput of the pipeline's age stage (:class:`EncryptingSink`, the ``age`` command)
  while the service runs another backup on a second thread: the target. Next to it,
  what ``bench_age.py`` measured: bare ``age -r`` (the ceiling), the stage idle, with a
  hashing downstream, through the pyrage worker, and in-process ``pyrage`` next to the
  backup and next to a GIL-holding thread (why the bytes go through a child).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

MiB = 1 << 20
KEY_VAR, SECRET_VAR = "BENCH_S3_KEY_ID", "BENCH_S3_SECRET"
CREDS = {KEY_VAR: "bench-key-id", SECRET_VAR: "bench-secret-key"}  # moto: any key works
REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoProcess:
    """moto's S3 server in a child process, with one bucket."""

    def __init__(self, bucket: str = "bench") -> None:
        import boto3
        from botocore.config import Config

        port = _free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                      "-p", str(port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit("moto server did not start") from None
                time.sleep(0.2)
        self.bucket = bucket
        try:
            self.client = self._client(boto3, Config)
            self.client.create_bucket(Bucket=bucket)
        except BaseException:
            self.stop()
            raise

    def _client(self, boto3: Any, config: Any) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=CREDS[KEY_VAR],
                            aws_secret_access_key=CREDS[SECRET_VAR],
                            config=config(s3={"addressing_style": "path"}))

    def destination(self, prefix: str) -> dict[str, Any]:
        return {"name": "offsite", "url": f"s3://{self.bucket}/{prefix}",
                "endpoint": self.endpoint, "region": REGION, "forcePathStyle": True,
                "credentials": {"accessKeyId": KEY_VAR, "secretAccessKey": SECRET_VAR}}

    def empty(self) -> None:
        """Delete every object (moto keeps them in memory)."""
        listing = self.client.list_objects_v2(Bucket=self.bucket)
        for obj in listing.get("Contents", ()):
            self.client.delete_object(Bucket=self.bucket, Key=obj["Key"])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def age_recipient(work: Path) -> str:
    if not (shutil.which("age") and shutil.which("age-keygen")):
        raise SystemExit("the offsite cases need the age command (Debian package age)")
    key = work / "key.txt"
    if not key.exists():
        subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    return subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True,
                          text=True).stdout.strip()


# -- encryption throughput (what bench_age.py measured) -----------------------


class NullSink:
    """A downstream sink that only counts: the stage's own cost."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> int:  # an int: pyrage.encrypt_io wants one
        self.size += len(chunk)
        return len(chunk)

    def finish(self) -> list[Any]:
        from pgbackup_server.domain.models import Stored
        return [Stored("bench", self.size, self.h.hexdigest())]

    def abort(self, reason: str) -> None:
        pass


class HashingSink(NullSink):
    """A downstream sink that hashes and drops (a destination without the disk)."""

    def write(self, chunk: bytes) -> int:
        self.h.update(chunk)
        self.size += len(chunk)
        return len(chunk)


class Beside(threading.Thread):
    """Runs ``work`` again and again until stopped: the other backup, or a spinner."""

    def __init__(self, work: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.work = work
        self.stop = threading.Event()
        self.rounds = 0

    def run(self) -> None:
        while not self.stop.is_set():
            self.work()
            self.rounds += 1


def spin() -> None:
    """Pure Python that holds the GIL (a busy request handler, say)."""
    n = 0
    for i in range(10_000):
        n += i * i


def push(recipient: str, mib: int, engine: Any, hashing: bool = False) -> None:
    from pgbackup_server.storage.age import EncryptingSink

    block = os.urandom(MiB)  # incompressible: what a zstd stage hands on
    sink = EncryptingSink([recipient], HashingSink() if hashing else NullSink(), prefer=engine)
    for _ in range(mib):
        sink.write(block)
    sink.finish()


def inprocess_pyrage(recipient: str, mib: int) -> None:
    import pyrage

    class Source(io.RawIOBase):
        def __init__(self) -> None:
            self.left = mib * MiB
            self.block = os.urandom(MiB)

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            n = min(len(b), self.left, MiB)
            b[:n] = self.block[:n]
            self.left -= n
            return n

    pyrage.encrypt_io(io.BufferedReader(Source()), NullSink(),
                      [pyrage.x25519.Recipient.from_str(recipient)])


def encryption_cases(work: Path, recipient: str, backup: Callable[[], Any], mib: int,
                     runs: int, say: Callable[[str], None]) -> dict[str, Any]:
    """MB/s of each case, the median of ``runs``; ``backup`` is one service backup."""
    from pgbackup_server.storage.age import Engine

    plain = work / "plain.bin"
    with plain.open("wb") as f:
        block = os.urandom(MiB)
        for _ in range(mib):
            f.write(block)

    def alone(fn: Callable[[], object]) -> Callable[[], float]:
        def run() -> float:
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
        return run

    def beside(fn: Callable[[], None], other: Callable[[], Any]) -> Callable[[], float]:
        def run() -> float:
            thread = Beside(other)
            thread.start()
            time.sleep(0.5)  # the other backup is under way
            try:
                t0 = time.perf_counter()
                fn()
                return time.perf_counter() - t0
            finally:
                thread.stop.set()
                thread.join()
        return run

    small = max(8, mib // 8)  # in-process pyrage is slow when busy
    cases: dict[str, tuple[int, Callable[[], float]]] = {
        "bare age -r, file to /dev/null": (mib, alone(lambda: subprocess.run(
            ["age", "-r", recipient, "-o", "/dev/null", str(plain)], check=True))),
        "stage (age command), idle": (mib, alone(lambda: push(recipient, mib, Engine.CLI))),
        "stage (age command), next to a backup": (
            mib, beside(lambda: push(recipient, mib, Engine.CLI), backup)),
        "stage (age command) + sha256 downstream, next to a backup": (
            mib, beside(lambda: push(recipient, mib, Engine.CLI, True), backup)),
        "stage (pyrage worker), next to a backup": (
            mib, beside(lambda: push(recipient, mib, Engine.PYTHON), backup)),
        "in-process pyrage.encrypt_io, next to a backup": (
            small, beside(lambda: inprocess_pyrage(recipient, small), backup)),
        "stage (age command), next to a GIL-holding thread": (
            mib, beside(lambda: push(recipient, mib, Engine.CLI), spin)),
        "in-process pyrage.encrypt_io, next to a GIL-holding thread": (
            small, beside(lambda: inprocess_pyrage(recipient, small), spin)),
    }
    mb_per_s: dict[str, float] = {}
    for name, (size, case) in cases.items():
        say(f"encryption: {name}")
        times = [case() for _ in range(runs)]
        mb_per_s[name] = round(size * MiB / statistics.median(times) / 1e6, 1)
    plain.unlink()
    return {"mib_per_case": mib, "mb_per_s": mb_per_s}


# -- the cases ----------------------------------------------------------------


def offsite_cases(root: Path, url: str, binaries: list[Any], runs: int, quick: bool,
                  service: Callable[..., Any], interleaved: Callable[..., dict[str, list[float]]],
                  vm_kb: Callable[[str], int], say: Callable[[str], None]) -> dict[str, Any]:
    """``service(root, url, binaries, extra=…, env=…, **backup)`` is bench.py's Service."""
    root.mkdir(parents=True, exist_ok=True)
    recipient = age_recipient(root)
    result: dict[str, Any] = {"s3": "moto server, child process, loopback"}
    with ExitStack() as stack:  # the moto child and the services, stopped whatever fails
        s3 = MotoProcess()
        stack.callback(s3.stop)
        local = service(root / "svc-local-zst", url, binaries, compressBackup=True)
        stack.callback(local.close)
        remote = service(root / "svc-s3-zst-age", url, binaries, compressBackup=True,
                         extra={"destinations": [s3.destination("zst-age")],
                                "encryption": {"recipients": [recipient]}}, env=CREDS)
        stack.callback(remote.close)
        _measure(s3, local, remote, result, root, url, binaries, runs, quick, service,
                 interleaved, vm_kb, say, recipient)
    return result


def _measure(s3: MotoProcess, local: Any, remote: Any, result: dict[str, Any], root: Path,
             url: str, binaries: list[Any], runs: int, quick: bool,
             service: Callable[..., Any], interleaved: Callable[..., dict[str, list[float]]],
             vm_kb: Callable[[str], int], say: Callable[[str], None], recipient: str) -> None:
    sizes: dict[str, int] = {}

    def one(svc: Any, key: str) -> Callable[[], float]:
        def run() -> float:
            t0 = time.perf_counter()
            r = svc.dump()
            took = time.perf_counter() - t0
            if r.status != "SUCCEEDED":
                raise SystemExit(f"{key} backup failed: {r.error}")
            sizes[key] = r.size_bytes
            if key == "local":
                Path(r.file_path).unlink(missing_ok=True)
            else:
                s3.empty()
            return took
        return run

    say("offsite: compressed + encrypted to S3 vs compressed to a local file")
    times = interleaved({"s3 zstd+age": one(remote, "s3"), "local zstd": one(local, "local")},
                        runs)
    med = {k: statistics.median(v) for k, v in times.items()}
    result["s3 vs local"] = {
        "median_s": {k: round(v, 3) for k, v in med.items()},
        "runs_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "ratio": round(med["s3 zstd+age"] / med["local zstd"], 3),
        "s3_mb": round(sizes["s3"] / MiB, 1), "local_mb": round(sizes["local"] / MiB, 1)}

    say("offsite: peak RSS growth during a plain backup to S3")
    big = service(root / "svc-s3-plain", url, binaries, format="plain",
                  extra={"destinations": [s3.destination("plain")]}, env=CREDS)
    try:
        before = vm_kb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM
        run = big.dump()
        peak = vm_kb("VmHWM")
        if run.status != "SUCCEEDED":
            raise SystemExit(f"plain backup to S3 failed: {run.error}")
        s3.empty()
    finally:
        big.close()
    result["rss to s3"] = {"backup_mb": round(run.size_bytes / MiB, 1),
                           "growth_mb": round(max(0, peak - before) / 1024, 1)}

    def backup() -> None:
        r = local.dump()
        if r.status != "SUCCEEDED":
            raise SystemExit(f"the backup beside the encryption failed: {r.error}")
        Path(r.file_path).unlink(missing_ok=True)

    result["encryption"] = encryption_cases(root, recipient, backup, 64 if quick else 512,
                                            runs, say)
