"""Riding out a store outage: PostgreSQL restarting, a failover, a dropped connection.

A write the store could not take is tried again (tenacity) for up to
:data:`OUTAGE_SECONDS`; SQLAlchemy's pool pre-ping replaces dead connections.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, PendingRollbackError
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

P = ParamSpec("P")
T = TypeVar("T")
OUTAGE_SECONDS = 30.0


def transient(exc: BaseException) -> bool:
    """Connection lost, server starting or shutting down, deadlock, serialization."""
    return isinstance(exc, OperationalError | InterfaceError | PendingRollbackError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated)


def on_store(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)``, tried again while the store is away."""
    for attempt in Retrying(retry=retry_if_exception(transient),
                            stop=stop_after_delay(OUTAGE_SECONDS),
                            wait=wait_exponential(multiplier=0.1, max=1.0), reraise=True):
        with attempt:
            return fn(*args, **kwargs)
    raise AssertionError("unreachable")


class RetryingRunStore:
    """A run store whose calls ride out a store outage (the replicas' own PostgreSQL
    restarting mid-run): a recorded outcome is never lost to a dropped connection.
    Progress is best effort: it is persisted again a second later."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def set_progress(self, run_id: int, *, bytes_written: int,
                     estimated_total_bytes: int) -> None:
        try:
            self._store.set_progress(run_id, bytes_written=bytes_written,
                                     estimated_total_bytes=estimated_total_bytes)
        except Exception:  # noqa: S110 - the next second's write carries it
            pass

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return on_store(attr, *args, **kwargs)

        return call
