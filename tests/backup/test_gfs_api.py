"""GFS retention through the API: the dry run explains each backup's fate, the
cleanup then deletes exactly those, and the seed's fields answer as before."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from conftest import DB, ManualClock

from pgbackup_client.cli import main as backupctl


def test_dry_run_explains_then_cleanup_deletes_exactly_those(start_app, pg, capsys):
    clock = ManualClock(datetime(2026, 3, 10, 2, 0, tzinfo=UTC))
    target = {"name": "shop", "url": pg.url(DB),
              "retention": {"days": 0, "keepDaily": 2}}
    stack = start_app(clock=clock, database=None, schedules=None, databases=[target])

    def backup() -> dict:
        return stack.rest("POST", "/api/v1/backup/create")[1]["backup"]

    early = backup()
    clock.advance(hours=1)
    late = backup()  # the newest of 2026-03-10
    clock.advance(days=1)
    day2 = backup()
    clock.advance(days=1)
    day3 = backup()

    status, dry = stack.rest("POST", "/api/v1/backup/cleanup", {"dry_run": True})
    assert status == 200
    assert dry["dry_run"] is True and dry["deleted_files"] == 2
    assert sorted(dry["files"]) == sorted([early["file_path"], late["file_path"]])
    assert int(dry["freed_bytes"]) == int(early["size_bytes"]) + int(late["size_bytes"])
    why = {int(d["backup_id"]): d for d in dry["decisions"]}
    assert set(why) == {int(b["id"]) for b in (early, late, day2, day3)}
    assert why[int(day3["id"])]["reasons"] == ["newest successful backup",
                                               "keepDaily: newest of 2026-03-12"]
    assert why[int(day2["id"])]["reasons"] == ["keepDaily: newest of 2026-03-11"]
    assert why[int(late["id"])]["reasons"] == ["kept by no rule (keepDaily 2)"]
    assert not why[int(late["id"])].get("keep", False)
    assert why[int(day2["id"])]["keep"] is True
    assert {d["destination"] for d in dry["decisions"]} == {"local"}
    assert why[int(early["id"])]["location"] == early["file_path"]
    assert os.path.exists(early["file_path"]) and os.path.exists(late["file_path"])

    # backupctl prints a row per backup: its id, what happens to it, and why.
    capsys.readouterr()
    assert backupctl(["--address", stack.grpc_address, "cleanup", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "dry run: would delete 2 file(s)" in lines[0]
    rows = {line.split()[0]: line for line in lines if line.split()[:1] and
            line.split()[0].isdigit()}
    assert "would delete" in rows[str(early["id"])]
    assert "kept by no rule (keepDaily 2)" in rows[str(early["id"])]
    assert "keep  " in rows[str(day3["id"])]
    assert "newest successful backup; keepDaily: newest of 2026-03-12" in rows[str(day3["id"])]

    done = stack.client().cleanup()
    assert done.deleted_files == 2 and not done.dry_run
    assert [d.backup_id for d in done.decisions if not d.keep] == [int(early["id"]),
                                                                   int(late["id"])]
    assert not os.path.exists(early["file_path"]) and not os.path.exists(late["file_path"])
    assert os.path.exists(day2["file_path"]) and os.path.exists(day3["file_path"])
