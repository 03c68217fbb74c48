"""``backupd --demo``: an embedded PostgreSQL with sample data, and a config for it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from .domain.errors import ConfigError
from .postgres.embedded import EmbeddedPostgres, seed_sample
from .settings.fields import text

# Started servers, stopped by main() however the rest goes.
SERVERS: list[Any] = []


def _address(value: str) -> str:
    host, sep, port = text(value).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("not HOST:PORT")
    return value


# --demo's listeners: the defaults of server.grpcAddress, server.httpAddress and
# metrics.address unless these are set (HOST:PORT), e.g. to run two demos.
DEMO_ADDRESS_ENV = {"BACKUPD_DEMO_GRPC_ADDRESS": ("server", "grpcAddress"),
                    "BACKUPD_DEMO_HTTP_ADDRESS": ("server", "httpAddress"),
                    "BACKUPD_DEMO_METRICS_ADDRESS": ("metrics", "address")}


def demo_config(root: Path) -> Path:
    """Start an embedded PostgreSQL with sample data and write a config for it."""

    addresses: dict[tuple[str, str], str] = {}
    for var, key in DEMO_ADDRESS_ENV.items():
        if value := os.environ.get(var):
            try:
                addresses[key] = _address(value)
            except ValueError:
                raise ConfigError(f"{var}={value!r}: expected HOST:PORT, "
                                  f"e.g. 127.0.0.1:8001") from None
    pg = EmbeddedPostgres(root / "postgres", password="demo-password", port=0)
    print(f"backupd --demo: PostgreSQL runs as {pg.runs_as}; its data: {pg.pgdata}",
          file=sys.stderr)
    SERVERS.append(pg)  # stopped by main() however the rest goes
    pg.start()
    exists = pg.psql("SELECT 1 FROM pg_database WHERE datname = 'my_db'").strip()
    if not exists:
        seed_sample(pg, "my_db")
    # JSON strings are YAML strings: the values cannot break out of their line.
    listeners = "".join(f"  {name}: {json.dumps(value)}\n"
                        for (section, name), value in addresses.items() if section == "server")
    if ("metrics", "address") in addresses:
        listeners += f"metrics:\n  address: {json.dumps(addresses['metrics', 'address'])}\n"
    path = root / "config.yaml"
    path.write_text(f"""# Written by backupd --demo; the database is an embedded PostgreSQL.
database:
  url: "{pg.url('my_db')}"
backup:
  enabled: true
  directory: backups
  retentionDays: 30
  cleanupOld: true
  compressBackup: false
  # The seed's create-custom example writes here.
  allowedDirectories: ["/custom/backup/path"]
scheduler:
  timezone: UTC
schedules:
  - name: nightly
    cron: "0 2 * * *"
    job: DatabaseBackup
    isEnabled: true
server:
  dataDirectory: data
{listeners}""")
    path.chmod(0o600)
    return path
