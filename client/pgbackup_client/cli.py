"""``backupctl``: command-line client for the backup service."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from pgbackup_client.errors import BackupClientError, Unavailable
from pgbackup_client.models import (
    Backup,
    BackupContents,
    CleanupResult,
    CreateResult,
    RestoreRun,
    Schedule,
    Stats,
    VerifyResult,
)
from pgbackup_client.sdk import DEFAULT_ADDRESS, TOKEN_ENV, BackupClient

__all__ = ["human_size", "main"]

ADDRESS_ENV = "BACKUP_ADDRESS"
DEFAULT_TIMEOUT = 30.0
STATUSES = ("PENDING", "RUNNING", "SUCCEEDED", "FAILED")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3


# --- formatting -------------------------------------------------------------


def human_size(n: int) -> str:
    """Binary-prefixed size, e.g. ``1.2 MiB``."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024.0
        if value < 1024.0 or unit == "PiB":
            break
    return f"{value:.1f} {unit}"


def _size_exact(n: int) -> str:
    return f"{human_size(n)} ({n} bytes)" if n >= 1024 else f"{n} B"


def _time(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _print_kv(rows: Sequence[tuple[str, str]]) -> None:
    width = max((len(k) for k, _ in rows), default=0)
    for key, value in rows:
        print(f"{key + ':':<{width + 1}} {value}")


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    for row in (headers, *rows):
        # rstrip so the last column does not leave trailing blanks.
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _file_state(b: Backup) -> str:
    if b.file_deleted:
        return "deleted"
    if b.file_missing:
        return "missing"
    return "present" if b.file_path else "-"


def _backup_rows(b: Backup) -> list[tuple[str, str]]:
    rows = [
        ("id", str(b.id)),
        ("status", b.status),
        ("trigger", b.trigger + (f" ({b.schedule})" if b.schedule else "")),
        ("database", b.database or "-"),
        ("queued", _time(b.queued_at)),
        ("started", _time(b.started_at)),
        ("finished", _time(b.finished_at)),
        ("duration", _duration(b.duration_seconds) if b.finished_at else "-"),
        ("file", b.file_path or "-"),
        ("file state", _file_state(b)),
        ("size", _size_exact(b.size_bytes) if b.file_path else "-"),
        ("sha256", b.sha256 or "-"),
        ("backup dir", b.backup_dir or "-"),
        ("format", b.format or "-"),
        ("compression", b.compression or "-"),
        ("pg_dump version", b.pg_dump_version or "-"),
        ("server version", b.server_version or "-"),
    ]
    if b.error:
        rows.append(("error", b.error))
    if b.verification:
        verdict = b.verification + (f": {b.verification_reason}" if b.verification_reason else "")
        rows.append(("verification", f"{verdict} ({_time(b.verified_at)})"))
    return rows


def _err(message: str) -> None:
    # Keep stdout and stderr in order when both go to the same terminal or file.
    sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr)


# --- commands ---------------------------------------------------------------


def _report_create(args: argparse.Namespace, result: CreateResult) -> int:
    if args.json:
        _print_json(result.to_dict())
    else:
        _print_kv([*_backup_rows(result.backup), ("deleted files", str(result.deleted_files))])
    if result.backup.status == "FAILED":
        # The call itself succeeded, but the caller asked for a backup and got none.
        _err(f"FAILED: {result.backup.error or 'backup failed'}")
        return EXIT_ERROR
    return EXIT_OK


def _cmd_create(client: BackupClient, args: argparse.Namespace) -> int:
    if args.wait:
        started = client.create_backup(database=args.database, background=True)
        return _wait_with_progress(client, args, started)
    result = client.create_backup(database=args.database, background=args.background,
                                  timeout=args.create_timeout)
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
        _print_json({"backups": [b.to_dict() for b in finals]})
    else:
        for b in finals:
            line = (f"backup #{b.id} {b.database}: {b.status} in {b.duration_seconds:.1f}s"
                    f", {_size_exact(b.size_bytes)} -> {b.file_path}")
            print(line if b.status == "SUCCEEDED" else
                  f"backup #{b.id} {b.database}: {b.status}: {b.error}")
    if failed:
        _err(f"FAILED: {len(failed)} of {len(finals)} runs failed")
        return EXIT_ERROR
    return EXIT_OK


