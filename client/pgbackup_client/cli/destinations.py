"""``backupctl`` commands about where backups are stored: copy, destinations."""

from __future__ import annotations

import argparse

from rich.text import Text

from pgbackup_client.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    AddParser,
    human_size,
    print_json,
    print_kv,
    print_table,
    status_text,
    time_text,
)
from pgbackup_client.models import Backup, BackupCopy, Destination
from pgbackup_client.sdk import BackupClient

__all__ = ["copy_lines", "register"]


def copy_line(c: BackupCopy) -> str:
    """One copy as one line: where, its state, its size or why it failed."""
    if c.state == "SUCCEEDED":
        state = "deleted" if c.deleted else f"{human_size(c.size_bytes)}  {c.location}"
        locked = f"  (locked until {time_text(c.locked_until)})" if c.locked_until else ""
        return f"{c.destination}: SUCCEEDED  {state}{locked}"
    return f"{c.destination}: {c.state}" + (f": {c.error}" if c.error else "")


def copy_lines(b: Backup) -> str:
    return "\n".join(copy_line(c) for c in b.copies) or "-"


def _cmd_copy(client: BackupClient, args: argparse.Namespace) -> int:
    b = client.copy_backup(args.id, destinations=args.destination,
                           timeout=args.create_timeout)
    if args.json:
        print_json(b.to_dict())
    else:
        print_kv([("id", str(b.id)), ("status", status_text(b.status)),
                  *(("copy", copy_line(c)) for c in b.copies)])
    return EXIT_OK if b.status == "SUCCEEDED" else EXIT_ERROR


def _newest(d: Destination) -> str:
    if d.newest is None:
        return "-"
    return f"#{d.newest.backup_id} at {time_text(d.newest.stored_at)}"


def _cmd_destinations(client: BackupClient, args: argparse.Namespace) -> int:
    found = client.list_destinations()
    if args.json:
        print_json({"destinations": [d.to_dict() for d in found]})
        return EXIT_OK
    rows: list[list[str | Text]] = [
        [d.name, d.url, "yes" if d.required else "no",
         Text("yes", style="green") if d.reachable else Text(f"no: {d.error}", style="red"),
         str(d.copies), human_size(d.used_bytes), _newest(d)]
        for d in found
    ]
    print_table(["NAME", "URL", "REQUIRED", "REACHABLE", "COPIES", "USED", "NEWEST"], rows,
                right={"COPIES", "USED"})
    return EXIT_OK if all(d.reachable for d in found) else EXIT_ERROR


def register(add: AddParser) -> None:
    """Add the destination commands to the ``backupctl`` parser."""
    p = add("copy", "make a backup's missing copies at its destinations")
    p.add_argument("id", type=int, metavar="ID", help="backup id")
    p.add_argument("--destination", action="append", default=[], metavar="NAME",
                   help="only this destination (repeatable; default: every missing copy)")
    p.set_defaults(func=_cmd_copy)

    p = add("destinations", "configured destinations: reachable, used bytes, newest copy")
    p.set_defaults(func=_cmd_destinations)
