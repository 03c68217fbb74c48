"""Access control: bearer tokens, safe defaults, TLS on gRPC and REST."""

from __future__ import annotations

import hashlib
import io
import json
import ssl
import subprocess
import sys
import urllib.error
import urllib.request

import grpc
import pytest
import yaml
from certs import make_pki
from conftest import base_config
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pgbackup_client import BackupClient, Unauthenticated
from pgbackup_client.cli import main as backupctl
from pgbackup_server.domain.errors import ConfigError
from pgbackup_server.settings import build_settings
from pgbackup_server.settings.exposure import check_exposure
from pgbackup_server.transport.grpc.auth import check_bearer, token_digest

TOKEN = "tok-" + "x" * 40
DIGEST = hashlib.sha256(TOKEN.encode()).hexdigest()


def http(url: str, *, method: str = "GET", token: str | None = None,
         context: ssl.SSLContext | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(url, method=method, headers=headers,
                                 data=b"{}" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=60, context=context) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read().decode()


def test_check_bearer():
    assert check_bearer(f"Bearer {TOKEN}", [DIGEST]) == DIGEST
    assert check_bearer(f"bearer {TOKEN}", ["0" * 64, DIGEST]) == DIGEST
    for bad in (None, "", TOKEN, f"Basic {TOKEN}", "Bearer ", f"Bearer {TOKEN}x"):
        assert check_bearer(bad, [DIGEST]) is None
    assert token_digest(TOKEN) == DIGEST


def test_tokens_guard_rest_and_grpc_but_not_health(start_app, monkeypatch):
    stack = start_app(auth={"tokenSha256": [DIGEST]})
    stats = f"{stack.http}/api/v1/backup/stats"
    code, body = http(stats)
    assert code == 401 and "bearer token" in json.loads(body)["message"]
    assert http(stats, token="wrong-token")[0] == 401
    assert http(stats, token=TOKEN)[0] == 200
    assert http(f"{stack.http}/api/v1/backup/create", method="POST")[0] == 401

    with BackupClient(stack.grpc_address) as anonymous, pytest.raises(Unauthenticated):
        anonymous.get_stats()
    with BackupClient(stack.grpc_address, token=TOKEN) as client:
        assert client.get_stats().total_backups == 0
    monkeypatch.setenv("BACKUP_TOKEN", TOKEN)
    with BackupClient(stack.grpc_address) as client:
        assert client.list_schedules() == []
    # The CLI takes the token from the environment too.
    assert backupctl(["--address", stack.grpc_address, "stats"]) == 0
    monkeypatch.delenv("BACKUP_TOKEN")
    assert backupctl(["--address", stack.grpc_address, "stats"]) == 1

    with grpc.insecure_channel(stack.grpc_address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                         timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_backupctl_token_new_is_accepted_by_the_server(start_app, capsys):
    assert backupctl(["token", "new", "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    stack = start_app(auth={"tokenSha256": [made["sha256"]]})
    with BackupClient(stack.grpc_address, token=made["token"]) as client:
        assert client.get_stats().failed_runs == 0


@pytest.mark.parametrize("address", ["0.0.0.0:50051", "192.0.2.10:50051", "[::]:50051",
                                     "backup.example.com:50051"])
def test_refuses_to_listen_beyond_loopback_without_tokens(pg, tmp_path, address):
    cfg = base_config(pg, tmp_path)
    cfg["server"]["grpcAddress"] = address
    with pytest.raises(ConfigError, match="refusing to listen") as info:
        check_exposure(build_settings(cfg, base=tmp_path, env={}))
    assert "auth.tokenSha256" in info.value.message
    cfg["auth"] = {"allowUnauthenticated": True}
    check_exposure(build_settings(cfg, base=tmp_path, env={}))
    cfg["auth"] = {"tokenSha256": [DIGEST]}
    check_exposure(build_settings(cfg, base=tmp_path, env={}))


def test_backupd_exits_when_exposed_without_tokens(pg, tmp_path):
    cfg = base_config(pg, tmp_path)
    cfg["server"]["httpAddress"] = "0.0.0.0:0"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run([sys.executable, "-m", "pgbackup_server", "--config", str(path)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    assert "server.httpAddress: refusing to listen on 0.0.0.0:0" in out.stderr


def test_bad_token_digest_is_a_config_error(pg, tmp_path):
    cfg = base_config(pg, tmp_path)
    cfg["auth"] = {"tokenSha256": [TOKEN]}  # the token, not its digest
    with pytest.raises(ConfigError, match="auth.tokenSha256: expected a list of 64-character"):
        build_settings(cfg, base=tmp_path, env={})


def test_tls_on_grpc_and_rest_with_client_certificates(start_app, tmp_path):
    pki = make_pki(tmp_path / "pki")
    stack = start_app(server={"tls": {"cert": str(pki.server_cert), "key": str(pki.server_key),
                                      "clientCa": str(pki.ca)}},
                      auth={"tokenSha256": [DIGEST]})
    https = f"https://127.0.0.1:{stack.app.http_port}/api/v1/backup/stats"
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        http(https, token=TOKEN, context=ctx)  # no client certificate
    ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    code, body = http(https, token=TOKEN, context=ctx)
    assert code == 200 and "total_backups" in body
    assert http(https, context=ctx)[0] == 401  # TLS does not replace the token

    creds = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(), private_key=pki.client_key.read_bytes(),
        certificate_chain=pki.client_cert.read_bytes())
    with grpc.secure_channel(f"localhost:{stack.app.grpc_port}", creds) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                         timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    # Clear text is refused on the TLS port.
    with grpc.insecure_channel(stack.grpc_address) as channel, pytest.raises(grpc.RpcError):
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)


def test_tls_server_only_with_sdk(start_app, tmp_path):
    pki = make_pki(tmp_path / "pki")
    stack = start_app(server={"tls": {"cert": str(pki.server_cert), "key": str(pki.server_key)}})
    with BackupClient(f"localhost:{stack.app.grpc_port}", tls_ca=pki.ca) as client:
        assert client.create_backup().backup.status == "SUCCEEDED"
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    assert http(f"https://localhost:{stack.app.http_port}/api/v1/backup/stats",
                context=ctx)[0] == 200


def test_missing_tls_files_are_named(pg, tmp_path):
    cfg = base_config(pg, tmp_path)
    cfg["server"]["tls"] = {"cert": str(tmp_path / "nope.pem")}
    with pytest.raises(ConfigError) as info:
        build_settings(cfg, base=tmp_path, env={})
    assert "server.tls.cert: file not found" in info.value.message
    assert "server.tls.key: required" in info.value.message


def test_tokens_never_reach_the_logs(start_app):
    from pgbackup_server.observability import logs

    buf = io.StringIO()
    logs.configure("debug", "console", stream=buf)
    try:
        stack = start_app(auth={"tokenSha256": [DIGEST]})
        http(f"{stack.http}/api/v1/backup/stats", token="wrong-" + TOKEN)
        http(f"{stack.http}/api/v1/backup/create", method="POST", token=TOKEN)
    finally:
        logs.configure("info", "console")
    text = buf.getvalue()
    assert "Database backup completed successfully" in text
    assert TOKEN not in text and DIGEST not in text