def _cmd_create_custom(client: BackupClient, args: argparse.Namespace) -> int:
    result = client.create_custom_backup(
        args.backup_dir,
        retention_days=args.retention_days,
        cleanup_old=args.cleanup_old,
        background=args.background,
        database=args.database,
        timeout=args.create_timeout,
    )
    return _report_create(args, result)


def _cmd_stats(client: BackupClient, args: argparse.Namespace) -> int:
    st: Stats = client.get_stats(database=args.database)
    if args.json:
        _print_json(st.to_dict())
        return EXIT_OK
    rows = [
        ("backup directory", st.backup_directory or "-"),
        ("total backups", str(st.total_backups)),
        ("total size", _size_exact(st.total_size_bytes)),
        ("oldest backup", _time(st.oldest_backup)),
        ("newest backup", _time(st.newest_backup)),
        ("succeeded runs", str(st.succeeded_runs)),
        ("failed runs", str(st.failed_runs)),
        ("running runs", str(st.running_runs)),
    ]
    s = st.last_success
    rows.append(
        ("last success", f"#{s.id} at {_time(s.time)}  {s.file_path}".rstrip() if s else "-")
    )
    f = st.last_failure
    rows.append(("last failure", f"#{f.id} at {_time(f.time)}: {f.error}" if f else "-"))
    rows.append(("verified backups", str(st.verified_backups)))
    rows.append(("failed verifications", str(st.verification_failures)))
    _print_kv(rows)
    if len(st.databases) > 1:
        print()
        for d in st.databases:
            last = d.last_success
            print(f"  {d.database:<24} {d.total_backups:>6} backups  "
                  f"{_size_exact(d.total_size_bytes):>24}  last success "
                  f"{_time(last.time) if last else '-'}")
    return EXIT_OK


def _cmd_cleanup(client: BackupClient, args: argparse.Namespace) -> int:
    res: CleanupResult = client.cleanup(dry_run=args.dry_run)
    if args.json:
        _print_json(res.to_dict())
        return EXIT_OK
    if res.dry_run:
        print(
            f"dry run: would delete {res.deleted_files} file(s), "
            f"freeing {_size_exact(res.freed_bytes)}"
        )
    else:
        print(f"deleted {res.deleted_files} file(s), freed {_size_exact(res.freed_bytes)}")
    for path in res.files:
        print(f"  {path}")
    return EXIT_OK


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
        _print_json({"backups": [b.to_dict() for b in backups], "next_page_token": next_token})
        return EXIT_OK
    if not backups:
        print("no backups")
        return EXIT_OK
    rows = []
    for b in backups:
        file_col = b.file_path or (f"error: {b.error}" if b.error else "-")
        if b.file_deleted or b.file_missing:
            file_col += f" ({_file_state(b)})"
        rows.append(
            [
                str(b.id),
                b.status,
                b.trigger,
                b.database or "-",
                _time(b.started_at),
                _duration(b.duration_seconds) if b.finished_at else "-",
                human_size(b.size_bytes) if b.file_path else "-",
                file_col,
            ]
        )
    headers = ["ID", "STATUS", "TRIGGER", "DATABASE", "STARTED", "DURATION", "SIZE", "FILE"]
    _print_table(headers, rows)
    if next_token:
        print(f"more: backupctl list --page-token {next_token}  (or --all)")
    return EXIT_OK


def _cmd_show(client: BackupClient, args: argparse.Namespace) -> int:
    b = client.get_backup(args.id)
    if args.json:
        _print_json(b.to_dict())
    else:
        _print_kv(_backup_rows(b))
    return EXIT_OK


def _cmd_schedules(client: BackupClient, args: argparse.Namespace) -> int:
    schedules: list[Schedule] = client.list_schedules()
    if args.json:
        _print_json({"schedules": [s.to_dict() for s in schedules]})
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
            _time(s.next_run_time),
        ]
        for s in schedules
    ]
    _print_table(["NAME", "ENABLED", "CRON", "TIMEZONE", "JOB", "NEXT RUN"], rows)
    return EXIT_OK


def _cmd_verify(client: BackupClient, args: argparse.Namespace) -> int:
    res: VerifyResult = client.verify_backup(args.id, deep=args.deep, timeout=args.create_timeout)
    if args.json:
        _print_json(res.to_dict())
    else:
        rows = [
            ("backup", str(args.id)),
            ("verification", res.verification),
            ("mode", "deep" if res.deep else "quick"),
            ("verified at", _time(res.verified_at)),
            ("duration", _duration(res.duration_seconds)),
        ]
        if res.reason:
            rows.append(("reason", res.reason))
        _print_kv(rows)
        if res.tables:
            print()
            _print_table(
                ["SCHEMA", "TABLE", "ROWS"], [[t.schema, t.table, str(t.rows)] for t in res.tables]
            )
    if not res.ok:
        _err(f"FAILED: {res.reason or 'verification failed'}")
        return EXIT_ERROR
    return EXIT_OK


