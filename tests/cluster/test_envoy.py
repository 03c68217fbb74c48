"""envoy/cluster.example.yaml in front of three replicas: REST and gRPC reach every
replica through it, GET /api/v1/cluster lists them, and a replica killed with
SIGKILL leaves the rotation while the API keeps answering."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import yaml
from replicas import cluster, rows, store_database, tiny, wait_for  # noqa: F401

from pgbackup_client import BackupClient
from pgbackup_server.postgres.embedded import free_port
from pgbackup_server.transport.envoy import EnvoyProcess

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "envoy" / "cluster.example.yaml"


def example_for(upstreams: list[int], http: int, grpc: int, admin: int) -> str:
    """The checked-in example with this test's ports, and loopback for its host names."""
    config = yaml.safe_load(EXAMPLE.read_text())
    config["admin"]["address"]["socket_address"]["port_value"] = admin
    for listener, port in zip(config["static_resources"]["listeners"], (http, grpc),
                              strict=True):
        listener["address"]["socket_address"].update(address="127.0.0.1", port_value=port)
    backupd = config["static_resources"]["clusters"][0]
    assert backupd["health_checks"][0]["grpc_health_check"] == {}
    endpoints = backupd["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"]["socket_address"]["address"] for e in endpoints] == [
        "backupd-1", "backupd-2", "backupd-3"]
    for endpoint, port in zip(endpoints, upstreams, strict=True):
        endpoint["endpoint"]["address"]["socket_address"].update(address="127.0.0.1",
                                                                  port_value=port)
    backupd["type"] = "STATIC"
    text = yaml.safe_dump(config, sort_keys=False)
    return text.replace("envoy/backup.pb", str(ROOT / "envoy" / "backup.pb"))


def rest(port: int, method: str, path: str) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                     data=b"{}" if method == "POST" else None,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read() or b"{}")


def test_envoy_example_balances_rest_and_grpc_over_replicas(pg, tiny, cluster, tmp_path):  # noqa: F811
    url, store = store_database(pg)
    trio = cluster(3, store=url, backup={"maxConcurrent": 2, "maxQueued": 100},
                   max_per_server=6)
    http, grpc, admin = free_port(), free_port(), free_port()
    envoy = EnvoyProcess(example_for([int(r.grpc_address.rsplit(":", 1)[1]) for r in trio],
                                     http, grpc, admin), tmp_path / "envoy", admin)
    envoy.start()
    try:
        envoy.wait_ready(timeout=20)
        status, view = rest(http, "GET", "/api/v1/cluster")
        assert status == 200 and view["enabled"] is True
        assert sorted(n["name"] for n in view["nodes"]) == ["node-0", "node-1", "node-2"]
        answered = set()
        for _ in range(12):  # REST requests land on every replica, round robin
            status, body = rest(http, "POST", "/api/v1/backup/create")
            assert status == 200, body
            answered.add(rest(http, "GET", "/api/v1/cluster")[1]["node"])
        assert answered == {"node-0", "node-1", "node-2"}
        with BackupClient(f"127.0.0.1:{grpc}") as client:  # gRPC through Envoy
            assert len(client.get_cluster().nodes) == 3
            trio[1].kill()
            started = time.monotonic()
            # Every call keeps answering: a dead replica's connections are refused,
            # retried on another, and it leaves the rotation.
            for _ in range(10):
                assert client.get_stats().total_backups >= 12
            assert {rest(http, "GET", "/api/v1/cluster")[1]["node"]
                    for _ in range(6)} <= {"node-0", "node-2"}
            assert time.monotonic() - started < 15
    finally:
        envoy.stop()
