"""Safe by default: refuse to serve beyond this host without tokens, unless the
configuration says so explicitly (``auth.allowUnauthenticated``)."""

from __future__ import annotations

import ipaddress

from ..domain.errors import ConfigError
from .model import Settings


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name may resolve to anything


def check_exposure(settings: Settings) -> None:
    """Refuse to serve beyond this host without tokens, unless told to explicitly."""
    if settings.auth.token_sha256 or settings.auth.allow_unauthenticated:
        return
    s = settings.server
    candidates = [("server.grpcAddress", s.grpc_address)]
    if s.envoy:
        candidates.append(("server.httpAddress", s.http_address))
    if settings.metrics.enabled and settings.metrics.address:
        candidates.append(("metrics.address", settings.metrics.address))
    exposed = [(k, a) for k, a in candidates if not _is_loopback(a.rpartition(":")[0])]
    if exposed:
        key, addr = exposed[0]
        raise ConfigError(
            f"{key}: refusing to listen on {addr} without authentication; add token digests "
            "to auth.tokenSha256 (backupctl token new prints one), listen on 127.0.0.1, or "
            "set auth.allowUnauthenticated: true to accept unauthenticated access explicitly")