def _restore_rows(r: RestoreRun) -> list[tuple[str, str]]:
    rows = [
        ("restore", str(r.id)),
        ("backup", str(r.backup_id)),
        ("status", r.status),
        ("target database", r.target_database or "-"),
        ("started", _time(r.started_at)),
        ("finished", _time(r.finished_at)),
        ("duration", _duration(r.duration_seconds) if r.finished_at else "-"),
        ("requested by", r.requested_by or "-"),
    ]
    if r.schemas:
        rows.append(("schemas", ", ".join(r.schemas)))
    if r.tables:
        rows.append(("tables", ", ".join(r.tables)))
    if r.error:
        rows.append(("error", r.error))
    return rows


def _report_restore(args: argparse.Namespace, r: RestoreRun) -> int:
    if args.json:
        _print_json(r.to_dict())
    else:
        _print_kv(_restore_rows(r))
    if r.status == "FAILED":
        _err(f"FAILED: {r.error or 'restore failed'}")
        return EXIT_ERROR
    return EXIT_OK


def _cmd_restore(client: BackupClient, args: argparse.Namespace) -> int:
    r = client.restore_backup(
        args.id,
        target_database=args.target,
        overwrite=args.overwrite,
        schemas=args.schema,
        tables=args.table,
        jobs=args.jobs,
        background=args.background,
        force=args.force,
        timeout=args.create_timeout,
    )
    return _report_restore(args, r)


def _cmd_restore_status(client: BackupClient, args: argparse.Namespace) -> int:
    return _report_restore(args, client.get_restore(args.id))


def _cmd_contents(client: BackupClient, args: argparse.Namespace) -> int:
    c: BackupContents = client.list_backup_contents(args.id)
    if args.json:
        _print_json(c.to_dict())
        return EXIT_OK
    if not c.entries:
        print("no objects")
        return EXIT_OK
    rows = [
        [e.schema or "-", e.name, e.kind, human_size(e.size_bytes) if e.size_bytes else "-"]
        for e in c.entries
    ]
    _print_table(["SCHEMA", "NAME", "KIND", "DATA"], rows)
    print(f"schemas: {', '.join(c.schemas) or '-'}")
    return EXIT_OK


def _cmd_token_new(args: argparse.Namespace) -> int:
    token = secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).hexdigest()
    if args.json:
        _print_json({"token": token, "sha256": digest})
    else:
        _print_kv([("token", token), ("auth.tokenSha256", digest)])
        # The hint goes to stderr so stdout stays two parseable lines.
        sys.stdout.flush()
        print(
            "hint: give the token to clients (--token or BACKUP_TOKEN); put only the\n"
            "      SHA-256 digest in the server config under auth.tokenSha256.",
            file=sys.stderr,
        )
    return EXIT_OK


# --- argument parsing -------------------------------------------------------


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {value}")
    return value


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != value or value < 0:  # NaN or negative
        raise argparse.ArgumentTypeError(f"must be >= 0: {text}")
    return value


def _common_options() -> argparse.ArgumentParser:
    # Shared by the root parser and every subcommand so global options may be
    # given before or after the command; SUPPRESS keeps a subcommand from
    # overwriting a value given at the root.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    g = common.add_argument_group("connection and output")
    g.add_argument(
        "--address",
        help=f"server host:port (env {ADDRESS_ENV}, default {DEFAULT_ADDRESS})",
    )
    g.add_argument("--token", help=f"bearer token (env {TOKEN_ENV})")
    g.add_argument("--tls-ca", metavar="PEM", help="use TLS, verifying the server with this CA")
    g.add_argument(
        "--timeout",
        type=_timeout,
        metavar="SECONDS",
        help=f"per-call deadline, 0 for none (default {DEFAULT_TIMEOUT:g}; create calls "
        "have no deadline unless this is given)",
    )
    g.add_argument("--json", action="store_true", help="print JSON instead of text")
    return common


