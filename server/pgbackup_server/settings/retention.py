"""``retention:`` blocks (per target, per destination) and how they merge into the
policy one place applies.

Field by field, the most specific block wins: a destination's ``retention``, then the
target's ``retention`` (and its older ``retentionDays``), then ``backup.retentionDays``
and ``backup.retentionMinKeep``. ``days: 0`` turns the age window off, so only
``minKeep``, ``keepLast`` and the period rules keep backups.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import StrictInt, model_validator

from ..domain.retention import Policy
from .fields import Section, problem, setting

if TYPE_CHECKING:
    from .model import Settings
    from .targets import TargetConfig

_COUNT = "an integer from 0 to 100000"


class RetentionConfig(Section):
    """One ``retention:`` block; a key left out is inherited (see the module)."""

    days: StrictInt | None = setting(
        None, expected="an integer from 0 (no age window) to 36500", ge=0, le=36500)
    min_keep: StrictInt | None = setting(None, alias="minKeep",
                                         expected="an integer from 1 to 100000",
                                         ge=1, le=100000)
    keep_last: StrictInt | None = setting(None, alias="keepLast", expected=_COUNT,
                                          ge=0, le=100000)
    keep_hourly: StrictInt | None = setting(None, alias="keepHourly", expected=_COUNT,
                                            ge=0, le=100000)
    keep_daily: StrictInt | None = setting(None, alias="keepDaily", expected=_COUNT,
                                           ge=0, le=100000)
    keep_weekly: StrictInt | None = setting(None, alias="keepWeekly", expected=_COUNT,
                                            ge=0, le=100000)
    keep_monthly: StrictInt | None = setting(None, alias="keepMonthly", expected=_COUNT,
                                             ge=0, le=100000)
    keep_yearly: StrictInt | None = setting(None, alias="keepYearly", expected=_COUNT,
                                            ge=0, le=100000)

    @model_validator(mode="after")
    def _keeps_something(self) -> RetentionConfig:
        rules = (self.min_keep, self.keep_last, self.keep_hourly, self.keep_daily,
                 self.keep_weekly, self.keep_monthly, self.keep_yearly)
        if self.days == 0 and not any(rules):
            raise problem("days: 0 turns the age window off, so set at least one of "
                          "keepLast, keepHourly, keepDaily, keepWeekly, keepMonthly, "
                          "keepYearly or minKeep (else only the newest backup is kept)")
        return self

    def over(self, policy: Policy) -> Policy:
        """``policy`` with the keys this block sets replaced."""
        values = {name: getattr(self, name) for name in Policy.__slots__}
        return Policy(**{name: getattr(policy, name) if value is None else value
                         for name, value in values.items()})


def retention_for(settings: Settings, target: TargetConfig | str | None,
                  destination_retention: RetentionConfig | None = None) -> Policy:
    """The policy for ``target``'s backups at one destination (a target name not
    configured, or None: the ``backup:`` defaults)."""
    b = settings.backup
    policy = Policy(days=b.retention_days, min_keep=b.retention_min_keep)
    if isinstance(target, str):
        target = next((t for t in settings.targets if t.name == target), None)
    if target is not None:
        if target.retention_days:
            policy = RetentionConfig(days=target.retention_days).over(policy)
        if target.retention is not None:
            policy = target.retention.over(policy)
    if destination_retention is not None:
        policy = destination_retention.over(policy)
    return policy
