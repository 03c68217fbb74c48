"""Hostile input: random and malformed values to the config loader, to every
request's validation, and random JSON bodies to every REST path."""

from __future__ import annotations

import json
import string
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgbackup_api.backup.v1 import backup_pb2 as pb
from pgbackup_api.backup.v1 import backup_pb2_grpc as pb_grpc
from pgbackup_server.domain.errors import ConfigError
from pgbackup_server.settings import build_settings

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True), st.text(max_size=40),
    st.text(alphabet=string.printable + "\x00\udcff", max_size=300),
    st.sampled_from(["..", "../../etc", "/", "\x00", "0 2 * * *", "6h", "-1", "UTC",
                     "postgresql://u:p@h/db", "x" * 5000]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=10)
KEYS = {
    "database": ["url"],
    "backup": ["enabled", "directory", "retentionDays", "cleanupOld", "compressBackup",
               "allowedDirectories", "pgDumpPath", "format", "compression", "timeout",
               "maxConcurrent", "maxQueued", "retentionMinKeep", "verify"],
    "scheduler": ["timezone", "misfireGraceTime"],
    "server": ["grpcAddress", "httpAddress", "envoy", "envoyAdminPort", "shutdownGrace",
               "dataDirectory", "tls"],
    "store": ["url"], "log": ["level", "format"], "auth": ["tokenSha256",
                                                          "allowUnauthenticated"],
    "metrics": ["enabled", "address"], "alerts": ["maxAge", "checkInterval"],
}


@st.composite
def configs(draw):
    raw: dict = {"database": {"url": "postgresql://u@localhost/db"}}
    for section in draw(st.lists(st.sampled_from(sorted(KEYS)), max_size=4)):
        sec = raw.setdefault(section, {})
        for key in draw(st.lists(st.sampled_from(KEYS[section]), min_size=1, max_size=3)):
            sec[key] = draw(values)
    if draw(st.booleans()):
        raw["schedules"] = draw(st.one_of(values, st.lists(st.dictionaries(
            st.sampled_from(["cron", "job", "isEnabled", "name", "bogus"]), values),
            max_size=3)))
    if draw(st.booleans()):
        raw["notifications"] = draw(st.one_of(values, st.lists(st.dictionaries(
            st.sampled_from(["type", "events", "url", "to", "host", "retries"]), values),
            max_size=2)))
    if draw(st.booleans()):
        raw[draw(st.text(max_size=8))] = draw(values)
    return draw(st.one_of(st.just(raw), values))


@SETTINGS
@given(raw=configs())
def test_config_loader_never_crashes(raw, tmp_path):
    try:
        build_settings(raw, base=tmp_path, env={})
    except ConfigError as exc:
        assert exc.message.startswith("invalid configuration") or ":" in exc.message
        assert "Traceback" not in exc.message


text_inputs = st.one_of(
    st.text(max_size=50), st.sampled_from(["", "..", "../../..", "/etc", "/\x00x", "~",
                                           "/" + "a" * 5000, "relative/dir", "\udcff"]))
ints = st.integers(min_value=-(2**31), max_value=2**31 - 1)
ALLOWED = {"INVALID_ARGUMENT", "PERMISSION_DENIED", "NOT_FOUND", "RESOURCE_EXHAUSTED",
           "FAILED_PRECONDITION"}


@pytest.fixture(scope="module")
def hostile_stack(pg, tmp_path_factory):
    """One backupd for all the hostile-input examples (no Envoy needed for gRPC)."""
    from conftest import base_config

    from pgbackup_server.app import App

    root = tmp_path_factory.mktemp("hostile")
    cfg = base_config(pg, root)
    cfg["backup"]["maxQueued"] = 0
    app = App(build_settings(cfg, base=root, env={}))
    app.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{app.grpc_port}")
    yield app, pb_grpc.BackupServiceStub(channel), root
    channel.close()
    app.stop()


