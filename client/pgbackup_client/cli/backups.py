"""``backupctl`` commands about backups: create, create-custom, stats, cleanup,
list, show, schedules."""

from __future__ import annotations

import argparse

from rich.text import Text

from pgbackup_client.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    AddParser,
    duration,
    err,
    field_rows,
    human_size,
    non_negative_int,
    print_json,
    print_kv,
    print_table,
    size_exact,
    status_text,
    time_text,
)
from pgbackup_client.cli.destinations import copy_lines
from pgbackup_client.models import (
    Backup,
    CleanupDecision,
    CleanupResult,
    CreateResult,
    Schedule,
    Stats,
)
from pgbackup_client.sdk import BackupClient

__all__ = ["backup_rows", "register"]

STATUSES = ("PENDING", "RUNNING", "SUCCEEDED", "FAILED")

# Backup fields with their own rows in backup_rows; every other field follows,
# rendered by its type, so a field added to the proto shows without a change here.
_SHOWN = frozenset({
    "id", "status", "trigger", "schedule", "database", "queued_at", "started_at",
    "finished_at", "duration_seconds", "file_path", "file_deleted", "file_missing",
    "size_bytes", "sha256", "backup_dir", "format", "compression", "pg_dump_version",
    "server_version", "error", "verification", "verification_reason", "verified_at",
    "copies",
})


def file_state(b: Backup) -> str:
    if b.file_deleted:
        return "deleted"
    if b.file_missing:
        return "missing"
    return "present" if b.file_path else "-"


def backup_rows(b: Backup) -> list[tuple[str, str | Text]]:
    """Every field of a run, as key/value rows: the known ones first."""
    rows: list[tuple[str, str | Text]] = [
        ("id", str(b.id)),
        ("status", status_text(b.status)),
        ("trigger", b.trigger + (f" ({b.schedule})" if b.schedule else "")),
        ("database", b.database or "-"),
        ("queued", time_text(b.queued_at)),
        ("started", time_text(b.started_at)),
        ("finished", time_text(b.finished_at)),
        ("duration", duration(b.duration_seconds) if b.finished_at else "-"),
        ("file", b.file_path or "-"),
        ("file state", file_state(b)),
        ("size", size_exact(b.size_bytes) if b.file_path else "-"),
        ("sha256", b.sha256 or "-"),
        ("backup dir", b.backup_dir or "-"),
        ("format", b.format or "-"),
        ("compression", b.compression or "-"),
        ("pg_dump version", b.pg_dump_version or "-"),
        ("server version", b.server_version or "-"),
    ]
    if b.error:
        rows.append(("error", b.error))
    if b.copies:
        rows.append(("copies", copy_lines(b)))
    if b.verification:
        verdict = b.verification + (f": {b.verification_reason}" if b.verification_reason else "")
        rows.append(("verification", f"{verdict} ({time_text(b.verified_at)})"))
    return rows + field_rows(b, _SHOWN)


def _report_create(args: argparse.Namespace, result: CreateResult) -> int:
    if args.json:
        print_json(result.to_dict())
    else:
        print_kv([*backup_rows(result.backup), ("deleted files", str(result.deleted_files))])
    if result.backup.status == "FAILED":
        # The call itself succeeded, but the caller asked for a backup and got none.
        err(f"FAILED: {result.backup.error or 'backup failed'}")
        return EXIT_ERROR
    return EXIT_OK


def _cmd_create(client: BackupClient, args: argparse.Namespace) -> int:
    if args.wait:
        started = client.create_backup(database=args.database, background=True,
                                       type=args.type)
        return _wait_with_progress(client, args, started)
    result = client.create_backup(database=args.database, background=args.background,
                                  timeout=args.create_timeout, type=args.type)
    return _report_create(args, result)


