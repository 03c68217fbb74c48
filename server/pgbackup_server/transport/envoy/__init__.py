"""Envoy in front of backupd: its configuration (config.py) and the supervised child
process (process.py). Importing this package never pulls in grpc or protobuf."""

from __future__ import annotations

from .config import (
    DESCRIPTOR_PATH,
    REST_API_PATH,
    REST_GUARD_PATH,
    EnvoySpec,
    TlsFiles,
    build_config,
    render_cluster_config,
    render_config,
    rest_guard_code,
)
from .process import EnvoyProcess, EnvoySupervisor, find_envoy

__all__ = [
    "DESCRIPTOR_PATH", "REST_API_PATH", "REST_GUARD_PATH", "EnvoyProcess", "EnvoySpec",
    "EnvoySupervisor", "TlsFiles", "build_config", "find_envoy", "render_cluster_config",
    "render_config", "rest_guard_code",
]
