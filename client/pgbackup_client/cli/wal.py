"""``backupctl wal-fetch``: PostgreSQL's restore_command for point-in-time recovery.

A restore with a target time writes ``restore_command = '... wal-fetch --address
HOST:PORT --target NAME %f %p'``; PostgreSQL runs it for each WAL file it needs.
Exit 0 when the file was written to %p, 1 when the archive does not have it (the
end of the archive: recovery then stops looking), 2 on any other error.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pgbackup_client.cli.common import EXIT_OK, AddParser
from pgbackup_client.errors import NotFound
from pgbackup_client.sdk import BackupClient

__all__ = ["register"]


def _cmd_wal_fetch(client: BackupClient, args: argparse.Namespace) -> int:
    dest = Path(args.path)
    temp = dest.with_name(f".{dest.name}.wal-fetch-{os.getpid()}")
    try:
        with open(temp, "xb") as f:
            for chunk in client.fetch_wal(args.target, args.name):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, dest)  # PostgreSQL must never see a half-written file
    except NotFound:
        temp.unlink(missing_ok=True)
        return 1
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return EXIT_OK


def register(add: AddParser) -> None:
    """Add ``wal-fetch`` to the ``backupctl`` parser."""
    p = add("wal-fetch", "restore_command: fetch one archived WAL file into a path")
    p.add_argument("--target", required=True, metavar="NAME",
                   help="the physical target whose archive holds the file")
    p.add_argument("name", metavar="FILE", help="WAL file name (restore_command's %%f)")
    p.add_argument("path", metavar="PATH", help="where to write it (restore_command's %%p)")
    p.set_defaults(func=_cmd_wal_fetch)


