"""What backupd wires together, seen from outside: verify, restore and contents
through Envoy, metrics on metrics.address, and /healthz."""

from __future__ import annotations

import urllib.request

from conftest import DB, drop_database, table_fingerprint


def test_verify_restore_and_contents_through_envoy(pg, start_app):
    stack = start_app(backup={"format": "custom"})
    run = stack.rest("POST", "/api/v1/backup/create")[1]["backup"]

    status, quick = stack.rest("POST", f"/api/v1/backups/{run['id']}:verify", {})
    assert status == 200 and quick["verification"] == "OK", quick
    status, deep = stack.rest("POST", f"/api/v1/backups/{run['id']}:verify", {"deep": True})
    assert status == 200 and deep["verification"] == "OK", deep
    rows = {(t["schema"], t["table"]): int(t["rows"]) for t in deep["tables"]}
    assert rows[("public", "orders")] == 5000
    shown = stack.rest("GET", f"/api/v1/backups/{run['id']}")[1]
    assert shown["verification"] == "OK" and shown["verified_at"]
    assert int(stack.rest("GET", "/api/v1/backup/stats")[1]["verified_backups"]) == 1

    status, contents = stack.rest("GET", f"/api/v1/backups/{run['id']}/contents")
    assert status == 200
    tables = {(e["schema"], e["name"]) for e in contents["entries"] if e["kind"] == "TABLE"}
    assert {("public", "orders"), ("public", "customers")} <= tables

    target = "wired_restore"
    drop_database(pg, target)
    try:
        status, restored = stack.rest("POST", f"/api/v1/backups/{run['id']}:restore",
                                      {"target_database": target})
        assert status == 200 and restored["status"] == "SUCCEEDED", restored
        assert table_fingerprint(pg, target) == table_fingerprint(pg, DB)
        status, again = stack.rest("POST", f"/api/v1/backups/{run['id']}:restore",
                                   {"target_database": target})
        assert status == 400 and target in again["message"]  # exists: needs overwrite
        got = stack.rest("GET", f"/api/v1/restores/{restored['id']}")[1]
        assert got["target_database"] == target and got["requested_by"]
    finally:
        drop_database(pg, target)


def test_metrics_and_healthz_are_served(start_app):
    stack = start_app()
    stack.client().create_backup()
    port = stack.app.metrics_port
    assert port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    assert f'backup_runs_total{{database="{DB}",status="succeeded",trigger="manual"}} 1.0' \
        in text
    assert "backup_last_success_age_seconds" in text
    assert stack.rest("GET", "/healthz")[0] == 200


def test_reflection_lists_the_services(stack):
    import grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(stack.grpc_address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (reply,) = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    names = {s.name for s in reply.list_services_response.service}
    assert {"backup.v1.BackupService", "grpc.health.v1.Health"} <= names
    # The descriptor comes with it, so grpcurl works without the proto file.
    with grpc.insecure_channel(stack.grpc_address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="backup.v1.BackupService")
        (reply,) = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    assert reply.file_descriptor_response.file_descriptor_proto


def test_plain_partial_restore_and_risky_targets_through_envoy(pg, start_app):
    """A plain backup (the default format) restores one table; a view without its
    table is a 400; overwriting the live source or postgres needs force."""
    from pgbackup_server.postgres.embedded import seed_sample

    live, target = "wired_live", "wired_partial"
    for name in (live, target):
        drop_database(pg, name)
    seed_sample(pg, live)
    try:
        stack = start_app(database={"url": pg.url(live)})
        run = stack.rest("POST", "/api/v1/backup/create")[1]["backup"]
        assert run["file_path"].endswith(".sql"), run
        restore = f"/api/v1/backups/{run['id']}:restore"

        status, restored = stack.rest("POST", restore, {"target_database": target,
                                                         "tables": ["customers"]})
        assert status == 200 and restored["status"] == "SUCCEEDED", restored
        source = table_fingerprint(pg, live)
        assert table_fingerprint(pg, target) == {"public.customers": source["public.customers"]}
        assert pg.psql("SELECT last_value FROM public.customers_id_seq", target).strip() == \
            "1000"

        status, body = stack.rest("POST", restore, {"target_database": "wired_never",
                                                    "tables": ["order_totals"]})
        assert status == 400 and body["message"] == (
            "tables: view public.order_totals needs table public.orders; add it to tables "
            "(or restore schema public)"), body

        pg.psql("DELETE FROM orders WHERE id > 10", live)
        changed = table_fingerprint(pg, live)
        for request, what in (
                ({"target_database": live, "overwrite": True}, "the live database"),
                ({"target_database": live, "overwrite": True, "tables": ["orders"]},
                 "the live database"),
                ({"target_database": "postgres", "overwrite": True}, "maintenance database")):
            status, body = stack.rest("POST", restore, request)
            assert status == 400 and what in body["message"], body
            assert "set force: true (backupctl restore --force)" in body["message"]
        assert table_fingerprint(pg, live) == changed  # refused: nothing touched
        assert "postgres" in pg.psql("SELECT datname FROM pg_database")

        status, body = stack.rest("POST", restore, {"target_database": live, "overwrite": True,
                                                    "tables": ["orders"], "force": True})
        assert status == 200 and body["status"] == "SUCCEEDED", body
        assert table_fingerprint(pg, live) == source
    finally:
        for name in (live, target, "wired_never"):
            drop_database(pg, name)


def test_metrics_are_served_through_envoy_on_the_rest_listener(start_app):
    """No separate port is needed: /metrics answers on server.httpAddress."""
    stack = start_app(metrics={"address": None})
    assert stack.app.metrics_port == 0  # metrics.address is off by default
    stack.client().create_backup()
    status, text = stack.rest("GET", "/metrics")
    assert status == 200, text
    assert f'backup_runs_total{{database="{DB}",status="succeeded",trigger="manual"}} 1.0' \
        in text
    status, body = stack.rest("GET", "/metrics?x=1")  # a scraper's parameters do no harm
    assert status == 200


def test_metrics_through_envoy_need_the_token_when_tokens_are_set(start_app):
    import hashlib

    token = "metrics-token-1"
    stack = start_app(metrics={"address": None},
                      auth={"tokenSha256": [hashlib.sha256(token.encode()).hexdigest()]})
    status, body = stack.rest("GET", "/metrics")
    assert status == 401 and body["code"] == 16 and "bearer token" in body["message"]
    request = urllib.request.Request(stack.http + "/metrics",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200 and b"backup_healthy 1.0" in resp.read()