def build_parser() -> argparse.ArgumentParser:
    """The ``backupctl`` argument parser."""
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="backupctl",
        description="Control the PostgreSQL backup service.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help_text, description=help_text)

    p = add("create", "back up the configured database now")
    p.add_argument("--background", action="store_true", help="return at once, do not wait")
    p.add_argument("--wait", action="store_true",
                   help="show a progress bar (rate, ETA) until the backup ends")
    p.add_argument("--database", default="", metavar="TARGET",
                   help="configured target to back up (default: the first)")
    p.set_defaults(func=_cmd_create)

    p = add("create-custom", "back up into an allowed directory with its own retention")
    p.add_argument("--backup-dir", required=True, metavar="DIR", help="target directory")
    p.add_argument("--database", default="", metavar="TARGET",
                   help="configured target to back up (default: the first)")
    p.add_argument(
        "--retention-days",
        type=_non_negative_int,
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
        type=_non_negative_int,
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

    p = add("verify", "check a backup: checksum and structure, or --deep restore")
    p.add_argument("id", type=int, metavar="ID", help="backup id")
    p.add_argument(
        "--deep",
        action="store_true",
        help="restore into a scratch database (always dropped) and count rows",
    )
    p.set_defaults(func=_cmd_verify)

    p = add("restore", "restore a backup, whole or some schemas/tables, into a database")
    p.add_argument("id", type=int, metavar="ID", help="backup id")
    p.add_argument(
        "--target",
        default="",
        metavar="NAME",
        help="database to restore into (default: a new database named after the backup)",
    )
    p.add_argument(
        "--schema",
        action="append",
        default=[],
        metavar="S",
        help="restore only this schema (repeatable)",
    )
    p.add_argument(
        "--table",
        action="append",
        default=[],
        metavar="T",
        help="restore only this table, T or SCHEMA.T (repeatable)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="allow restoring into an existing, non-empty database",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="with --overwrite: allow replacing the postgres database or the live "
        "database the backup was taken from",
    )
    p.add_argument(
        "--jobs",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="parallel pg_restore jobs (custom/directory backups)",
    )
    p.add_argument("--background", action="store_true", help="return at once, do not wait")
    p.set_defaults(func=_cmd_restore)

    p = add("restore-status", "one recorded restore")
    p.add_argument("id", type=int, metavar="ID", help="restore id")
    p.set_defaults(func=_cmd_restore_status)

    p = add("contents", "schemas, tables and their sizes in a backup")
    p.add_argument("id", type=int, metavar="ID", help="backup id")
    p.set_defaults(func=_cmd_contents)

    p = add("token", "manage API tokens (offline)")
    token_sub = p.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    tp = token_sub.add_parser(
        "new",
        parents=[common],
        help="generate a token and the digest for auth.tokenSha256",
        description="Generate a random token and its SHA-256 digest for auth.tokenSha256.",
    )
    tp.set_defaults(offline=_cmd_token_new)
    return parser


def _run(args: argparse.Namespace) -> int:
    offline: Callable[[argparse.Namespace], int] | None = getattr(args, "offline", None)
    if offline is not None:
        return offline(args)

    address = getattr(args, "address", None) or os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS
    explicit_timeout: float | None = getattr(args, "timeout", None)
    timeout = DEFAULT_TIMEOUT if explicit_timeout is None else (explicit_timeout or None)
    # A long dump (or restore, or deep verification) must not be cut short by the
    # default deadline; only an explicit --timeout bounds those calls.
    args.create_timeout = explicit_timeout or None
    with BackupClient(
        address,
        token=getattr(args, "token", None),
        timeout=timeout,
        tls_ca=getattr(args, "tls_ca", None),
    ) as client:
        func: Callable[[BackupClient, argparse.Namespace], int] = args.func
        return func(client, args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``backupctl``; returns the exit status (usable as a console script)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # argparse exits 2 on usage errors and 0 for --help; return it instead.
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    args.json = getattr(args, "json", False)

    try:
        code = _run(args)
        sys.stdout.flush()  # here, not at exit: a closed pipe is handled below
        return code
    except Unavailable as exc:
        _err(str(exc))
        return EXIT_UNAVAILABLE
    except BackupClientError as exc:
        _err(str(exc))
        return EXIT_ERROR
    except BrokenPipeError:
        # Output piped into e.g. `head`, which stopped reading: not an error.
        _silence_stdout()
        return EXIT_OK
    except OSError as exc:
        _err(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
        return EXIT_USAGE
    except ValueError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
