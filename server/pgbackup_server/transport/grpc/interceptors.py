"""The interceptors every RPC passes through, outermost first: the shutdown gate,
bearer-token authentication (:mod:`.auth`), and the one mapping of domain errors
to gRPC status codes."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import structlog

from ...domain.errors import BackupError
from .auth import EXEMPT_PREFIXES, deny

log = structlog.get_logger("pgbackup")


class ErrorInterceptor(grpc.ServerInterceptor):
    """Maps domain errors to their gRPC status; anything else becomes INTERNAL
    with a generic message (the details go to the log, not the client)."""

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any
                          ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if handler.unary_stream is not None:
            return self._stream(handler, method)
        if handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return inner(request, context)
            except Exception as exc:
                _abort(context, exc, method)

        return grpc.unary_unary_rpc_method_handler(
            wrapped, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)

    @staticmethod
    def _stream(handler: Any, method: str) -> Any:
        inner = handler.unary_stream

        def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from inner(request, context)
            except Exception as exc:
                _abort(context, exc, method)

        return grpc.unary_stream_rpc_method_handler(
            wrapped, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


MAX_MESSAGE = 2000


def clip(message: str) -> str:
    """A message short enough for the grpc-message header: one quoting an enormous
    input would make Envoy answer 502 instead of the error."""
    return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE - 1] + "…"


def _abort(context: grpc.ServicerContext, exc: Exception, method: str) -> None:
    """End the RPC with the error's own status; anything unplanned is INTERNAL with
    a generic message (the details go to the log, not to the client)."""
    if isinstance(exc, BackupError):
        code = getattr(grpc.StatusCode, exc.status, grpc.StatusCode.INTERNAL)
        log.debug("RPC failed", method=method, code=code.name, error=exc.message)
        context.abort(code, clip(exc.message))
    log.exception("Unhandled error in RPC", method=method)
    context.abort(grpc.StatusCode.INTERNAL, "internal error; the server log has the details")


SHUTTING_DOWN = "backupd is shutting down; retry on the next instance"


class ShutdownGate(grpc.ServerInterceptor):
    """The outermost interceptor. Once closed, every new RPC but health checks ends
    at once with UNAVAILABLE (HTTP 503 with a JSON body through Envoy) instead of
    waiting on a service that is stopping; it counts the RPCs still in flight so the
    shutdown can let them finish before it takes Envoy and the server down."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._closed = False
        self._active = 0

    def close(self) -> None:
        with self._cond:
            self._closed = True

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no admitted RPC is running; False if some still are after ``timeout``."""
        with self._cond:
            return self._cond.wait_for(lambda: self._active == 0, max(timeout, 0.0))

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any
                          ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or (handler_call_details.method or "").startswith(EXEMPT_PREFIXES):
            return handler  # health checks keep answering (NOT_SERVING while stopping)
        with self._cond:
            if self._closed:
                return deny(handler, SHUTTING_DOWN, grpc.StatusCode.UNAVAILABLE)
            if handler.unary_unary is None and handler.unary_stream is None:
                return handler  # reflection streams: not waited for
            self._active += 1
        return self._counted(handler)

    def _done(self) -> None:
        with self._cond:
            self._active -= 1
            self._cond.notify_all()

    def _counted(self, handler: Any) -> Any:
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                try:
                    yield from inner_stream(request, context)
                finally:
                    self._done()

            return grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        inner = handler.unary_unary

        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return inner(request, context)
            finally:
                self._done()

        return grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
