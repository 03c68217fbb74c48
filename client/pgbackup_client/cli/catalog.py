"""``backupctl catalog import``: rebuild the run store from a destination's manifests."""

from __future__ import annotations

import argparse

from pgbackup_client.cli.common import EXIT_ERROR, EXIT_OK, AddParser, err, print_json, print_kv
from pgbackup_client.models import CatalogImport
from pgbackup_client.sdk import BackupClient

__all__ = ["register"]


def _cmd_import(client: BackupClient, args: argparse.Namespace) -> int:
    res: CatalogImport = client.import_catalog(args.destination, timeout=args.create_timeout)
    if args.json:
        print_json(res.to_dict())
    else:
        print_kv([("destination", res.destination), ("imported", str(res.imported)),
                  ("already known", str(res.skipped)), ("backups created", str(res.runs_created)),
                  ("problems", str(len(res.problems)))])
    for problem in res.problems:
        err(f"not imported: {problem}")
    return EXIT_ERROR if res.problems and not res.imported and not res.skipped else EXIT_OK


def register(add: AddParser, common: argparse.ArgumentParser) -> None:
    """Add ``catalog`` and its actions to the ``backupctl`` parser."""
    p = add("catalog", "the catalog of backups kept at the destinations")
    sub = p.add_subparsers(dest="catalog_command", metavar="ACTION", required=True)
    ip = sub.add_parser(
        "import",
        parents=[common],
        help="record the backups a destination holds (from their manifests); idempotent",
        description="Rebuild the run store from the manifests at a destination, so a new "
        "host lists, verifies and restores the old backups. Running it again records "
        "nothing twice.",
    )
    ip.add_argument("--destination", required=True, metavar="NAME",
                    help="a configured destination's name")
    ip.set_defaults(func=_cmd_import)