def _wait_with_progress(client: BackupClient, args: argparse.Namespace,
                        started: CreateResult) -> int:
    """Follow every run of the request with WatchBackup: a progress bar with rate
    and ETA on a terminal (rich), then a one-line summary per run."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = Console(stderr=True)
    finals: list[Backup] = []
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=console,
                  disable=args.json) as bar:
        for run in started.backups or (started.backup,):
            task = bar.add_task(f"#{run.id} {run.database}", total=None)
            for event in client.watch_backup(run.id):
                bar.update(task, completed=event.bytes_written,
                           total=event.estimated_total_bytes or None)
                if event.backup is not None:
                    finals.append(event.backup)
                    bar.update(task, total=max(event.bytes_written, 1),
                               completed=max(event.bytes_written, 1))
    failed = [b for b in finals if b.status != "SUCCEEDED"]
    if args.json:
        print_json({"backups": [b.to_dict() for b in finals]})
    else:
        for b in finals:
            line = (f"backup #{b.id} {b.database}: {b.status} in {duration(b.duration_seconds)}"
                    f", {size_exact(b.size_bytes)} -> {b.file_path}")
            print(line if b.status == "SUCCEEDED" else
                  f"backup #{b.id} {b.database}: {b.status}: {b.error}")
    if failed:
        err(f"FAILED: {len(failed)} of {len(finals)} runs failed")
        return EXIT_ERROR
    return EXIT_OK


def _cmd_create_custom(client: BackupClient, args: argparse.Namespace) -> int:
    result = client.create_custom_backup(
        args.backup_dir, retention_days=args.retention_days, cleanup_old=args.cleanup_old,
        background=args.background, database=args.database, timeout=args.create_timeout)
    return _report_create(args, result)


def _cmd_stats(client: BackupClient, args: argparse.Namespace) -> int:
    st: Stats = client.get_stats(database=args.database)
    if args.json:
        print_json(st.to_dict())
        return EXIT_OK
    rows = [
        ("backup directory", st.backup_directory or "-"),
        ("total backups", str(st.total_backups)),
        ("total size", size_exact(st.total_size_bytes)),
        ("oldest backup", time_text(st.oldest_backup)),
        ("newest backup", time_text(st.newest_backup)),
        ("succeeded runs", str(st.succeeded_runs)),
        ("failed runs", str(st.failed_runs)),
        ("running runs", str(st.running_runs)),
    ]
    s = st.last_success
    rows.append(
        ("last success", f"#{s.id} at {time_text(s.time)}  {s.file_path}".rstrip() if s else "-")
    )
    f = st.last_failure
    rows.append(("last failure", f"#{f.id} at {time_text(f.time)}: {f.error}" if f else "-"))
    rows.append(("verified backups", str(st.verified_backups)))
    rows.append(("failed verifications", str(st.verification_failures)))
    print_kv(rows)
    if len(st.databases) > 1:
        print()
        print_table(
            ["DATABASE", "BACKUPS", "SIZE", "LAST SUCCESS"],
            [
                [d.database, str(d.total_backups), size_exact(d.total_size_bytes),
                 time_text(d.last_success.time) if d.last_success else "-"]
                for d in st.databases
            ],
            right={"BACKUPS", "SIZE"},
        )
    return EXIT_OK


def _cmd_cleanup(client: BackupClient, args: argparse.Namespace) -> int:
    res: CleanupResult = client.cleanup(dry_run=args.dry_run)
    if args.json:
        print_json(res.to_dict())
        return EXIT_OK
    if res.dry_run:
        print(
            f"dry run: would delete {res.deleted_files} file(s), "
            f"freeing {size_exact(res.freed_bytes)}"
        )
    else:
        print(f"deleted {res.deleted_files} file(s), freed {size_exact(res.freed_bytes)}")
    for path in res.files:
        print(f"  {path}")
    if res.decisions:
        print()
        print_table(
            ["ID", "DATABASE", "DESTINATION", "DECISION", "WHY"],
            [
                [str(d.backup_id), d.database, d.destination, _decision_text(d, res.dry_run),
                 "; ".join(d.reasons)]
                for d in res.decisions
            ],
            right={"ID"},
        )
    return EXIT_OK


def _decision_text(d: CleanupDecision, dry_run: bool) -> Text:
    if d.keep:
        return Text("keep", style="green")
    return Text("would delete" if dry_run else "delete", style="bold red")


def _cmd_list(client: BackupClient, args: argparse.Namespace) -> int:
    status = args.status or None
    next_token = ""
    if args.all:
        backups = list(
            client.iter_backups(database=args.database, status=status, page_size=args.page_size)
        )
    else:
        page = client.list_backups(
            database=args.database,
            status=status,
            page_size=args.page_size,
            page_token=args.page_token,
        )
        backups, next_token = list(page.backups), page.next_page_token
    if args.json:
        print_json({"backups": [b.to_dict() for b in backups], "next_page_token": next_token})
        return EXIT_OK
    if not backups:
        print("no backups")
        return EXIT_OK
    rows: list[list[str | Text]] = []
    for b in backups:
        file_col = b.file_path or (f"error: {b.error}" if b.error else "-")
        if b.file_deleted or b.file_missing:
            file_col += f" ({file_state(b)})"
        rows.append(
            [
                str(b.id),
                status_text(b.status),
                b.trigger,
                b.database or "-",
                time_text(b.started_at),
                duration(b.duration_seconds) if b.finished_at else "-",
                human_size(b.size_bytes) if b.file_path else "-",
                file_col,
            ]
        )
    headers = ["ID", "STATUS", "TRIGGER", "DATABASE", "STARTED", "DURATION", "SIZE", "FILE"]
    print_table(headers, rows, right={"DURATION", "SIZE"})
    if next_token:
        print(f"more: backupctl list --page-token {next_token}  (or --all)")
    return EXIT_OK


def _cmd_show(client: BackupClient, args: argparse.Namespace) -> int:
    b = client.get_backup(args.id)
    if args.json:
        print_json(b.to_dict())
    else:
        print_kv(backup_rows(b))
    return EXIT_OK


def _cmd_schedules(client: BackupClient, args: argparse.Namespace) -> int:
    schedules: list[Schedule] = client.list_schedules()
    if args.json:
        print_json({"schedules": [s.to_dict() for s in schedules]})
        return EXIT_OK
    if not schedules:
        print("no schedules")
        return EXIT_OK
    rows = [
        [
            s.name,
            "yes" if s.enabled else "no",
            s.cron,
            s.timezone or "-",
            s.job or "-",
            time_text(s.next_run_time),
        ]
        for s in schedules
    ]
    print_table(["NAME", "ENABLED", "CRON", "TIMEZONE", "JOB", "NEXT RUN"], rows)
    return EXIT_OK


def register(add: AddParser) -> None:
    """Add the backup commands to the ``backupctl`` parser."""
    p = add("create", "back up the configured database now")
    p.add_argument("--background", action="store_true", help="return at once, do not wait")
    p.add_argument("--wait", action="store_true",
                   help="show a progress bar (rate, ETA) until the backup ends")
    p.add_argument("--database", default="", metavar="TARGET",
                   help="configured target to back up (default: the first)")
    p.add_argument("--type", default="", choices=["full", "incremental"],
                   help="physical targets: full (default) or incremental")
    p.set_defaults(func=_cmd_create)

    p = add("create-custom", "back up into an allowed directory with its own retention")
    p.add_argument("--backup-dir", required=True, metavar="DIR", help="target directory")
    p.add_argument("--database", default="", metavar="TARGET",
                   help="configured target to back up (default: the first)")
    p.add_argument(
        "--retention-days",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="retention for DIR; 0 means the configured default",
    )
    p.add_argument(
        "--cleanup-old", action="store_true", help="apply retention to DIR after success"
    )
    p.add_argument("--background", action="store_true", help="return at once, do not wait")
    p.set_defaults(func=_cmd_create_custom)

    p = add("stats", "totals and the last success and failure")
    p.add_argument("--database", default="", metavar="NAME", help="one database only")
    p.set_defaults(func=_cmd_stats)

    p = add("cleanup", "apply the retention policy now")
    p.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    p.set_defaults(func=_cmd_cleanup)

    p = add("list", "recorded runs, newest first")
    p.add_argument("--database", default="", help="only runs of this database")
    p.add_argument(
        "--status", type=str.upper, choices=STATUSES, default=None, help="only runs in this state"
    )
    p.add_argument(
        "--page-size",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="runs per page (server default 50, at most 1000)",
    )
    p.add_argument("--page-token", default="", metavar="TOKEN", help="continue a listing")
    p.add_argument("--all", action="store_true", help="follow pages and list every run")
    p.set_defaults(func=_cmd_list)

    p = add("show", "one recorded run")
    p.add_argument("id", type=int, metavar="ID", help="backup id")
    p.set_defaults(func=_cmd_show)

    p = add("schedules", "configured schedules and their next run")
    p.set_defaults(func=_cmd_schedules)

