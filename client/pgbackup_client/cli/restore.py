"""``backupctl`` commands about verification and restore: verify, restore,
restore-status, contents."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from rich.text import Text

from pgbackup_client.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    AddParser,
    duration,
    err,
    human_size,
    non_negative_int,
    print_json,
    print_kv,
    print_table,
    status_text,
    time_text,
)
from pgbackup_client.models import BackupContents, RestoreRun, VerifyResult
from pgbackup_client.sdk import BackupClient

__all__ = ["register"]


def _cmd_verify(client: BackupClient, args: argparse.Namespace) -> int:
    res: VerifyResult = client.verify_backup(args.id, deep=args.deep, identity=_identity(args),
                                             timeout=args.create_timeout)
    if args.json:
        print_json(res.to_dict())
    else:
        rows: list[tuple[str, str | Text]] = [
            ("backup", str(args.id)),
            ("verification", status_text(res.verification)),
            ("mode", "deep" if res.deep else "quick"),
            ("verified at", time_text(res.verified_at)),
            ("duration", duration(res.duration_seconds)),
        ]
        if res.reason:
            rows.append(("reason", res.reason))
        print_kv(rows)
        if res.tables:
            print()
            print_table(["SCHEMA", "TABLE", "ROWS"],
                        [[t.schema, t.table, str(t.rows)] for t in res.tables], right={"ROWS"})
    if not res.ok:
        err(f"FAILED: {res.reason or 'verification failed'}")
        return EXIT_ERROR
    return EXIT_OK


def _restore_rows(r: RestoreRun) -> list[tuple[str, str | Text]]:
    rows: list[tuple[str, str | Text]] = [
        ("restore", str(r.id)),
        ("backup", str(r.backup_id)),
        ("status", status_text(r.status)),
        ("target database", r.target_database or "-"),
        ("started", time_text(r.started_at)),
        ("finished", time_text(r.finished_at)),
        ("duration", duration(r.duration_seconds) if r.finished_at else "-"),
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
        print_json(r.to_dict())
    else:
        print_kv(_restore_rows(r))
    if r.status == "FAILED":
        err(f"FAILED: {r.error or 'restore failed'}")
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
        identity=_identity(args),
        timeout=args.create_timeout,
        target_directory=args.target_directory,
        target_time=args.target_time,
        target_lsn=args.target_lsn,
        tablespace_mapping=args.tablespace_mapping,
    )
    return _report_restore(args, r)


def _timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _cmd_restore_status(client: BackupClient, args: argparse.Namespace) -> int:
    return _report_restore(args, client.get_restore(args.id))


def _cmd_contents(client: BackupClient, args: argparse.Namespace) -> int:
    c: BackupContents = client.list_backup_contents(args.id, identity=_identity(args))
    if args.json:
        print_json(c.to_dict())
        return EXIT_OK
    if not c.entries:
        print("no objects")
        return EXIT_OK
    rows = [
        [e.schema or "-", e.name, e.kind, human_size(e.size_bytes) if e.size_bytes else "-"]
        for e in c.entries
    ]
    print_table(["SCHEMA", "NAME", "KIND", "DATA"], rows, right={"DATA"})
    print(f"schemas: {', '.join(c.schemas) or '-'}")
    return EXIT_OK


def _identity(args: argparse.Namespace) -> str:
    """The age identity in ``--identity-file`` (read here: the key never goes in argv)."""
    path = getattr(args, "identity_file", None)
    if not path:
        return ""
    with open(path, encoding="utf-8") as f:
        return f.read(1 << 20)


def _identity_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--identity-file",
        metavar="FILE",
        help="age identity (private key) for an encrypted backup, when the server has no "
        "encryption.identityFile; sent for this request only",
    )


def register(add: AddParser) -> None:
    """Add the verification and restore commands to the ``backupctl`` parser."""
    p = add("verify", "check a backup: checksum and structure, or --deep restore")
    p.add_argument("id", type=int, metavar="ID", help="backup id")
    p.add_argument(
        "--deep",
        action="store_true",
        help="restore into a scratch database (always dropped) and count rows",
    )
    _identity_option(p)
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
        type=non_negative_int,
        default=0,
        metavar="N",
        help="parallel pg_restore jobs (custom/directory backups)",
    )
    p.add_argument("--background", action="store_true", help="return at once, do not wait")
    _identity_option(p)
    p.add_argument("--target-directory", default="", metavar="DIR",
                   help="physical backups: new or empty directory to rebuild the data "
                   "directory in (the chain is combined with pg_combinebackup)")
    p.add_argument("--target-time", default=None, type=_timestamp, metavar="TIME",
                   help="physical backups: replay archived WAL up to this ISO 8601 time")
    p.add_argument("--target-lsn", default="", metavar="LSN",
                   help="physical backups: replay archived WAL up to this LSN")
    p.add_argument("--tablespace-mapping", action="append", default=[], metavar="OLD=NEW",
                   help="physical backups: put the tablespace recorded at OLD in NEW (both "
                   "absolute; NEW new or empty); repeat for each tablespace to move. "
                   "Unmapped tablespaces go back where they were, which must be empty")
    p.set_defaults(func=_cmd_restore)

    p = add("restore-status", "one recorded restore")
    p.add_argument("id", type=int, metavar="ID", help="restore id")
    p.set_defaults(func=_cmd_restore_status)

    p = add("contents", "schemas, tables and their sizes in a backup")
    p.add_argument("id", type=int, metavar="ID", help="backup id")
    _identity_option(p)
    p.set_defaults(func=_cmd_contents)
