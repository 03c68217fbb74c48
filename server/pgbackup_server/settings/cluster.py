"""``cluster:``: several backupd replicas sharing one PostgreSQL store."""

from __future__ import annotations

import os
import socket

from pydantic import StrictBool, StrictInt, field_validator

from .fields import Duration, Section, Text, problem, setting


def default_node_name() -> str:
    """``<host name>-<pid>``: unique per process, readable in GetCluster."""
    return f"{socket.gethostname()}-{os.getpid()}"


class ClusterConfig(Section):
    enabled: StrictBool = setting(False, expected="true or false")
    node_name: Text | None = setting(None, alias="nodeName",
                                     expected="a name for this replica, unique in the cluster")
    lease_timeout_seconds: Duration = setting(15.0, alias="leaseTimeout",
                                              expected='a duration such as "15s"')
    max_per_server: StrictInt = setting(
        0, alias="maxPerServer",
        expected="an integer from 0 (backup.maxConcurrent) to 1024", ge=0, le=1024)

    @field_validator("lease_timeout_seconds")
    @classmethod
    def _lease(cls, seconds: float) -> float:
        if not 1 <= seconds <= 3600:
            raise problem(f"expected a duration from 1s to 1h, got {seconds:g}s; heartbeats "
                          "are sent every third of it")
        return seconds

    @field_validator("node_name")
    @classmethod
    def _name(cls, name: str | None) -> str | None:
        if name is not None and len(name) > 255:
            raise problem("expected at most 255 characters")
        return name

    @property
    def node(self) -> str:
        return self.node_name or default_node_name()


def cluster_problems(cluster: ClusterConfig, store_url: str | None) -> list[str]:
    """A cluster needs a store every replica can reach and lock: PostgreSQL."""
    if not cluster.enabled:
        return []
    scheme = (store_url or "sqlite").split(":", 1)[0].split("+", 1)[0].lower()
    if scheme in ("postgresql", "postgres"):
        return []
    shown = "the default SQLite file" if not store_url else f"a {scheme} URL"
    return [f"cluster.enabled: a cluster needs a PostgreSQL store shared by every replica, "
            f"but store.url is {shown}; set store.url to postgresql+psycopg://user@host/db, "
            "or set cluster.enabled to false"]
