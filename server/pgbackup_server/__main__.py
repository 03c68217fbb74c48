"""``python -m pgbackup_server``: backupd."""

from .main import main

main()
