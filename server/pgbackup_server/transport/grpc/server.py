"""The gRPC server: BackupService, the standard health service and reflection, behind
the interceptors, on ``server.grpcAddress`` (with TLS when configured) and, for
Envoy, on a clear-text loopback port."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ...domain.errors import ConfigError
from ...settings import Settings
from .api import pb, pb_grpc
from .auth import AuthInterceptor
from .interceptors import ErrorInterceptor, ShutdownGate

log = structlog.get_logger("pgbackup")
SERVICE_NAME = "backup.v1.BackupService"


class GrpcServer:
    """Built with the servicer; ``start`` binds the ports."""

    def __init__(self, settings: Settings, servicer: pb_grpc.BackupServiceServicer) -> None:
        self.settings = settings
        b = settings.backup
        self.gate = ShutdownGate()
        interceptors: list[Any] = [self.gate]  # outermost: while stopping, all get UNAVAILABLE
        if settings.auth.token_sha256:
            interceptors.append(AuthInterceptor(settings.auth.token_sha256))
        interceptors.append(ErrorInterceptor())
        workers = b.max_concurrent + b.max_queued + 32
        self._server = grpc.server(ThreadPoolExecutor(max_workers=workers,
                                                      thread_name_prefix="grpc"),
                                   interceptors=interceptors,
                                   options=[("grpc.so_reuseport", 0)])
        pb_grpc.add_BackupServiceServicer_to_server(servicer, self._server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        names = (pb.DESCRIPTOR.services_by_name["BackupService"].full_name,
                 health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self._server)
        self.port = 0  # server.grpcAddress's port, once bound
        self.upstream_port = 0  # where Envoy sends requests (clear text on loopback)

    def start(self) -> None:
        s = self.settings.server
        try:
            if s.tls is None:
                self.port = self._server.add_insecure_port(s.grpc_address)
                self.upstream_port = self.port
            else:
                self.port = self._server.add_secure_port(s.grpc_address, _credentials(
                    self.settings))
                # Envoy reaches the service over loopback in clear text; clients reach
                # Envoy and the gRPC port over TLS. Tokens apply on both.
                self.upstream_port = self._server.add_insecure_port("127.0.0.1:0")
        except RuntimeError as exc:
            raise ConfigError(f"server.grpcAddress: cannot listen on {s.grpc_address} "
                              f"({exc}); is another backupd running?") from None
        self._server.start()
        self.set_serving(True)
        log.info("gRPC server listening",
                 address=f"{s.grpc_address.rpartition(':')[0]}:{self.port}")

    def set_serving(self, ok: bool) -> None:
        """gRPC health for the whole server and for BackupService."""
        status = (health_pb2.HealthCheckResponse.SERVING if ok
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def refuse_new_calls(self) -> None:
        """New RPCs get UNAVAILABLE at once; health checks answer NOT_SERVING."""
        self.gate.close()
        self.health.enter_graceful_shutdown()

    def wait_idle(self, timeout: float) -> bool:
        return self.gate.wait_idle(timeout)

    def stop(self) -> None:
        self._server.stop(grace=1).wait(5)


def _credentials(settings: Settings) -> Any:
    tls = settings.server.tls
    assert tls is not None
    key, cert = tls.key.read_bytes(), tls.cert.read_bytes()
    ca = tls.client_ca.read_bytes() if tls.client_ca else None
    for name, data in (("cert", cert), ("key", key), ("clientCa", ca)):
        if data is not None and b"-----BEGIN" not in data:
            raise ConfigError(f"server.tls.{name}: not a PEM file")
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                       require_client_auth=ca is not None)
