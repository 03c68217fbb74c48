"""cluster: in config.yaml, and the store a cluster needs: PostgreSQL, at a schema
this backupd knows. Refusals are clear and come before anything runs."""

from __future__ import annotations

import socket
from pathlib import Path

import psycopg
import pytest
from replicas import store_database

from pgbackup_server.domain.errors import ConfigError
from pgbackup_server.persistence import open_store
from pgbackup_server.settings import build_settings

DB = {"url": "postgresql://u@127.0.0.1:5432/app"}


def settings(**sections):
    return build_settings({"database": DB, **sections}, base=Path("/tmp"), env={})


def test_cluster_defaults_and_node_name():
    s = settings(cluster={"enabled": True, "leaseTimeout": "20s"},
                 store={"url": "postgresql+psycopg://u@db/store"})
    assert s.cluster.enabled and s.cluster.lease_timeout_seconds == 20
    assert s.cluster.node.startswith(f"{socket.gethostname()}-")
    assert settings().cluster.enabled is False
    assert settings().cluster.lease_timeout_seconds == 15


def test_sqlite_with_a_cluster_is_refused_naming_the_fix():
    for store in ({}, {"url": "sqlite:////var/lib/backupd/store.sqlite3"}):
        with pytest.raises(ConfigError) as info:
            settings(cluster={"enabled": True}, store=store)
        message = info.value.message
        assert "cluster.enabled: a cluster needs a PostgreSQL store" in message
        assert "set store.url to postgresql+psycopg://" in message


@pytest.mark.parametrize("value", ["0s", "2h", "soon"])
def test_a_bad_lease_is_refused(value):
    with pytest.raises(ConfigError) as info:
        settings(cluster={"enabled": False, "leaseTimeout": value})
    assert "cluster.leaseTimeout:" in info.value.message


def test_a_replica_finding_a_newer_schema_refuses_to_start(pg):
    url, conninfo = store_database(pg)
    open_store(url).close()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099'")
    with pytest.raises(ConfigError) as info:
        open_store(url)
    assert info.value.message.startswith("store.url:")
    assert "written by a newer backupd (schema revision 0099" in info.value.message


def test_get_cluster_on_a_single_backupd_says_disabled(start_app):
    running = start_app(envoy=False)
    with running.client() as client:
        view = client.get_cluster()
    assert view.enabled is False and not view.nodes


def test_replicas_starting_together_on_a_new_store_migrate_it_once(pg):
    """Each opens the store at the same moment: one migrates under the lock, the
    others wait for its commit and find the schema made (no second migration)."""
    from concurrent.futures import ThreadPoolExecutor

    url, conninfo = store_database(pg)
    with ThreadPoolExecutor(max_workers=4) as pool:
        stores = list(pool.map(lambda _: open_store(url), range(4)))
    for store in stores:
        store.close()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)
