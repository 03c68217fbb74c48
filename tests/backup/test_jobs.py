"""backup.jobs: auto picks the directory format's pg_dump jobs from the tables."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DB, PASSWORD

from pgbackup_server.backup.executor import _jobs
from pgbackup_server.backup.plan import auto_jobs
from pgbackup_server.domain.errors import ConfigError
from pgbackup_server.domain.models import DumpFormat
from pgbackup_server.postgres.conninfo import ConnInfo
from pgbackup_server.settings import build_settings

MB = 1 << 20


@pytest.mark.parametrize(("total", "largest", "cores", "jobs"), [
    (10 * MB, 5 * MB, 8, 1),  # small: starting jobs costs more than it gains
    (2000 * MB, 1900 * MB, 8, 2),  # one huge table: a second job takes the rest
    (2000 * MB, 1000 * MB, 8, 2),  # two halves: two jobs reach the floor
    (2000 * MB, 400 * MB, 8, 5),
    (2000 * MB, 400 * MB, 2, 2),  # never more than one per core
    (2000 * MB, 0, 8, 1),
])
def test_auto_jobs_is_the_fewest_reaching_the_largest_table(total, largest, cores, jobs):
    assert auto_jobs(total, largest, cores) == jobs


@pytest.mark.parametrize("value", [0, 65, "two", True, 1.5])
def test_jobs_setting_errors_name_the_key_and_the_choices(value):
    with pytest.raises(ConfigError) as info:
        build_settings({"database": {"url": "postgresql://x/y"}, "backup": {"jobs": value}},
                       base=Path("/tmp"), env={})
    assert "backup.jobs: expected auto or an integer from 1 to 64" in str(info.value)


def test_auto_reads_the_table_sizes_of_the_database(pg):
    conninfo = ConnInfo.of({"host": "127.0.0.1", "port": str(pg.port), "user": "postgres",
                            "password": PASSWORD, "dbname": DB})
    assert _jobs(conninfo, DumpFormat.DIRECTORY, "auto") == 1  # a tiny db
    assert _jobs(conninfo, DumpFormat.PLAIN, "auto") == 1
    assert _jobs(conninfo, DumpFormat.DIRECTORY, 3) == 3
    from pgbackup_server.postgres.server import table_sizes

    total, largest = table_sizes(conninfo)
    assert 0 < largest <= total < 64 * MB
