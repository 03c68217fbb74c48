"""The configured destinations, built once at start from ``destinations:``."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

from ..domain.errors import NotFound
from ..domain.ports import Destination
from ..settings.destinations import DestinationConfig
from .local import LocalDestination
from .objects import ObjectDestination


def build_destination(config: DestinationConfig, env: Mapping[str, str] | None = None,
                      **options: Any) -> Destination:
    """One destination; credentials are read from the environment variables the config
    names (``options`` tune object stores: part size, retries, timeouts)."""
    if config.is_local:
        return LocalDestination(config.name, config.path)
    env = os.environ if env is None else env
    return ObjectDestination(config, config.secret_options(env), **options)


class Destinations:
    """Destinations by name, in configuration order."""

    def __init__(self, destinations: list[Destination] | tuple[Destination, ...]) -> None:
        self._by_name = {d.name: d for d in destinations}

    @classmethod
    def from_configs(cls, configs: tuple[DestinationConfig, ...],
                     env: Mapping[str, str] | None = None, **options: Any) -> Destinations:
        return cls([build_destination(c, env, **options) for c in configs])

    def get(self, name: str) -> Destination:
        try:
            return self._by_name[name]
        except KeyError:
            raise NotFound(f'unknown destination "{name}"; configured: '
                           f"{', '.join(self._by_name) or '(none)'}") from None

    def names(self) -> list[str]:
        return list(self._by_name)

    def __iter__(self) -> Iterator[Destination]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)
