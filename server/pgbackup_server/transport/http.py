"""backupd's own plain-HTTP endpoints: ``/metrics`` in the Prometheus text format
(``prometheus_client``) and the dashboard (:mod:`.web`), served on loopback for
Envoy, which routes the REST listener's ``/metrics``, ``/`` and ``/ui/`` here; and
``/metrics`` on ``metrics.address`` when that is set.

With ``auth.tokenSha256`` set, ``/metrics`` needs the same bearer token as the API;
the dashboard's files hold no data and are served without one.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog
from prometheus_client import CollectorRegistry, make_wsgi_app

from ..domain.errors import ConfigError
from .grpc.auth import check_bearer
from .web import Site

log = structlog.get_logger("pgbackup")
StartResponse = Callable[..., Any]
App = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per scrape is noise


def _error(start: StartResponse, status: str, code: int, message: str,
           headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    """An error shaped like the API's: ``{"code", "message", "details"}``."""
    data = json.dumps({"code": code, "message": message, "details": []}).encode()
    start(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                   *(headers or [])])
    return [data]


def endpoints(registry: CollectorRegistry | None, token_digests: tuple[str, ...] = (),
              site: Site | None = None) -> App:
    """The WSGI application: the dashboard (``site``) and ``/metrics`` (with a
    ``registry``), 404 elsewhere, 401 without a valid token when tokens are configured
    (except for the dashboard's files)."""
    metrics = make_wsgi_app(registry) if registry is not None else None

    def app(environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        if site is not None and site.handles(environ.get("PATH_INFO", "")):
            return site(environ, start)
        if token_digests and check_bearer(environ.get("HTTP_AUTHORIZATION"),
                                          token_digests) is None:
            return _error(start, "401 Unauthorized", 16,
                          "missing or invalid bearer token; send 'authorization: Bearer "
                          "<token>' (Prometheus: authorization.credentials)",
                          [("WWW-Authenticate", "Bearer")])
        if metrics is not None and environ.get("PATH_INFO") == "/metrics":
            return metrics(environ, start)
        return _error(start, "404 Not Found", 5,
                      "metrics are served at /metrics" if metrics is not None
                      else "metrics are disabled (metrics.enabled: false)")

    return app


class HttpEndpoints:
    """One listener of :func:`endpoints`; ``port`` once serving."""

    def __init__(self, app: App, address: str, *, key: str) -> None:
        self.app = app
        self.address = address
        self.key = key  # the setting that names the address, for errors
        self.port = 0
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        host, _, port = self.address.rpartition(":")
        host = host.strip("[]")
        try:
            self._server = make_server(host, int(port), self.app,
                                       server_class=_IPv6Server if ":" in host else _Server,
                                       handler_class=_Quiet)
        except OSError as exc:
            raise ConfigError(f"{self.key}: cannot listen on {self.address} "
                              f"({exc.strerror or exc}); set another HOST:PORT") from None
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.5}, daemon=True,
                                        name=f"http-{self.port}")
        self._thread.start()
        log.debug("HTTP endpoints listening", address=f"{host}:{self.port}", setting=self.key)
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
