"""Fixtures for copies: one moto S3 for the module folder (``tests/s3.py``), and
backupd started with destinations, quick retries and credentials in the environment."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Running, base_config
from s3 import S3

from pgbackup_server.app import App
from pgbackup_server.backup.copies import RetryPolicy
from pgbackup_server.settings import build_settings

from .helpers import BAD_KEY_VAR, BAD_SECRET, BAD_SECRET_VAR, FAST, Sleeps


@pytest.fixture
def s3_env(s3: S3, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {**s3.env(), BAD_KEY_VAR: "AKIAWRONGKEY00000000", BAD_SECRET_VAR: BAD_SECRET}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def start_with(pg: Any, tmp_path: Path, s3_env: dict[str, str],
               sleeps: Sleeps) -> Iterator[Callable[..., Running]]:
    """Start backupd with ``destinations`` (and config overrides), quick retries."""
    started: list[Running] = []

    def start(destinations: list[dict[str, Any]] | None, *, envoy: bool = False,
              attempts: int = 2, **overrides: Any) -> Running:
        cfg = base_config(pg, tmp_path, **overrides)
        if destinations is not None:
            cfg["destinations"] = destinations
        cfg["server"]["envoy"] = envoy
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
        settings = build_settings(cfg, base=tmp_path, env=dict(os.environ))
        app = App(settings, copy_retry=RetryPolicy(attempts=attempts, sleep=sleeps),
                  destination_options=FAST)
        running = Running(app, tmp_path, cfg, None)
        started.append(running)
        app.start()
        return running

    yield start
    for running in started:
        for c in running.clients:
            c.close()
        running.app.stop()

