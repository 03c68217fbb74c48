"""The configured destinations, built once at start from ``destinations:``."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import structlog

from ..domain.errors import BackupError, NotFound
from ..domain.ports import Destination
from ..settings.destinations import DestinationConfig
from .local import LocalDestination
from .objects import ObjectDestination

log = structlog.get_logger("pgbackup")


def build_destination(config: DestinationConfig, env: Mapping[str, str] | None = None,
                      **options: Any) -> Destination:
    """One destination; credentials are read from the environment variables the config
    names (``options`` tune object stores: part size, retries, timeouts)."""
    if config.is_local:
        return LocalDestination(config.name, config.path)
    env = os.environ if env is None else env
    return ObjectDestination(config, config.secret_options(env), **options)


class Destinations(Mapping[str, Destination]):
    """Destinations by name, in configuration order."""

    def __init__(self, destinations: list[Destination] | tuple[Destination, ...]) -> None:
        self._by_name = {d.name: d for d in destinations}

    @classmethod
    def from_configs(cls, configs: tuple[DestinationConfig, ...],
                     env: Mapping[str, str] | None = None, **options: Any) -> Destinations:
        return cls([build_destination(c, env, **options) for c in configs])

    def named(self, name: str) -> Destination:
        """The destination ``name``; NotFound naming the configured ones."""
        try:
            return self._by_name[name]
        except KeyError:
            raise NotFound(f'unknown destination "{name}"; configured: '
                           f"{', '.join(self._by_name) or '(none)'}") from None

    def __getitem__(self, name: str) -> Destination:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def abort_unfinished_uploads(self) -> None:
        """Abort the multipart uploads a day old at each S3 destination (uploads whose
        abort could not reach the store); a store that does not answer is logged."""
        for dest in self.values():
            if isinstance(dest, ObjectDestination):
                try:
                    if n := dest.abort_unfinished():
                        log.info("Aborted unfinished uploads", destination=dest.name, count=n)
                except BackupError as exc:
                    log.warning("Cannot check for unfinished uploads", destination=dest.name,
                                error=exc.message)

    def secrets(self, configs: tuple[DestinationConfig, ...],
                env: Mapping[str, str] | None = None) -> list[str]:
        """Every credential value the destinations were given, to scrub from texts."""
        env = os.environ if env is None else env
        return [v for c in configs for v in c.secret_options(env).values() if v]
