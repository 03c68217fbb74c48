"""Alert state in the store: the alerts firing now and since when each subject is
watched. It survives restarts, so an alert is neither repeated nor forgotten."""

from __future__ import annotations

import json
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from ..domain.models import Alert, AlertKind
from .codec import aware
from .schema import alert_tracking, alerts_firing

log = structlog.get_logger("pgbackup")


class SqlAlertStore:
    """Thread-safe; every change is one small transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()

    def firing(self) -> list[Alert]:
        with self.engine.connect() as conn:
            return [_alert(r) for r in conn.execute(select(alerts_firing))]

    def tracking(self) -> dict[str, datetime]:
        with self.engine.connect() as conn:
            return {r.subject: aware(r.since) or r.since
                    for r in conn.execute(select(alert_tracking))}

    def get(self, key: str) -> Alert | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(alerts_firing).where(alerts_firing.c.key == key)).first()
        return None if row is None else _alert(row)

    def fire(self, alert: Alert) -> bool:
        """Record ``alert`` as firing; False when it was firing already (several
        replicas of a cluster see the same condition: only one sends the alert)."""
        values = dict(key=alert.key, kind=alert.kind.value, subject=alert.subject,
                      since=alert.since, details=json.dumps(alert.details, default=str))
        with self._lock, self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                return conn.execute(pg_insert(alerts_firing).values(**values)
                                    .on_conflict_do_nothing()
                                    .returning(alerts_firing.c.key)).first() is not None
            if conn.execute(select(alerts_firing.c.key)
                            .where(alerts_firing.c.key == alert.key)).first() is not None:
                return False
            conn.execute(insert(alerts_firing).values(**values))
            return True

    def resolve(self, key: str) -> bool:
        """Record ``key`` as resolved; False when it was not firing (any more)."""
        with self._lock, self.engine.begin() as conn:
            return conn.execute(delete(alerts_firing).where(alerts_firing.c.key == key)
                                .returning(alerts_firing.c.key)).first() is not None

    def track(self, subjects: dict[str, datetime]) -> None:
        """Start watching ``subjects`` (subject -> since); known ones keep their date."""
        if not subjects:
            return
        with self._lock, self.engine.begin() as conn:
            known = {s for (s,) in conn.execute(select(alert_tracking.c.subject))}
            new = [{"subject": s, "since": t} for s, t in subjects.items() if s not in known]
            if new and conn.dialect.name == "postgresql":  # replicas starting together
                conn.execute(pg_insert(alert_tracking).on_conflict_do_nothing(), new)
            elif new:
                conn.execute(insert(alert_tracking), new)

    def import_legacy(self, path: Path) -> bool:
        """Take over ``alerts.json`` of backupd 0.1.0 once (renamed ``.imported``)."""
        if not path.is_file():
            return False
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            tracking = {s: datetime.fromisoformat(t)
                        for s, t in raw.get("tracking_since", {}).items()}
            firing = [Alert(AlertKind(item["kind"]), item["subject"],
                            datetime.fromisoformat(item["since"]),
                            dict(item.get("details", {}))) for item in raw.get("alerts", [])]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # Not worth refusing to start over: alerts fire again if still true.
            log.warning("Old alert state unreadable; set aside", path=str(path),
                        error=str(exc))
            path.rename(path.with_name(path.name + ".unreadable"))
            return False
        self.track(tracking)
        for alert in firing:
            self.fire(alert)
        path.rename(path.with_name(path.name + ".imported"))
        return True


def _alert(row: Any) -> Alert:
    return Alert(AlertKind(row.kind), row.subject, aware(row.since) or row.since,
                 json.loads(row.details))
