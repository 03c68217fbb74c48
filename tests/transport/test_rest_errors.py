"""REST errors look like the API: every error through Envoy is JSON
{"code", "message", "details"} with the right HTTP status; unknown or
mistyped body fields and query parameters are refused before anything runs,
naming the field; a wrong method is 405 with Allow; input is never echoed raw.

Against a real Envoy: with backupd (``stack``), and, for the many edge cases
of the request check, one Envoy whose upstream is down, where a request that
passes the check (and the transcoder) comes back as 503 UNAVAILABLE."""

from __future__ import annotations

import http.client
import json
import random
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgbackup_client import NotFound
from pgbackup_server.transport.envoy import (
    DESCRIPTOR_PATH,
    EnvoyProcess,
    EnvoySpec,
    render_config,
)

CANARY = b"CANARY-7f3a"
# gRPC codes of the error bodies, by HTTP status.
CODES = {400: 3, 404: 5, 405: 12, 413: 8, 503: 14}
CREATE_CUSTOM_FIELDS = "backup_dir, retention_days, cleanup_old, background, database"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(port: int, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request; returns (status, headers, raw body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def error_body(status: int, headers: http.client.HTTPMessage, raw: bytes) -> dict[str, Any]:
    """The JSON error body, checked for the API's error shape and code."""
    assert headers.get("content-type") == "application/json", (status, headers, raw)
    body = json.loads(raw)
    assert set(body) == {"code", "message", "details"}, body
    assert body["details"] == []
    assert body["code"] == CODES[status], (status, body)
    return body


def _port(stack: Any) -> int:
    return int(stack.app.http_port)


# ---------------------------------------------------------------------------
# Through Envoy and backupd: the cases named in the issue.

ISSUE_CASES = [
    pytest.param("POST", "/api/v1/backup/create-custom", b'{"backup_dir": "/x", "retention', 400,
                 "malformed JSON body", id="malformed-json"),
    pytest.param("POST", "/api/v1/backup/create-custom", b'{"backup_dir": 123}', 400,
                 'field "backup_dir": expected a string, got 123', id="wrong-type"),
    pytest.param("POST", "/api/v1/backup/create-custom", b'{"cleanup_old": "yes"}', 400,
                 'field "cleanup_old": expected true or false, got "yes"', id="cleanup-old-yes"),
    pytest.param("POST", "/api/v1/backup/create-custom",
                 b'{"backup_dir": "/x", "retention_day": 60}', 400,
                 f'unknown field "retention_day" in the request body; known fields: '
                 f"{CREATE_CUSTOM_FIELDS}", id="unknown-field"),
    pytest.param("GET", "/api/v1/backup/stats?bogus=1", None, 400,
                 'unknown query parameter "bogus"; known parameters: database',
                 id="unknown-query-parameter"),
    pytest.param("GET", "/api/v1/nope", None, 404, "no REST method for GET /api/v1/nope",
                 id="unknown-path"),
    pytest.param("DELETE", "/api/v1/backup/stats", None, 405,
                 "method DELETE is not allowed on /api/v1/backup/stats; allowed: GET",
                 id="wrong-method"),
    pytest.param("GET", "/api/v1/backup/create", None, 405,
                 "method GET is not allowed on /api/v1/backup/create; allowed: POST",
                 id="wrong-method-post-path"),
]


@pytest.mark.slow
def test_errors_are_json_and_nothing_runs(stack):
    port = _port(stack)
    for case in ISSUE_CASES:
        method, path, body, status, message = case.values
        got, headers, raw = call(port, method, path, body)
        assert got == status, (case.id, got, raw)
        err = error_body(got, headers, raw)
        assert message in err["message"], (case.id, err)
        if status == 405:
            assert headers.get("allow") == message.rsplit(" ", 1)[1]
    # Refused before anything ran: no run recorded, no file written.
    assert stack.client().list_backups().backups == ()
    assert not stack.backup_dir.exists() or list(stack.backup_dir.iterdir()) == []


@pytest.mark.slow
def test_random_bytes_are_never_echoed(stack):
    port = _port(stack)
    rng = random.Random(9)
    bodies = [
        b"\xff\xfe" + CANARY + rng.randbytes(300),
        CANARY + b" is not JSON",
        b'{"backup_dir": "' + CANARY + b"\x00\x01",
        b'{"' + CANARY + b'\xc3\x28": 1}',
        b'{"backup_dir": "/x", "' + CANARY + b'<script>": 1}',
        b'{"cleanup_old": "' + CANARY * 10 + b'"}',
        rng.randbytes(4096),
    ]
    for body in bodies:
        status, headers, raw = call(port, "POST", "/api/v1/backup/create-custom", body)
        assert status == 400, raw
        err = error_body(status, headers, raw)
        assert CANARY.decode() not in err["message"], err
        assert CANARY not in raw
        assert all(ord(c) < 128 for c in err["message"]), err
    # Query parameter names are quoted only when they look like field names.
    status, headers, raw = call(port, "GET",
                                f"/api/v1/backup/stats?{CANARY.decode()}%3Cscript%3E=1")
    assert status == 400 and CANARY not in raw, raw
    status, headers, raw = call(port, "GET", f"/api/v1/backup/stats?database=%FF{CANARY.decode()}")
    assert status == 400 and CANARY not in raw, raw
    assert stack.client().list_backups().backups == ()


@pytest.mark.slow
def test_valid_requests_work_with_both_spellings(stack):
    port = _port(stack)
    target = stack.backup_dir / "camel"
    for fields in ({"backupDir": str(target), "retentionDays": 60, "cleanupOld": True},
                   {"backup_dir": str(target), "retention_days": "60", "cleanup_old": False,
                    "background": False, "database": ""}):
        status, _, raw = call(port, "POST", "/api/v1/backup/create-custom",
                              json.dumps(fields).encode(), {"Content-Type": "application/json"})
        assert status == 200, raw
        backup = json.loads(raw)["backup"]
        assert backup["status"] == "SUCCEEDED" and backup["backup_dir"] == str(target)
    for body in (None, b"", b"{}", b'{"dryRun": true}', b'{"dry_run": true}'):
        status, _, raw = call(port, "POST", "/api/v1/backup/cleanup", body)
        assert status == 200, (body, raw)
        assert json.loads(raw)["dry_run"] is (body is not None and b"true" in body)
    status, _, raw = call(port, "GET", "/api/v1/backups?pageSize=1&page_token=&status=SUCCEEDED")
    assert status == 200, raw
    assert len(json.loads(raw)["backups"]) == 1
    status, _, raw = call(port, "GET", "/api/v1/backup/stats?database=shop")
    assert status == 200 and int(json.loads(raw)["total_backups"]) == 2


@pytest.mark.slow
def test_native_grpc_through_envoy_is_untouched(stack):
    # The same listener serves gRPC: no REST check, and errors stay gRPC statuses.
    from pgbackup_client import BackupClient

    with BackupClient(f"127.0.0.1:{_port(stack)}") as client:
        assert client.get_stats().total_backups == 0
        with pytest.raises(NotFound, match="backup 424242 not found"):
            client.get_backup(424242)


@pytest.mark.slow
def test_backend_errors_keep_their_shape(stack):
    # Errors from backupd itself come through the transcoder unchanged.
    status, headers, raw = call(_port(stack), "GET", "/api/v1/backups/424242")
    assert status == 404
    assert error_body(status, headers, raw)["message"] == "backup 424242 not found"


# ---------------------------------------------------------------------------
# One Envoy without backupd: what the request check lets through reaches the
# (absent) upstream and comes back 503; what it refuses is 400/404/405.


def _start_envoy(tmp: Path, rest_guard: str | None = None,
                 grpc_port: int | None = None) -> tuple[EnvoyProcess, int]:
    http_port, admin_port = _free_port(), _free_port()
    config = render_config(EnvoySpec(
        http_host="127.0.0.1", http_port=http_port, grpc_host="127.0.0.1",
        grpc_port=grpc_port or _free_port(),  # default: nothing there
        descriptor=DESCRIPTOR_PATH, admin_port=admin_port, rest_guard=rest_guard))
    envoy = EnvoyProcess(config, tmp, admin_port)
    envoy.start()
    try:
        envoy.wait_ready(timeout=15)
    except BaseException:
        envoy.stop()
        raise
    return envoy, http_port


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    envoy, port = _start_envoy(tmp_path_factory.mktemp("envoy"))
    yield port
    envoy.stop()


PASSES = [
    ("POST", "/api/v1/backup/create", None),
    ("POST", "/api/v1/backup/create", b""),
    ("POST", "/api/v1/backup/create", b"{}"),
    ("POST", "/api/v1/backup/create", b' \r\n\t{ "background" : false , "database":"shop" }\n'),
    ("POST", "/api/v1/backup/create-custom",
     b'{"backup_dir": "/x", "retention_days": 60, "cleanup_old": true, "background": false,'
     b' "database": ""}'),
    ("POST", "/api/v1/backup/create-custom",
     b'{"backupDir": "/x", "retentionDays": "60", "cleanupOld": false}'),
    ("POST", "/api/v1/backup/create-custom", b'{"retention_days": -1}'),  # range: backupd's call
    ("POST", "/api/v1/backup/create-custom", b'{"retention_days": "2147483647"}'),
    ("POST", "/api/v1/backup/create-custom", b'{"retention_days": null, "backup_dir": null}'),
    ("POST", "/api/v1/backup/create", '{"database": "日本 \\u00e9\\ud83d\\ude00 \\"q\\" \\\\ \\/"}'
     .encode()),
    ("POST", "/api/v1/backup/cleanup", b'{"dry\\u005frun": true}'),
    ("POST", "/api/v1/backup/cleanup?dry_run=true", None),
    ("POST", "/api/v1/backups/12:verify", b'{"deep": true}'),
    ("POST", "/api/v1/backups/12:restore",
     b'{"target_database": "x", "overwrite": true, "schemas": [], "tables": ["a", "s.t"],'
     b' "jobs": 4, "background": true}'),
    ("POST", "/api/v1/backups/12:restore", b'{"targetDatabase": "x", "jobs": "4"}'),
    ("GET", "/api/v1/backup/stats", None),
    ("GET", "/api/v1/backup/stats/", None),
    ("GET", "/api/v1/backups?status=FAILED&page_size=10&pageToken=abc&database=shop", None),
    ("GET", "/api/v1/backups?status=4&database=a+b%20c", None),
    ("GET", "/api/v1/backups/12", None),
    ("GET", "/api/v1/backups/-3", None),
    ("GET", "/api/v1/backups/12:watch", None),
    ("GET", "/api/v1/backups/12/contents", None),
    ("GET", "/api/v1/restores/3", None),
    ("GET", "/api/v1/schedules", None),
]


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path", "body"), PASSES)
def test_valid_requests_pass_the_check(gateway, method, path, body):
    status, headers, raw = call(gateway, method, path, body)
    assert status == 503, raw  # reached the upstream: neither check nor transcoder refused
    assert "upstream connect error" in error_body(status, headers, raw)["message"]


REFUSED = [
    # Body fields
    ("POST", "/api/v1/backup/create-custom", b'{"retention_day": 5}', 400,
     f'unknown field "retention_day" in the request body; known fields: {CREATE_CUSTOM_FIELDS}'),
    ("POST", "/api/v1/backup/create-custom", b'{"cleanup_old": "true"}', 400,
     'field "cleanup_old": expected true or false, got "true"'),
    ("POST", "/api/v1/backup/create-custom", b'{"cleanup_old": 1}', 400,
     'field "cleanup_old": expected true or false, got 1'),
    ("POST", "/api/v1/backup/create-custom", b'{"retention_days": "abc"}', 400,
     'field "retention_days": expected an integer, got "abc"'),
    ("POST", "/api/v1/backup/create-custom", b'{"retention_days": 60.5}', 400,
     'field "retention_days": expected an integer, got 60.5'),
    ("POST", "/api/v1/backup/create-custom", b'{"retention_days": true}', 400,
     'field "retention_days": expected an integer, got true'),
    ("POST", "/api/v1/backup/create-custom", b'{"retentionDays": 2147483648}', 400,
     'field "retention_days": 2147483648 is out of range for a 32-bit integer'),
    ("POST", "/api/v1/backup/create-custom", b'{"backup_dir": ["a"]}', 400,
     'field "backup_dir": expected a string, got an array'),
    ("POST", "/api/v1/backup/create-custom", b'{"backup_dir": {"a": 1}}', 400,
     'field "backup_dir": expected a string, got an object'),
    ("POST", "/api/v1/backups/1:restore", b'{"tables": "a"}', 400,
     'field "tables": expected an array of strings, got "a"'),
    ("POST", "/api/v1/backups/1:restore", b'{"tables": ["a", 5]}', 400,
     'field "tables" item 2: expected a string, got 5'),
    ("POST", "/api/v1/backups/1:restore", b'{"tables": ["a", null]}', 400,
     'field "tables" item 2: expected a string, got null'),
    ("POST", "/api/v1/backups/1:restore", b'{"jobs": "4x"}', 400,
     'field "jobs": expected an integer, got "4x"'),
    ("POST", "/api/v1/backup/cleanup", b'{"dryRun": true, "dry_run": false}', 400,
     'field "dry_run" is given twice in the request body (as "dryRun" and "dry_run")'),
    ("POST", "/api/v1/backup/cleanup?dry_run=true", b'{"dry_run": true}', 400,
     'field "dry_run" is given both as a query parameter and in the body'),
    ("POST", "/api/v1/backups/1:verify", b'{"id": 7}', 400,
     'field "id" is given by the path (/api/v1/backups/{id}:verify); remove it from the body'),
    ("POST", "/api/v1/backup/cleanup", b'{"": 1}', 400,
     "unknown field (a name of 0 bytes, not shown) in the request body; known fields: dry_run"),
    ("POST", "/api/v1/backup/cleanup", b'{"<b>x</b>": 1}', 400,
     "unknown field (a name of 8 bytes, not shown)"),
    ("POST", "/api/v1/backup/cleanup", b"[]", 400,
     "the request body must be a JSON object, got an array"),
    ("POST", "/api/v1/backup/cleanup", b"null", 400,
     "the request body must be a JSON object, got null"),
    ("POST", "/api/v1/backup/cleanup", b'"x"', 400,
     'the request body must be a JSON object, got "x"'),
    # Malformed JSON
    ("POST", "/api/v1/backup/cleanup", b'{"dry_run": true,}', 400,
     "malformed JSON body: expected a string key at byte 18"),
    ("POST", "/api/v1/backup/cleanup", b"{'dry_run': true}", 400,
     "malformed JSON body: expected a string key at byte 2"),
    ("POST", "/api/v1/backup/cleanup", b'{"dry_run": tru}', 400,
     "malformed JSON body: expected a value at byte 13"),
    ("POST", "/api/v1/backup/cleanup", b'{"dry_run": true', 400,
     "malformed JSON body: expected ',' or '}' at byte 17"),
    ("POST", "/api/v1/backup/cleanup", b'{"dry_run" true}', 400,
     "malformed JSON body: expected ':' after an object key at byte 12"),
    ("POST", "/api/v1/backup/create-custom", b'{"retention_days": 01}', 400,
     "malformed JSON body: expected ',' or '}' at byte 21"),
    ("POST", "/api/v1/backup/create-custom", b'{"retention_days": +1}', 400,
     "malformed JSON body: expected a value"),
    ("POST", "/api/v1/backup/create-custom", b'{"retention_days": NaN}', 400,
     "malformed JSON body: expected a value"),
    ("POST", "/api/v1/backup/create-custom", b'{"retention_days": 1.}', 400,
     "malformed JSON body: invalid number"),
    ("POST", "/api/v1/backup/create", b'{"database": "a\x01"}', 400,
     "malformed JSON body: unescaped control character in a string at byte 16"),
    ("POST", "/api/v1/backup/create", b'{"database": "\\q"}', 400,
     "malformed JSON body: invalid escape in a string"),
    ("POST", "/api/v1/backup/create", b'{"database": "\\u12"}', 400,
     "malformed JSON body: invalid \\u escape"),
    ("POST", "/api/v1/backup/create", b'{"database": "\\ud800x"}', 400,
     "malformed JSON body: unpaired surrogate in a \\u escape"),
    ("POST", "/api/v1/backup/create", b'{"database": "open}', 400,
     "malformed JSON body: unterminated string at byte 14"),
    ("POST", "/api/v1/backup/create", b"{} {}", 400,
     "malformed JSON body: unexpected data after the JSON value at byte 4"),
    ("POST", "/api/v1/backup/create", b" \n ", 400,
     "malformed JSON body: only whitespace; send a JSON object (or no body at all)"),
    ("POST", "/api/v1/backup/create", b"[" * 100 + b"]" * 100, 400,
     "malformed JSON body: nesting deeper than 64 levels"),
    ("POST", "/api/v1/backup/create", b'{"database": "\xc0\xaf"}', 400,
     "malformed JSON body: invalid UTF-8 at byte 15"),
    ("POST", "/api/v1/backup/create", b'{"database": "\xed\xa0\x80"}', 400,
     "malformed JSON body: invalid UTF-8 at byte 15"),
    ("POST", "/api/v1/backup/create", b'{"database": "\xe6\x97"}', 400,
     "malformed JSON body: invalid UTF-8 at byte 15"),
    ("POST", "/api/v1/backup/create", b'{"database": "\xf4\x90\x80\x80"}', 400,
     "malformed JSON body: invalid UTF-8 at byte 15"),
    # Query and path parameters
    ("GET", "/api/v1/backup/stats?_=123", None, 400,
     'unknown query parameter "_"; known parameters: database'),
    ("GET", "/api/v1/schedules?x=1", None, 400,
     'unknown query parameter "x"; known parameters: none'),
    ("GET", "/api/v1/backups?page_size=abc", None, 400,
     'query parameter "page_size": expected an integer, got "abc"'),
    ("GET", "/api/v1/backups?page_size=1&pageSize=2", None, 400,
     'query parameter "page_size" is given twice'),
    ("GET", "/api/v1/backups?status=BOGUS", None, 400,
     'query parameter "status": expected one of BACKUP_STATUS_UNSPECIFIED, PENDING, RUNNING,'
     ' SUCCEEDED, FAILED, got "BOGUS"'),
    ("GET", "/api/v1/backups/12?id=3", None, 400,
     'query parameter "id" is given by the path (/api/v1/backups/{id}); remove it'),
    ("GET", "/api/v1/backups/abc", None, 400,
     'path parameter "id": expected an integer, got "abc"'),
    ("GET", "/api/v1/backups/99999999999999999999", None, 400,
     'path parameter "id": "99999999999999999999" is out of range for a 64-bit integer'),
    # Paths and methods
    ("GET", "/", None, 404, "no REST method for GET /"),
    ("GET", "/api/v1/backups/12/nope", None, 404, "no REST method for GET /api/v1/backups/12/nope"),
    ("POST", "/backup.v1.BackupService/GetStats", b"{}", 404,
     "no REST method for POST /backup.v1.BackupService/GetStats"),
    ("POST", "/api/v1/backups/12", None, 405,
     "method POST is not allowed on /api/v1/backups/{id}; allowed: GET"),
    ("GET", "/api/v1/backups/12:verify", None, 405,
     "method GET is not allowed on /api/v1/backups/{id}:verify; allowed: POST"),
    ("PUT", "/api/v1/backups/12:restore", b"{}", 405,
     "method PUT is not allowed on /api/v1/backups/{id}:restore; allowed: POST"),
    ("OPTIONS", "/api/v1/backup/cleanup", None, 405,
     "method OPTIONS is not allowed on /api/v1/backup/cleanup; allowed: POST"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path", "body", "status", "message"), REFUSED)
def test_bad_requests_are_refused_naming_the_problem(gateway, method, path, body, status,
                                                     message):
    got, headers, raw = call(gateway, method, path, body)
    assert got == status, raw
    assert message in error_body(got, headers, raw)["message"], raw
    if status == 405:
        assert headers.get("allow") == message.rsplit(" ", 1)[1]


@pytest.mark.slow
def test_large_body_is_413_json(gateway):
    status, headers, raw = call(gateway, "POST", "/api/v1/backup/create",
                                b'{"database": "' + b"x" * (2 << 20) + b'"}')
    assert status == 413
    assert "too large" in error_body(status, headers, raw)["message"]


@pytest.mark.slow
def test_unhealthy_healthz_is_json(gateway):
    status, headers, raw = call(gateway, "GET", "/healthz")
    assert status == 503
    assert "not serving" in error_body(status, headers, raw)["message"]


@pytest.mark.slow
def test_envoy_errors_without_the_check_are_json_and_not_echoed(tmp_path):
    # Second line of defence: were a request to get past rest_guard.lua, the
    # transcoder's own errors (which quote the input) still come back as JSON
    # with a fixed message. The transcoder sends the headers upstream while it
    # parses the body: an upstream that takes connections but never answers
    # lets its error win the race.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        envoy, port = _start_envoy(tmp_path, rest_guard="function envoy_on_request(handle) end",
                                   grpc_port=silent.getsockname()[1])
        try:
            for body in (b'{"backup_dir": "' + CANARY, CANARY,
                         b'{"backup_dir": 5, "x": "' + CANARY):
                status, headers, raw = call(port, "POST", "/api/v1/backup/create-custom", body)
                assert status == 400, raw
                assert "bad request" in error_body(status, headers, raw)["message"]
                assert CANARY not in raw
            status, headers, raw = call(port, "GET", "/api/v1/" + CANARY.decode())
            assert status == 404 and CANARY not in raw
            error_body(status, headers, raw)
        finally:
            envoy.stop()


def test_an_error_quoting_a_huge_value_is_still_a_json_400(stack):
    """backupd's own message quotes the value; it is clipped, so Envoy still relays it."""
    status, body = stack.rest("POST", "/api/v1/backup/create", {"database": "x" * 200_000})
    assert status == 400, body
    assert isinstance(body, dict) and body["code"] == 3
    assert len(body["message"]) <= 2000 and body["message"].startswith("database:")
