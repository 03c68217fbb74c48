"""Helpers of the physical tests."""

from __future__ import annotations

from pathlib import Path


def fetch_command() -> str:
    """restore_command's program for a restored server running as another user: the
    system Python with this checkout's packages (the venv's interpreter may sit in a
    0700 home)."""
    import sys
    import sysconfig

    import pgbackup_client

    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    paths = [sysconfig.get_paths()["purelib"], str(Path(pgbackup_client.__file__).parents[1])]
    return f"env PYTHONPATH={':'.join(paths)} {python} -m pgbackup_client.cli"
