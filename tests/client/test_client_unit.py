"""Client SDK and CLI tests that need no server."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2

import pgbackup_client
from pgbackup_api.backup.v1 import backup_pb2
from pgbackup_client import (
    Backup,
    BackupClient,
    BackupClientError,
    BackupPage,
    CleanupResult,
    CreateResult,
    DeadlineExceeded,
    FailedPrecondition,
    InternalError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    RunSummary,
    Schedule,
    Stats,
    Unauthenticated,
    Unavailable,
    cli,
    from_rpc_error,
)

T1 = datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
T2 = datetime(2025, 3, 4, 5, 9, 8, tzinfo=UTC)


def _ts(dt: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(dt)
    return ts


def _backup_msg(**overrides: object) -> backup_pb2.Backup:
    fields: dict[str, object] = {
        "id": 42,
        "database": "app",
        "status": backup_pb2.SUCCEEDED,
        "trigger": backup_pb2.SCHEDULE,
        "file_path": "/backups/app-42.dump",
        "size_bytes": 1_258_291,
        "sha256": "ab" * 32,
        "started_at": _ts(T1),
        "finished_at": _ts(T2),
        "duration_seconds": 181.5,
        "schedule": "nightly",
        "backup_dir": "/backups",
        "format": "custom",
        "compression": "zstd:1",
        "pg_dump_version": "18.1",
        "server_version": "18.1",
    }
    fields.update(overrides)
    return backup_pb2.Backup(**fields)  # type: ignore[arg-type]


# --- models -----------------------------------------------------------------


def test_backup_from_proto_maps_enums_and_timestamps() -> None:
    b = Backup.from_proto(_backup_msg())
    assert b.id == 42
    assert b.status == "SUCCEEDED"
    assert b.trigger == "SCHEDULE"
    assert b.started_at == T1
    assert b.started_at is not None and b.started_at.tzinfo is not None
    assert b.started_at.utcoffset() is not None and not b.started_at.utcoffset()
    assert b.finished_at == T2
    # Never set on the wire: None, not the Unix epoch.
    assert b.queued_at is None
    assert b.file_deleted is False and b.file_missing is False


def test_backup_to_dict_is_json_friendly() -> None:
    d = Backup.from_proto(_backup_msg(file_missing=True)).to_dict()
    assert d["started_at"] == "2025-03-04T05:06:07.123456Z"
    assert d["finished_at"] == "2025-03-04T05:09:08Z"
    assert d["queued_at"] is None
    assert d["status"] == "SUCCEEDED"
    assert d["file_missing"] is True
    assert set(d) == {f.name for f in dataclasses.fields(Backup)}
    # Round trip through JSON and back to datetimes.
    again = json.loads(json.dumps(d))
    assert datetime.fromisoformat(again["started_at"]) == T1
    assert datetime.fromisoformat(again["finished_at"]) == T2


def test_backup_unknown_enum_value_is_kept() -> None:
    b = Backup.from_proto(_backup_msg(status=99, trigger=0))
    assert b.status == "99"
    assert b.trigger == "TRIGGER_UNSPECIFIED"


def test_models_are_frozen() -> None:
    b = Backup.from_proto(_backup_msg())
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.id = 1  # type: ignore[misc]


def test_create_result_round_trip() -> None:
    msg = backup_pb2.CreateBackupResponse(
        backup=_backup_msg(status=backup_pb2.PENDING, queued_at=_ts(T1)), deleted_files=3
    )
    r = CreateResult.from_proto(msg)
    assert r.deleted_files == 3
    assert r.backup.status == "PENDING"
    assert r.backup.queued_at == T1
    d = r.to_dict()
    assert d["deleted_files"] == 3
    assert d["backup"]["queued_at"] == "2025-03-04T05:06:07.123456Z"


def test_stats_with_and_without_summaries() -> None:
    msg = backup_pb2.GetStatsResponse(
        total_backups=2,
        total_size_bytes=4096,
        oldest_backup=_ts(T1),
        backup_directory="/backups",
        succeeded_runs=2,
        failed_runs=1,
        running_runs=0,
        last_failure=backup_pb2.RunSummary(id=7, time=_ts(T2), error="pg_dump: boom"),
    )
    st = Stats.from_proto(msg)
    assert st.oldest_backup == T1
    assert st.newest_backup is None
    assert st.last_success is None
    assert st.last_failure == RunSummary(id=7, time=T2, file_path="", error="pg_dump: boom")
    d = st.to_dict()
    assert d["last_success"] is None
    assert d["last_failure"] == {
        "id": 7,
        "time": "2025-03-04T05:09:08Z",
        "file_path": "",
        "error": "pg_dump: boom",
    }
    assert d["newest_backup"] is None
    json.dumps(d)


def test_run_summary_without_time() -> None:
    s = RunSummary.from_proto(backup_pb2.RunSummary(id=1, file_path="/b/x"))
    assert s.time is None
    assert s.to_dict()["time"] is None


def test_cleanup_result_round_trip() -> None:
    msg = backup_pb2.CleanupResponse(
        deleted_files=2, freed_bytes=10, dry_run=True, files=["/b/1", "/b/2"],
        decisions=[backup_pb2.CleanupDecision(backup_id=1, database="shop", destination="local",
                                              location="/b/1", reasons=["kept by no rule"])],
    )
    r = CleanupResult.from_proto(msg)
    assert r.files == ("/b/1", "/b/2")
    assert r.decisions[0].reasons == ("kept by no rule",) and r.decisions[0].keep is False
    assert r.to_dict() == {
        "deleted_files": 2,
        "freed_bytes": 10,
        "dry_run": True,
        "files": ["/b/1", "/b/2"],
        "decisions": [{"backup_id": 1, "database": "shop", "destination": "local",
                       "location": "/b/1", "keep": False, "reasons": ["kept by no rule"]}],
    }


def test_schedule_round_trip() -> None:
    on = Schedule.from_proto(
        backup_pb2.Schedule(
            name="nightly",
            cron="0 3 * * *",
            timezone="UTC",
            enabled=True,
            job="backup",
            next_run_time=_ts(T2),
        )
    )
    off = Schedule.from_proto(backup_pb2.Schedule(name="off", cron="@daily", enabled=False))
    assert on.next_run_time == T2
    assert on.to_dict()["next_run_time"] == "2025-03-04T05:09:08Z"
    assert off.next_run_time is None
    assert off.to_dict()["next_run_time"] is None


def test_backup_page_round_trip() -> None:
    msg = backup_pb2.ListBackupsResponse(
        backups=[_backup_msg(id=2), _backup_msg(id=1)], next_page_token="tok"
    )
    page = BackupPage.from_proto(msg)
    assert [b.id for b in page.backups] == [2, 1]
    assert page.next_page_token == "tok"
    d = page.to_dict()
    assert [b["id"] for b in d["backups"]] == [2, 1]
    assert d["next_page_token"] == "tok"


# --- errors -----------------------------------------------------------------


class _FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
        (grpc.StatusCode.OUT_OF_RANGE, InvalidArgument),
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDenied),
        (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted),
        (grpc.StatusCode.FAILED_PRECONDITION, FailedPrecondition),
        (grpc.StatusCode.UNAVAILABLE, Unavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceeded),
        (grpc.StatusCode.INTERNAL, InternalError),
        (grpc.StatusCode.UNKNOWN, InternalError),
        (grpc.StatusCode.DATA_LOSS, InternalError),
        (grpc.StatusCode.ALREADY_EXISTS, BackupClientError),
        (grpc.StatusCode.UNIMPLEMENTED, BackupClientError),
        (grpc.StatusCode.CANCELLED, BackupClientError),
    ],
)
def test_error_mapping(code: grpc.StatusCode, cls: type[BackupClientError]) -> None:
    err = from_rpc_error(_FakeRpcError(code, "server says no"))
    assert type(err) is cls
    assert isinstance(err, BackupClientError)
    assert err.code == code.name
    assert err.details == "server says no"
    assert str(err) == f"{code.name}: server says no"


def test_error_mapping_without_call_info() -> None:
    err = from_rpc_error(grpc.RpcError("opaque"))
    assert type(err) is BackupClientError
    assert err.code == "UNKNOWN"
    assert err.details == "opaque"


def test_error_classes_default_codes() -> None:
    assert NotFound("x").code == "NOT_FOUND"
    assert str(Unavailable()) == "UNAVAILABLE"


# --- SDK without a server ---------------------------------------------------


def test_token_from_env_becomes_bearer_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUP_TOKEN", "from-env\n")
    with BackupClient("127.0.0.1:1") as c:
        assert c._metadata == (("authorization", "Bearer from-env"),)
        assert "from-env" not in repr(c)
    with BackupClient("127.0.0.1:1", token="explicit") as c:
        assert c._metadata == (("authorization", "Bearer explicit"),)
    monkeypatch.delenv("BACKUP_TOKEN")
    with BackupClient("127.0.0.1:1") as c:
        assert c._metadata is None


def test_list_backups_rejects_unknown_status() -> None:
    with BackupClient("127.0.0.1:1") as c, pytest.raises(ValueError, match="unknown status"):
        c.list_backups(status="bogus")


def test_public_api_exports() -> None:
    for name in pgbackup_client.__all__:
        assert hasattr(pgbackup_client, name)


# --- CLI --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1_258_291, "1.2 MiB"), (5 << 30, "5.0 GiB")],
)
def test_human_size(n: int, text: str) -> None:
    assert cli.human_size(n) == text


def test_token_new(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["token", "new"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    values = dict(line.split(":", 1) for line in lines)
    token = values["token"].strip()
    digest = values["auth.tokenSha256"].strip()
    assert len(token) >= 43
    assert digest == hashlib.sha256(token.encode()).hexdigest()


def test_token_new_json_is_random(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["token", "new", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert cli.main(["--json", "token", "new"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert first["sha256"] == hashlib.sha256(first["token"].encode()).hexdigest()
    assert first["token"] != second["token"]


def test_cli_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["--address", f"127.0.0.1:{_free_port()}", "--timeout", "3", "stats"])
    captured = capsys.readouterr()
    assert rc == 3
    assert captured.err.startswith("error: UNAVAILABLE")
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_cli_entry_point_unreachable_exit_code() -> None:
    # As a separate process: checks the exit status and that no traceback leaks.
    env = dict(os.environ)
    client_root = str(Path(pgbackup_client.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [client_root, env.get("PYTHONPATH")]))
    env.pop("BACKUP_TOKEN", None)
    env["BACKUP_ADDRESS"] = f"127.0.0.1:{_free_port()}"
    proc = subprocess.run(
        [sys.executable, "-m", "pgbackup_client.cli", "--timeout", "3", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr
    assert "error: UNAVAILABLE" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["list", "--status", "bogus"],
        ["show", "not-a-number"],
        ["create-custom"],
        ["--timeout", "-1", "stats"],
        ["token"],
    ],
)
def test_cli_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_cli_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    assert "create-custom" in capsys.readouterr().out


def test_cli_failed_backup_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    failed = CreateResult(
        backup=Backup.from_proto(
            _backup_msg(status=backup_pb2.FAILED, file_path="", error="pg_dump: boom")
        ),
        deleted_files=0,
    )
    seen: dict[str, object] = {}

    def fake_create(self: BackupClient, **kwargs: object) -> CreateResult:
        seen.update(kwargs)
        return failed

    monkeypatch.setattr(BackupClient, "create_backup", fake_create)
    assert cli.main(["--address", "127.0.0.1:1", "create"]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == "error: FAILED: pg_dump: boom"
    assert "status:" in captured.out and "FAILED" in captured.out
    # No deadline on create unless --timeout is given explicitly.
    assert seen == {"background": False, "database": "", "timeout": None, "type": ""}


def test_cli_server_error_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fake_get(self: BackupClient, id: int) -> Backup:
        raise NotFound(f"backup {id} not found")

    monkeypatch.setattr(BackupClient, "get_backup", fake_get)
    assert cli.main(["--address", "127.0.0.1:1", "show", "9"]) == 1
    assert capsys.readouterr().err.strip() == "error: NOT_FOUND: backup 9 not found"


# --- models generated from the proto ------------------------------------------

ROOT = Path(__file__).resolve().parents[2]

# Run against stubs and models generated from a proto with three new Backup fields:
# a real gRPC server (this script's) sends them, the SDK and backupctl read them.
_NEW_FIELD_SCRIPT = r"""
import contextlib, datetime, io, json, sys, typing
from concurrent import futures