def _utf8(text: str) -> str:
    """Protobuf strings are UTF-8 by contract: the client library refuses lone
    surrogates before sending (non-UTF-8 over REST is covered below)."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _call(fn, request):
    try:
        fn(request, timeout=30)
    except grpc.RpcError as err:
        assert err.code().name in ALLOWED, (err.code(), err.details())
        assert "Traceback" not in (err.details() or "")
        return err.code().name
    return "OK"


@SETTINGS
@given(backup_dir=text_inputs, retention=ints, cleanup=st.booleans())
def test_create_custom_validation(hostile_stack, backup_dir, retention, cleanup):
    app, stub, _ = hostile_stack
    if backup_dir.startswith(str(app.settings.backup.directory)):
        return  # inside the root: a real backup, not validation
    req = pb.CreateCustomBackupRequest(backup_dir=_utf8(backup_dir), retention_days=retention,
                                       cleanup_old=cleanup, background=True)
    assert _call(stub.CreateCustomBackup, req) != "OK"
    assert not Path("relative").exists()


CONTROL = [chr(c) for c in (*range(0x20), 0x7F, 0x85, 0x9B)] + ["\u2028", "\u2029"]


@SETTINGS
@given(char=st.sampled_from(CONTROL), prefix=st.text(alphabet=string.ascii_letters, max_size=8))
def test_control_characters_inside_the_root_are_refused(hostile_stack, char, prefix):
    """Inside the allowed root too: a path or name with a control character is refused
    before anything is created or run."""
    app, stub, _ = hostile_stack
    root = app.settings.backup.directory
    req = pb.CreateCustomBackupRequest(backup_dir=f"{root}/{prefix}{char}x", background=True)
    assert _call(stub.CreateCustomBackup, req) == "INVALID_ARGUMENT"
    assert _call(stub.CreateBackup, pb.CreateBackupRequest(database=f"shop{char}",
                                                           background=True)) \
        == "INVALID_ARGUMENT"
    assert _call(stub.ListBackups, pb.ListBackupsRequest(database=f"{prefix}{char}")) \
        == "INVALID_ARGUMENT"
    assert not root.exists() or not [p for p in root.iterdir() if char in p.name]
    assert stub.ListBackups(pb.ListBackupsRequest(), timeout=30).backups == []


@SETTINGS
@given(run_id=st.integers(min_value=-(2**63), max_value=2**63 - 1),
       page_size=ints, token=text_inputs, status=st.integers(0, 10),
       database=st.text(max_size=20))
def test_query_validation(hostile_stack, run_id, page_size, token, status, database):
    _, stub, _ = hostile_stack
    _call(stub.GetBackup, pb.GetBackupRequest(id=run_id))
    _call(stub.ListBackups, pb.ListBackupsRequest(page_size=page_size, page_token=_utf8(token),
                                                  status=status, database=_utf8(database)))
    _call(stub.Cleanup, pb.CleanupRequest(dry_run=True))


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
              st.text(max_size=30)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=10), inner, max_size=3)),
    max_leaves=8)
FIELDS = ["backup_dir", "retention_days", "cleanup_old", "background", "dry_run", "page_size",
          "page_token", "status", "database", "id"]
bodies = st.one_of(json_values, st.dictionaries(st.sampled_from(FIELDS), json_values,
                                                max_size=4)).map(json.dumps)
REST = [("POST", "/api/v1/backup/create-custom"), ("POST", "/api/v1/backup/cleanup"),
        ("GET", "/api/v1/backup/stats"), ("GET", "/api/v1/backups"),
        ("GET", "/api/v1/backups/1"), ("GET", "/api/v1/schedules"),
        ("POST", "/api/v1/backup/create")]


def test_rest_fuzz_never_500(start_app):
    stack = start_app(backup={"maxQueued": 0, "maxConcurrent": 1})
    seen: list[int] = []

    @settings(max_examples=40, deadline=None, derandomize=True)
    @given(route=st.sampled_from(REST), body=bodies,
           query=st.dictionaries(st.sampled_from(FIELDS + ["x"]), st.text(max_size=10),
                                 max_size=2))
    def fuzz(route, body, query):
        method, path = route
        qs = urllib.parse.urlencode(query)
        url = f"{stack.http}{path}" + (f"?{qs}" if qs else "")
        req = urllib.request.Request(url, data=body.encode() if method == "POST" else None,
                                     method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                code = resp.status
        except urllib.error.HTTPError as err:
            code = err.code
            err.close()
        seen.append(code)
        assert code < 500, (method, url, body, code)

    import urllib.parse

    fuzz()
    assert stack.rest("GET", "/api/v1/backup/stats")[0] == 200  # still serving
    assert 400 in seen and 200 in seen


def test_non_utf8_and_nul_over_rest(stack):
    for raw in (b'{"backup_dir": "/tmp/\xff\xfe"}', b'{"backup_dir": "/tmp/\\u0000x"}',
                b"\xff\xff", b'{"retention_days": 99999999999999999999}'):
        req = urllib.request.Request(f"{stack.http}/api/v1/backup/create-custom", data=raw,
                                     method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                code = resp.status
        except urllib.error.HTTPError as err:
            code = err.code
            err.close()
        assert 400 <= code < 500, (raw, code)
    assert stack.rest("GET", "/api/v1/backup/stats")[0] == 200
