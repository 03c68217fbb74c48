"""Storage fixtures: one moto S3 server for the session (see ``tests/s3.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from s3 import S3, start_s3


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    server = start_s3()
    yield server
    server.stop()
