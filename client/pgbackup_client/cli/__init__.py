"""``backupctl``: command-line client for the backup service.

One module per command group (backups, destinations, cluster, restore, tokens); what they share
(options, output) is in ``common``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from pgbackup_client.cli import backups, catalog, cluster, destinations, restore, tokens, wal
from pgbackup_client.cli.common import (
    ADDRESS_ENV,
    DEFAULT_TIMEOUT,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    Command,
    common_options,
    err,
    human_size,
)
from pgbackup_client.errors import BackupClientError, Unavailable
from pgbackup_client.sdk import DEFAULT_ADDRESS, BackupClient

__all__ = ["build_parser", "human_size", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``backupctl`` argument parser."""
    common = common_options()
    parser = argparse.ArgumentParser(
        prog="backupctl",
        description="Control the PostgreSQL backup service.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help_text, description=help_text)

    backups.register(add)
    destinations.register(add)
    cluster.register(add)
    restore.register(add)
    wal.register(add)
    tokens.register(add, common)
    catalog.register(add, common)
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
        func: Command = args.func
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
        err(str(exc))
        return EXIT_UNAVAILABLE
    except BackupClientError as exc:
        err(str(exc))
        return EXIT_ERROR
    except BrokenPipeError:
        # Output piped into e.g. `head`, which stopped reading: not an error.
        _silence_stdout()
        return EXIT_OK
    except OSError as exc:
        err(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
        return EXIT_USAGE
    except ValueError as exc:
        err(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
