"""``backupctl token``: API tokens, made offline."""

from __future__ import annotations

import argparse
import hashlib
import secrets
import sys

from pgbackup_client.cli.common import EXIT_OK, AddParser, print_json, print_kv

__all__ = ["register"]


def _cmd_token_new(args: argparse.Namespace) -> int:
    token = secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).hexdigest()
    if args.json:
        print_json({"token": token, "sha256": digest})
    else:
        print_kv([("token", token), ("auth.tokenSha256", digest)])
        # The hint goes to stderr so stdout stays two parseable lines.
        sys.stdout.flush()
        print(
            "hint: give the token to clients (--token or BACKUP_TOKEN); put only the\n"
            "      SHA-256 digest in the server config under auth.tokenSha256.",
            file=sys.stderr,
        )
    return EXIT_OK


def register(add: AddParser, common: argparse.ArgumentParser) -> None:
    """Add ``token`` and its actions to the ``backupctl`` parser."""
    p = add("token", "manage API tokens (offline)")
    token_sub = p.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    tp = token_sub.add_parser(
        "new",
        parents=[common],
        help="generate a token and the digest for auth.tokenSha256",
        description="Generate a random token and its SHA-256 digest for auth.tokenSha256.",
    )
    tp.set_defaults(offline=_cmd_token_new)
