"""backupd as a cluster replica, on a compressed clock shared by every replica:
``python replica.py ORIGIN START SPEED --config FILE``. The service's time is
START + (now - ORIGIN) * SPEED, so a cron that fires every minute fires every
60/SPEED real seconds, on every replica at the same instants. Leases and
heartbeats keep real time (the store's clock)."""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime, timedelta

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from pgbackup_server.main import main  # noqa: E402


def compressed(origin: float, start: float, speed: float):  # noqa: ANN201
    base = datetime.fromtimestamp(start, UTC)

    def clock() -> datetime:
        return base + timedelta(seconds=(time.time() - origin) * speed)

    return clock


if __name__ == "__main__":
    origin, start, speed = (float(a) for a in sys.argv[1:4])
    main(sys.argv[4:], clock=compressed(origin, start, speed))
