"""Bearer-token authentication for every RPC except health checks.

Only SHA-256 digests of accepted tokens are configured (``auth.tokenSha256``);
the tokens themselves are never stored. Comparison is constant-time over all
digests, and neither tokens nor digests are ever logged.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from typing import Any

import grpc

# Health must answer without a token: load balancers and Envoy's health check probe it.
EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_bearer(header: str | None, digests: Iterable[str]) -> str | None:
    """The matching digest for an ``authorization`` header value, or None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    presented = token_digest(token.strip()).encode()
    match = None
    for digest in digests:
        # No early exit: the time taken does not depend on which digest matched.
        if hmac.compare_digest(presented, digest.encode()):
            match = digest
    return match


def caller_label(digest: str) -> str:
    """How a caller appears in records: a short digest prefix, never the token."""
    return f"token:{digest[:12]}"


class AuthInterceptor(grpc.ServerInterceptor):
    """Rejects RPCs without a valid ``authorization: Bearer <token>`` with
    UNAUTHENTICATED (HTTP 401 through Envoy)."""

    def __init__(self, digests: Iterable[str]) -> None:
        self.digests = tuple(digests)

    def intercept_service(self, continuation: Callable[[Any], Any],
                          handler_call_details: Any) -> Any:
        method = handler_call_details.method or ""
        if method.startswith(EXEMPT_PREFIXES):
            return continuation(handler_call_details)
        header = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                header = value if isinstance(value, str) else value.decode("latin-1")
                break
        if check_bearer(header, self.digests) is not None:
            return continuation(handler_call_details)
        return deny(continuation(handler_call_details),
                    "missing or invalid bearer token; send 'authorization: Bearer <token>' "
                    "(backupctl --token, or the BACKUP_TOKEN environment variable)")


def deny(handler: Any, message: str,
         code: grpc.StatusCode = grpc.StatusCode.UNAUTHENTICATED) -> Any:
    """A handler of the same kind as ``handler`` that ends every call with ``code``."""
    def abort(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, message)

    if handler is None:
        return None
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            abort, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            abort, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            abort, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
    return grpc.stream_stream_rpc_method_handler(
        abort, request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer)
