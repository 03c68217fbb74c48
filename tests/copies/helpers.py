"""Helpers of the copies tests (fixtures are in conftest.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from s3 import S3

# Object-store requests fail fast (the copy is retried by the service, not by obstore).
FAST: dict[str, Any] = {"retry": {"max_retries": 1, "retry_timeout": timedelta(seconds=2),
                                  "init_backoff": timedelta(milliseconds=50),
                                  "max_backoff": timedelta(milliseconds=100)}}
BAD_KEY_VAR, BAD_SECRET_VAR = "TEST_S3_BAD_KEY", "TEST_S3_BAD_SECRET"
BAD_SECRET = "wrong-secret-Zq81xWp0"


class Sleeps(list[float]):
    """The copy retries' waits, recorded instead of slept."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def s3_entry(s3: S3, name: str, path: str, **extra: Any) -> dict[str, Any]:
    return s3.destination(name, path, **extra)


def bad_credentials(entry: dict[str, Any]) -> dict[str, Any]:
    return {**entry, "credentials": {"accessKeyId": BAD_KEY_VAR,
                                     "secretAccessKey": BAD_SECRET_VAR}}


def copies_of(backup: Any) -> dict[str, Any]:
    """A backup's copies by destination."""
    return {c.destination: c for c in backup.copies}


def metric(app: Any, name: str, **labels: str) -> float:
    """A sample of the service's registry (0 when absent)."""
    registry = app.app.observability.metrics.registry
    return float(registry.get_sample_value(name, labels) or 0.0)
