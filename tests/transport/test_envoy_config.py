"""The Envoy template, the checked-in envoy/envoy.yaml and the EnvoyProcess supervisor."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from pgbackup_server.transport.envoy import (
    DESCRIPTOR_PATH,
    EnvoyProcess,
    EnvoySpec,
    TlsFiles,
    render_config,
    rest_guard_code,
)

ROOT = Path(__file__).resolve().parents[2]
CHECKED_IN = ROOT / "envoy" / "envoy.yaml"


def _free_port() -> int:
    # Racy in principle (the port is released before Envoy binds it), fine for tests.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _render(**overrides: Any) -> str:
    kwargs: dict[str, Any] = {
        "http_host": "127.0.0.1",
        "http_port": 8000,
        "grpc_host": "127.0.0.1",
        "grpc_port": 50051,
        "descriptor": DESCRIPTOR_PATH,
        "admin_port": 9901,
        **overrides,
    }
    return render_config(EnvoySpec(**kwargs))


def _gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (reaped, or a zombie nobody reaps)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not _gone(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def test_generated_files_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/gen_proto.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_checked_in_config_validates() -> None:
    # Its descriptor path (envoy/backup.pb) is relative to the repository root.
    ok, output = EnvoyProcess.validate(CHECKED_IN, cwd=ROOT)
    assert ok, output


def test_rendered_config_validates(tmp_path: Path) -> None:
    config = tmp_path / "envoy.yaml"
    config.write_text(_render())
    ok, output = EnvoyProcess.validate(config)
    assert ok, output


def test_bogus_descriptor_is_rejected(tmp_path: Path) -> None:
    config = tmp_path / "envoy.yaml"
    config.write_text(_render(descriptor=tmp_path / "missing.pb"))
    ok, output = EnvoyProcess.validate(config)
    assert not ok
    assert "missing.pb" in output


def test_render_quotes_strings_and_picks_cluster_type(tmp_path: Path) -> None:
    odd = tmp_path / 'we"ird $dir {x}: y' / "backup.pb"
    odd.parent.mkdir()
    shutil.copyfile(DESCRIPTOR_PATH, odd)
    text = _render(descriptor=odd, grpc_host="localhost")
    data = yaml.safe_load(text)
    listener = data["static_resources"]["listeners"][0]
    assert "transport_socket" not in listener["filter_chains"][0]
    assert data["static_resources"]["clusters"][0]["type"] == "STRICT_DNS"
    assert yaml.safe_load(_render())["static_resources"]["clusters"][0]["type"] == "STATIC"
    v6 = yaml.safe_load(_render(http_host="[::1]"))["static_resources"]["listeners"][0]
    assert v6["address"]["socket_address"] == {"address": "::1", "port_value": 8000}
    # The odd path reaches Envoy intact: it loads the descriptor from there.
    config = tmp_path / "envoy.yaml"
    config.write_text(text)
    ok, output = EnvoyProcess.validate(config)
    assert ok, output


@pytest.mark.parametrize(
    "overrides",
    [
        {"http_port": 0},
        {"grpc_port": 70000},
        {"admin_port": True},
        {"http_host": "localhost"},
        {"grpc_host": ""},
    ],
)
def test_render_rejects_bad_values(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        _render(**overrides)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_tls_config_validates(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
        + ["-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=t"],
        check=True,
        capture_output=True,
    )
    for client_ca in (None, str(cert)):
        text = _render(tls=TlsFiles(cert=str(cert), key=str(key), client_ca=client_ca))
        assert "DownstreamTlsContext" in text
        assert ("require_client_certificate: true" in text) == (client_ca is not None)
        config = tmp_path / "envoy.yaml"
        config.write_text(text)
        ok, output = EnvoyProcess.validate(config)
        assert ok, output


def _envoy(tmp_path: Path) -> EnvoyProcess:
    admin_port = _free_port()
    # Nothing listens on the gRPC port: Envoy starts and answers /ready anyway.
    config = _render(http_port=_free_port(), grpc_port=_free_port(), admin_port=admin_port)
    return EnvoyProcess(config, tmp_path / "run", admin_port)


@pytest.mark.slow
def test_envoy_process_start_ready_stop(tmp_path: Path) -> None:
    envoy = _envoy(tmp_path)
    envoy.start()
    try:
        envoy.wait_ready(timeout=10)
        assert envoy.running
        pid = envoy.pid
        assert pid is not None
        assert envoy.config_path.stat().st_mode & 0o777 == 0o600
    finally:
        code = envoy.stop()
    assert code == 0, envoy.log_tail()
    assert not envoy.running
    assert envoy.poll() == 0
    assert _gone(pid)


@pytest.mark.slow
def test_wait_ready_reports_early_exit(tmp_path: Path) -> None:
    admin_port = _free_port()
    config = _render(
        descriptor=tmp_path / "missing.pb", admin_port=admin_port, http_port=_free_port()
    )
    envoy = EnvoyProcess(config, tmp_path / "run", admin_port)
    envoy.start()
    try:
        with pytest.raises(RuntimeError, match="missing.pb"):
            envoy.wait_ready(timeout=10)
    finally:
        envoy.stop()


@pytest.mark.slow
def test_envoy_dies_with_its_supervisor(tmp_path: Path) -> None:
    admin_port = _free_port()
    config = tmp_path / "envoy.yaml"
    config.write_text(
        _render(http_port=_free_port(), grpc_port=_free_port(), admin_port=admin_port)
    )
    # A supervisor that exits without stopping Envoy, as if it had been killed.
    script = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        from pgbackup_server.transport.envoy import EnvoyProcess
        config = Path({str(config)!r}).read_text()
        envoy = EnvoyProcess(config, Path({str(tmp_path)!r}), {admin_port})
        envoy.start()
        envoy.wait_ready(10)
        print(envoy.pid, flush=True)
        os._exit(0)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "server")}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    pid = int(result.stdout)
    if not _wait_gone(pid):
        os.kill(pid, 9)  # ours: started by the script above
        pytest.fail("envoy outlived its supervisor")


def _gen_proto() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rest_allow_list_follows_the_proto(tmp_path: Path) -> None:
    # The allow-list in rest_api.lua comes from the descriptor alone: a field or
    # an RPC added to the proto is known to the REST check after regeneration.
    gen = _gen_proto()
    proto = (ROOT / "proto" / "backup" / "v1" / "backup.proto").read_text()
    proto = proto.replace(
        "message RestoreBackupRequest {\n",
        "message RestoreBackupRequest {\n  bool force_it = 99;\n  repeated int64 ids = 98;\n",
    ).replace(
        "service BackupService {\n",
        'service BackupService {\n  rpc Ping(GetStatsRequest) returns (GetStatsResponse) {\n'
        '    option (google.api.http) = {put: "/api/v1/ping/{database}:now" body: "*"};\n  }\n',
    )
    (tmp_path / "backup" / "v1").mkdir(parents=True)
    (tmp_path / "backup" / "v1" / "backup.proto").write_text(proto)
    out = tmp_path / "set.pb"
    gen._protoc([f"-I{tmp_path}", f"-I{gen._googleapis_root()}",
                 f"--descriptor_set_out={out}", "--include_imports", "backup/v1/backup.proto"])
    lua = gen.rest_api_lua(out.read_bytes())
    assert '{name = "force_it", json = "forceIt", type = "bool"}' in lua
    assert '{name = "ids", json = "ids", type = "int64", repeated = true}' in lua
    assert 'template = "/api/v1/ping/{database}:now"' in lua
    assert 'segments = {"api", "v1", "ping", {var = "database"}}' in lua
    assert 'verb = "now"' in lua
    # The checked-in allow-list is this generator's output for the real proto.
    assert gen.rest_api_lua(DESCRIPTOR_PATH.read_bytes()) == (
        ROOT / "server" / "pgbackup_server" / "transport" / "envoy" / "rest_api.lua").read_text()


def test_rest_guard_is_in_the_rendered_config() -> None:
    text = _render()
    assert "envoy.filters.http.lua" in text
    assert "local API = {" in text and "function envoy_on_request(handle)" in text
    # The Lua code arrives in Envoy's configuration exactly as written.
    filters = yaml.safe_load(text)["static_resources"]["listeners"][0]["filter_chains"][0][
        "filters"][0]["typed_config"]["http_filters"]
    lua = next(f for f in filters if f["name"] == "envoy.filters.http.lua")
    assert lua["typed_config"]["default_source_code"]["inline_string"] == rest_guard_code()
