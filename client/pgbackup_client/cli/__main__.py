"""``python -m pgbackup_client.cli``: the same as ``backupctl``."""

import sys

from pgbackup_client.cli import main

sys.exit(main())