import grpc

import pgbackup_api
import pgbackup_client
from pgbackup_api.backup.v1 import backup_pb2 as pb, backup_pb2_grpc as pb_grpc
from pgbackup_client import Backup, cli

tree = sys.argv[1]
assert pgbackup_api.__file__.startswith(tree) and pgbackup_client.__file__.startswith(tree)
msg = pb.Backup(id=7, status=pb.SUCCEEDED, database="app", server_version="18.1",
                offsite_location="s3://vault/app-7.dump", offsite_bytes=2**40)
msg.offsite_at.FromDatetime(datetime.datetime(2025, 3, 4, 5, 6, 7, tzinfo=datetime.UTC))
hints = typing.get_type_hints(Backup)
b = Backup.from_proto(msg)


class Servicer(pb_grpc.BackupServiceServicer):
    def GetBackup(self, request, context):
        return msg


server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
pb_grpc.add_BackupServiceServicer_to_server(Servicer(), server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
outputs = {}
for name, argv in {"text": ["show", "7"], "json": ["--json", "show", "7"]}.items():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["--address", f"127.0.0.1:{port}", *argv])
    outputs[name] = (code, out.getvalue())
server.stop(None)
print(json.dumps({
    "hints": {k: str(hints[k]) for k in ("offsite_location", "offsite_bytes", "offsite_at")},
    "read": [b.offsite_location, b.offsite_bytes, b.offsite_at.isoformat()],
    "to_dict": b.to_dict(),
    "outputs": outputs,
}))
"""


def _gen_proto() -> object:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_new_backup_field_needs_no_hand_edit(tmp_path: Path) -> None:
    """A field added to backup.v1.Backup reaches the SDK model (typed), from_proto,
    to_dict and `backupctl show` by regenerating alone: the hand-written client
    code is copied unchanged next to the regenerated stubs and models."""
    import shutil

    proto = tmp_path / "proto"
    shutil.copytree(ROOT / "proto", proto)
    path = proto / "backup" / "v1" / "backup.proto"
    text = path.read_text()
    start = text.index("message Backup {")
    end = text.index("\n}\n", start)  # the end of message Backup
    path.write_text(text[:end] + (
        "\n  // Where the file was copied off-site.\n"
        "  string offsite_location = 901;\n"
        "  int64 offsite_bytes = 902;\n"
        "  google.protobuf.Timestamp offsite_at = 903;"
    ) + text[end:])
    tree = tmp_path / "tree"
    hand_written = ROOT / "client" / "pgbackup_client"
    shutil.copytree(hand_written, tree / "client" / "pgbackup_client",
                    ignore=shutil.ignore_patterns("__pycache__"))
    gen: Any = _gen_proto()
    gen.generate_stubs(tree, proto_root=proto)
    gen.generate_models(tree, proto_root=proto)

    models = (tree / gen.MODELS_OUT).read_text()
    assert "    # Where the file was copied off-site.\n    offsite_location: str = \"\"\n" in models
    assert models != (ROOT / gen.MODELS_OUT).read_text()
    for original in hand_written.rglob("*.py"):
        if original.name != "models.py":
            copy = tree / "client" / "pgbackup_client" / original.relative_to(hand_written)
            assert copy.read_bytes() == original.read_bytes()

    env = {k: v for k, v in os.environ.items() if k not in ("BACKUP_TOKEN", "BACKUP_ADDRESS")}
    env["PYTHONPATH"] = str(tree / "client")
    proc = subprocess.run([sys.executable, "-c", _NEW_FIELD_SCRIPT, str(tree)], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["hints"] == {"offsite_location": "<class 'str'>",
                               "offsite_bytes": "<class 'int'>",
                               "offsite_at": "datetime.datetime | None"}
    assert result["read"] == ["s3://vault/app-7.dump", 2**40, "2025-03-04T05:06:07+00:00"]
    d = result["to_dict"]
    assert d["offsite_location"] == "s3://vault/app-7.dump"
    assert d["offsite_bytes"] == 2**40  # a number, as the other int64 fields
    assert d["offsite_at"] == "2025-03-04T05:06:07Z"
    assert list(d)[-3:] == ["offsite_location", "offsite_bytes", "offsite_at"]

    code, text_out = result["outputs"]["text"]
    assert code == 0
    lines = text_out.splitlines()
    keys = [line.split(":", 1)[0] for line in lines]
    assert "offsite location:      s3://vault/app-7.dump" in lines
    assert "offsite bytes:         1.0 TiB (1099511627776 bytes)" in lines
    assert "offsite at:            2025-03-04 05:06:07 UTC" in lines
    # Known fields first, as before; new ones after.
    assert keys[:3] == ["id", "status", "trigger"]
    assert keys.index("server version") < keys.index("offsite location")
    code, json_out = result["outputs"]["json"]
    assert code == 0 and json.loads(json_out) == d


def test_to_dict_matches_the_proto3_json_of_the_message() -> None:
    """to_dict is json_format's rendering, with int64 as numbers and unset
    timestamps/messages as None; field names as in the proto."""
    from google.protobuf import json_format

    msg = backup_pb2.CreateBackupResponse(
        backup=_backup_msg(size_bytes=2**53 + 1), deleted_files=2,
        backups=[_backup_msg(id=1), _backup_msg(id=2, status=7)],
    )
    d = CreateResult.from_proto(msg).to_dict()
    wire = json_format.MessageToDict(msg, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)
    assert d["backup"]["size_bytes"] == 2**53 + 1 and wire["backup"]["size_bytes"] == str(2**53 + 1)
    assert d["backup"]["queued_at"] is None and "queued_at" not in wire["backup"]
    assert d["backups"][1]["status"] == "7"
    assert d["backup"]["started_at"] == wire["backup"]["started_at"]
    assert d["backup"]["started_at"] == "2025-03-04T05:06:07.123456Z"
    for key in ("file_path", "sha256", "duration_seconds", "compression"):
        assert d["backup"][key] == wire["backup"][key]
    # A model built by hand converts as well; defaults read as an empty message does.
    assert Backup() == Backup.from_proto(backup_pb2.Backup())
    assert CreateResult().to_dict()["backup"]["status"] == "BACKUP_STATUS_UNSPECIFIED"


def test_from_proto_refuses_another_message() -> None:
    with pytest.raises(TypeError, match="needs a backup.v1.Backup"):
        Backup.from_proto(backup_pb2.RunSummary())


def test_cli_styles_a_terminal_only() -> None:
    """On a terminal (a real pty) the key/value block is styled; into a pipe it is
    plain text, without colour codes or trailing blanks."""
    import pty

    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env["TERM"] = "xterm-256color"
    argv = [sys.executable, "-m", "pgbackup_client.cli", "token", "new"]
    master, slave = pty.openpty()
    try:
        subprocess.run(argv, stdout=slave, stderr=subprocess.DEVNULL, env=env, timeout=60,
                       check=True)
    finally:
        os.close(slave)
    data = b""
    try:
        while chunk := os.read(master, 4096):
            data += chunk
    except OSError:  # EIO: the terminal's other side is closed and drained
        pass
    finally:
        os.close(master)
    assert b"\x1b[1mtoken:" in data

    piped = subprocess.run(argv, capture_output=True, env=env, timeout=60, check=True)
    lines = piped.stdout.decode().splitlines()
    assert b"\x1b" not in piped.stdout
    assert [line.split(":", 1)[0] for line in lines] == ["token", "auth.tokenSha256"]
    assert all(line == line.rstrip() for line in lines)
