"""Progress: WatchBackup streams events until the run ends, over gRPC and REST."""

from __future__ import annotations

import json
import threading
import urllib.request

import grpc
from conftest import DB
from procs import lock_orders, wait_for

from pgbackup_api.backup.v1 import backup_pb2 as pb
from pgbackup_api.backup.v1 import backup_pb2_grpc as pb_grpc


def test_watch_streams_until_the_run_ends(pg, stack):
    lock = lock_orders(pg.admin_conninfo(DB))
    run = stack.client().create_backup(background=True).backup
    wait_for(lambda: stack.client().get_backup(run.id).status == "RUNNING")
    events: list[pb.BackupProgress] = []

    def watch() -> None:
        with grpc.insecure_channel(stack.grpc_address) as channel:
            stub = pb_grpc.BackupServiceStub(channel)
            events.extend(stub.WatchBackup(pb.WatchBackupRequest(id=run.id), timeout=60))

    t = threading.Thread(target=watch)
    t.start()
    wait_for(lambda: events)  # a first event arrives while the run is held
    assert events[0].status == pb.RUNNING and not events[0].HasField("backup")
    assert events[0].estimated_total_bytes > 0  # from pg_database_size
    lock.close()
    t.join(60)
    last = events[-1]
    assert last.status == pb.SUCCEEDED and last.backup.id == run.id
    assert last.bytes_written > 0 and last.backup.bytes_written == last.bytes_written
    assert last.bytes_written >= last.backup.size_bytes  # plain: what pg_dump wrote


def test_watch_over_rest_is_a_json_stream(stack):
    run = stack.client().create_backup().backup
    url = f"{stack.http}/api/v1/backups/{run.id}:watch"
    with urllib.request.urlopen(url, timeout=60) as resp:
        body = json.loads(resp.read())
    assert isinstance(body, list) and body[-1]["status"] == "SUCCEEDED"
    assert body[-1]["backup"]["file_path"] == run.file_path
    code = None
    try:
        urllib.request.urlopen(f"{stack.http}/api/v1/backups/987654:watch", timeout=60)
    except urllib.error.HTTPError as err:
        code = err.code
        err.close()
    assert code == 404
