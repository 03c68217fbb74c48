"""``retention:`` blocks: parsed, refused with the key's path, merged field by field."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgbackup_server.domain.errors import ConfigError
from pgbackup_server.domain.retention import Policy
from pgbackup_server.settings import build_settings
from pgbackup_server.settings.retention import RetentionConfig, retention_for


def settings(*targets: dict, **backup: object):
    raw = {"databases": [{"url": f"postgresql://u@h/db{i}", **t} for i, t in enumerate(targets)],
           "backup": backup}
    return build_settings(raw, base=Path("/tmp"), env={})


def error(*targets: dict) -> str:
    with pytest.raises(ConfigError) as exc:
        settings(*targets)
    return str(exc.value)


def test_defaults_are_todays_backup_keys():
    s = settings({}, retentionDays=9, retentionMinKeep=3)
    assert retention_for(s, s.targets[0]) == Policy(days=9, min_keep=3)
    assert retention_for(s, None) == Policy(days=9, min_keep=3)


def test_target_then_destination_override_field_by_field():
    s = settings({"retention": {"keepDaily": 7, "minKeep": 2}}, {"retentionDays": 3},
                 retentionDays=30)
    assert retention_for(s, "db0") == Policy(days=30, min_keep=2, keep_daily=7)
    assert retention_for(s, "db1") == Policy(days=3)
    s3 = RetentionConfig.model_validate({"days": 0, "keepDaily": 7, "keepWeekly": 4,
                                         "keepMonthly": 12, "keepYearly": 3})
    assert retention_for(s, "db0", s3) == Policy(days=0, min_keep=2, keep_daily=7,
                                                 keep_weekly=4, keep_monthly=12, keep_yearly=3)
    assert retention_for(s, "db1", RetentionConfig(keepLast=5)) == Policy(days=3, keep_last=5)


@pytest.mark.parametrize(("block", "message"), [
    ({"keepDaily": -1}, "databases[0].retention.keepDaily: expected an integer from 0 to "
                        "100000, got -1"),
    ({"keepWeekly": "4"}, 'databases[0].retention.keepWeekly: expected an integer from 0 '
                          'to 100000, got "4"'),
    ({"minKeep": 0}, "databases[0].retention.minKeep: expected an integer from 1 to 100000"),
    ({"days": 40000}, "databases[0].retention.days: expected an integer from 0 (no age "
                      "window) to 36500"),
    ({"keepDialy": 7}, "databases[0].retention.keepDialy: unknown key (known keys: days, "
                       "keepDaily,"),
    ({"days": 0}, "databases[0].retention: days: 0 turns the age window off, so set at "
                  "least one of keepLast"),
    ([7], "databases[0].retention: expected a mapping"),
])
def test_bad_blocks_name_the_key(block, message):
    assert message in error({"retention": block})


def test_retention_days_and_retention_days_conflict():
    assert ("databases[1].retentionDays: retention.days is set too; keep retention.days only"
            in error({}, {"retentionDays": 3, "retention": {"days": 4}}))
