"""``backupctl cluster``: the replicas sharing the store (GetCluster).

One line a replica: alive or silent (missed its lease), its heartbeat's age, the runs
it holds a lease on, its version and start. Exit 1 when a replica is silent, so a
monitoring script can use it; 0 otherwise, also on a backupd that runs alone.
"""

from __future__ import annotations

import argparse

from rich.text import Text

from pgbackup_client.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    AddParser,
    print_json,
    print_kv,
    print_table,
    time_text,
)
from pgbackup_client.models import ClusterNode
from pgbackup_client.sdk import BackupClient

__all__ = ["register"]


def _state(node: ClusterNode) -> Text:
    return Text("silent", style="red") if node.silent else Text("alive", style="green")


def _cmd_cluster(client: BackupClient, args: argparse.Namespace) -> int:
    view = client.get_cluster()
    if args.json:
        print_json(view.to_dict())
    elif not view.enabled:
        print("not a cluster: this backupd runs alone (cluster.enabled is false)")
    else:
        print_kv([("answered by", view.node),
                  ("lease timeout", f"{view.lease_timeout_seconds:g} s"),
                  ("queued runs", str(view.queued_runs))])
        print_table(["REPLICA", "STATE", "HEARTBEAT", "RUNS", "VERSION", "STARTED"], [
            [f"{n.name} *" if n.this_replica else n.name, _state(n),
             f"{n.heartbeat_age_seconds:.1f} s ago", ",".join(map(str, n.run_ids)) or "-",
             n.version or "-", time_text(n.started_at)] for n in view.nodes],
            right={"HEARTBEAT"})
    return EXIT_ERROR if any(n.silent for n in view.nodes) else EXIT_OK


def register(add: AddParser) -> None:
    """Add ``cluster`` to the ``backupctl`` parser."""
    p = add("cluster", "replicas sharing the store: heartbeat age, runs held (* answered)")
    p.set_defaults(func=_cmd_cluster)
