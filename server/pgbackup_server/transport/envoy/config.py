"""Envoy's bootstrap configuration, built as data and written with ``yaml.safe_dump``.

One listener serves REST (gRPC-JSON transcoding of the ``google.api.http`` rules)
and native gRPC, proxied to backupd's gRPC server; ``/metrics`` (and any other
path backupd serves over plain HTTP) goes to backupd's HTTP endpoints. A Lua
filter checks REST requests before the transcoder (``rest_guard.lua``), and
every error Envoy answers itself is JSON shaped like a gRPC error.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
# Written by scripts/gen_proto.py and packaged: the descriptor set the transcoder
# reads, and the REST methods with their request fields, read by rest_guard.lua.
DESCRIPTOR_PATH = HERE / "backup.pb"
REST_API_PATH = HERE / "rest_api.lua"
REST_GUARD_PATH = HERE / "rest_guard.lua"
SERVICE = "backup.v1.BackupService"
# Paths backupd answers itself over HTTP (not gRPC): routed to its HTTP endpoints.
HTTP_PATHS = ("/metrics",)

# Envoy's own replies -> the gRPC code their JSON body carries.
_LOCAL_REPLIES: list[tuple[int, int, str]] = [
    (400, 3, "bad request: the REST gateway could not read it (%RESPONSE_CODE_DETAILS%)"),
    (404, 5, "no REST method at this path (%RESPONSE_CODE_DETAILS%)"),
    (405, 12, "%LOCAL_REPLY_BODY%"),
    (413, 8, "request body too large (%LOCAL_REPLY_BODY%)"),
    (429, 8, "%LOCAL_REPLY_BODY%"),
    (431, 8, "request headers too large (%LOCAL_REPLY_BODY%)"),
    (500, 13, "%LOCAL_REPLY_BODY%"),
    (502, 14, "%LOCAL_REPLY_BODY%"),
    (503, 14, "%LOCAL_REPLY_BODY%"),
    (504, 4, "%LOCAL_REPLY_BODY%"),
]


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for TLS on the listener, read by Envoy itself. With ``client_ca``,
    clients must present a certificate signed by it (mutual TLS)."""

    cert: str
    key: str
    client_ca: str | None = None


@dataclass(frozen=True)
class EnvoySpec:
    """Where Envoy listens and where it sends requests."""

    http_host: str
    http_port: int
    grpc_host: str
    grpc_port: int
    admin_port: int
    descriptor: str | os.PathLike[str] = DESCRIPTOR_PATH
    tls: TlsFiles | None = None
    http_upstream_port: int | None = None  # backupd's HTTP endpoints (/metrics)
    rest_guard: str | None = field(default=None, repr=False)  # default: the packaged code


MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def rest_guard_code(api_lua: str | None = None) -> str:
    """The Lua filter's code: the generated allow-list, then the checks."""
    if api_lua is None:
        api_lua = REST_API_PATH.read_text()
    return f"{api_lua.rstrip()}\n\n{REST_GUARD_PATH.read_text()}"


def _port(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError(f"{name} must be a port number in 1..65535, got {value!r}")
    return value


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _unbracket(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _typed(kind: str, **config: Any) -> dict[str, Any]:
    return {"@type": f"type.googleapis.com/{kind}", **config}


def render_config(spec: EnvoySpec) -> str:
    """The bootstrap YAML for ``spec``. ValueError for a bad port, a listener host
    that is not an IP address (Envoy binds addresses, it does not resolve names), or
    an empty upstream host."""
    return yaml.safe_dump(build_config(spec), sort_keys=False, width=100)


def build_config(spec: EnvoySpec) -> dict[str, Any]:
    http_host, grpc_host = _unbracket(spec.http_host), _unbracket(spec.grpc_host)
    if not _is_ip(http_host):
        raise ValueError(f"http_host must be an IP address, got {http_host!r}")
    if not grpc_host:
        raise ValueError("grpc_host must not be empty")
    for name in ("http_port", "grpc_port", "admin_port"):
        _port(name, getattr(spec, name))
    listener: dict[str, Any] = {
        "name": "http",
        "address": _address(http_host, spec.http_port),
        # With SO_REUSEPORT a second Envoy could bind the same port and silently share
        # the traffic; without it a port clash fails at startup.
        "enable_reuse_port": False,
        "filter_chains": [{"filters": [_connection_manager(spec)]}],
    }
    if spec.tls is not None:
        listener["filter_chains"][0]["transport_socket"] = _tls(spec.tls)
    clusters = [_grpc_cluster(grpc_host, spec.grpc_port)]
    if spec.http_upstream_port is not None:
        clusters.append(_http_cluster(_port("http_upstream_port", spec.http_upstream_port)))
    return {
        "admin": {"address": _address("127.0.0.1", spec.admin_port)},
        # Caps open client connections (Envoy warns at startup without a cap): far above
        # what an admin API sees, low enough to survive a connection flood.
        "overload_manager": {"resource_monitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": _typed("envoy.extensions.resource_monitors.downstream_connections"
                                   ".v3.DownstreamConnectionsConfig",
                                   max_active_downstream_connections=1024)}]},
        "static_resources": {"listeners": [listener], "clusters": clusters},
    }


def _connection_manager(spec: EnvoySpec) -> dict[str, Any]:
    routes: list[dict[str, Any]] = []
    if spec.http_upstream_port is not None:
        for path in HTTP_PATHS:
            routes.append({
                "match": {"path": path},
                "route": {"cluster": "backupd_http", "timeout": "30s"},
                # Plain HTTP: neither the REST guard nor the transcoder applies.
                "typed_per_filter_config": {
                    "envoy.filters.http.lua": _typed(
                        "envoy.extensions.filters.http.lua.v3.LuaPerRoute", disabled=True),
                    "envoy.filters.http.grpc_json_transcoder": _typed(
                        "envoy.config.route.v3.FilterConfig", disabled=True)}})
    routes.append({
        "match": {"prefix": "/"},
        "route": {
            "cluster": "backupd",
            # The default 15 s would abort long synchronous backups.
            "timeout": "0s",
            # No cap of our own; a gRPC client's deadline (grpc-timeout) is honoured.
            "max_stream_duration": {"grpc_timeout_header_max": "0s"}}})
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": _typed(
            "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            stat_prefix="http",
            # AUTO: the same port serves REST (HTTP/1.1) and gRPC (HTTP/2).
            codec_type="AUTO",
            # A synchronous backup sends nothing until pg_dump is done: never cut a
            # quiet stream.
            stream_idle_timeout="0s",
            local_reply_config={"mappers": _local_reply_mappers()},
            route_config={"name": "backupd", "virtual_hosts": [
                {"name": "backupd", "domains": ["*"], "routes": routes}]},
            http_filters=_http_filters(spec)),
    }


def _json_reply(code: int, message: str) -> dict[str, Any]:
    return {"json_format": {"code": code, "message": message, "details": []},
            "content_type": "application/json"}


def _status_is(status: int, op: str = "EQ") -> dict[str, Any]:
    key = f"local_reply.status_{status}" if op == "EQ" else "local_reply.status_other"
    return {"status_code_filter": {"comparison": {
        "op": op, "value": {"default_value": status, "runtime_key": key}}}}


def _metadata_is(key: str, value: str) -> dict[str, Any]:
    """Set by rest_guard.lua on each request (dynamic metadata ``pgbackup``)."""
    return {"metadata_filter": {
        "matcher": {"filter": "pgbackup", "path": [{"key": key}],
                    "value": {"string_match": {"exact": value}}},
        "match_if_key_not_found": False}}


def _local_reply_mappers() -> list[dict[str, Any]]:
    """Envoy's own replies as JSON ``{"code", "message", "details"}``. Native gRPC
    requests are left alone (their status is in trailers). The guard's own refusals
    already carry a message without any input in it; other 400s get a fixed message,
    because the transcoder's quote the request body."""
    rejected = _metadata_is("rest_guard", "rejected")
    mappers: list[dict[str, Any]] = [{"filter": _metadata_is("api", "grpc")}]
    for status, code in ((400, 3), (404, 5)):
        mappers.append({"filter": {"and_filter": {"filters": [rejected, _status_is(status)]}},
                        "body_format_override": _json_reply(code, "%LOCAL_REPLY_BODY%")})
    mappers.append({
        "filter": {"and_filter": {"filters": [
            {"header_filter": {"header": {"name": ":path",
                                          "string_match": {"exact": "/healthz"}}}},
            _status_is(503)]}},
        "body_format_override": _json_reply(
            14, "backupd is not serving (its gRPC health check fails, or Envoy is draining)")})
    for status, code, message in _LOCAL_REPLIES:
        mappers.append({"filter": _status_is(status),
                        "body_format_override": _json_reply(code, message)})
    mappers.append({"filter": _status_is(400, "GE"),
                    "body_format_override": _json_reply(2, "%LOCAL_REPLY_BODY%")})
    return mappers


def _http_filters(spec: EnvoySpec) -> list[dict[str, Any]]:
    code = spec.rest_guard if spec.rest_guard is not None else rest_guard_code()
    return [
        # GET /healthz: 200 while backupd reports SERVING on gRPC health (active check
        # below), 503 otherwise or while draining.
        {"name": "envoy.filters.http.health_check",
         "typed_config": _typed("envoy.extensions.filters.http.health_check.v3.HealthCheck",
                                pass_through_mode=False,
                                headers=[{"name": ":path",
                                          "string_match": {"exact": "/healthz"}}],
                                cluster_min_healthy_percentages={"backupd": {"value": 100}})},
        # Checks REST requests before the transcoder: method and path, query parameters,
        # body fields and their JSON types (generated from the descriptor).
        {"name": "envoy.filters.http.lua",
         "typed_config": _typed("envoy.extensions.filters.http.lua.v3.Lua",
                                default_source_code={"inline_string": code})},
        {"name": "envoy.filters.http.grpc_json_transcoder",
         "typed_config": _typed(
             "envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
             proto_descriptor=os.fspath(spec.descriptor), services=[SERVICE],
             print_options={"add_whitespace": True, "always_print_primitive_fields": True,
                            "preserve_proto_field_names": True},
             # JSON error bodies, and an HTTP status that follows the gRPC code.
             convert_grpc_status=True,
             # The default (1 MiB) is less than a cleanup's decisions over ~7,000
             # backups: such an answer would be a 500, not transcoded.
             max_response_body_size=MAX_MESSAGE_BYTES,
             # Otherwise unknown paths and query parameters go upstream untranscoded
             # and come back as a confusing 503.
             request_validation_options={"reject_unknown_method": True,
                                         "reject_unknown_query_parameters": True})},
        {"name": "envoy.filters.http.router",
         "typed_config": _typed("envoy.extensions.filters.http.router.v3.Router")},
    ]


def _tls(tls: TlsFiles) -> dict[str, Any]:
    context: dict[str, Any] = {
        # h2 for gRPC clients (they insist on ALPN), http/1.1 for REST.
        "alpn_protocols": ["h2", "http/1.1"],
        "tls_certificates": [{"certificate_chain": {"filename": tls.cert},
                              "private_key": {"filename": tls.key}}],
    }
    config: dict[str, Any] = {}
    if tls.client_ca:
        config["require_client_certificate"] = True
        context["validation_context"] = {"trusted_ca": {"filename": tls.client_ca}}
    return {"name": "envoy.transport_sockets.tls", "typed_config": _typed(
        "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext", **config,
        common_tls_context=context)}


def _grpc_cluster(host: str, port: int) -> dict[str, Any]:
    return {
        "name": "backupd",
        # STATIC takes only IP literals; a name (e.g. a container) needs DNS.
        "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
        # For a name: Envoy's default tries IPv6 first, so "localhost" would become ::1
        # and miss a gRPC server bound to 127.0.0.1.
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": "2s",
        "load_assignment": {"cluster_name": "backupd", "endpoints": [
            {"lb_endpoints": [{"endpoint": {"address": _address(host, port)}}]}]},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": _typed(
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                explicit_http_config={"http2_protocol_options": {}})},
        # Feeds /healthz. An unhealthy host still receives requests (panic routing), so
        # a failing check never blocks the API itself.
        "health_checks": [{"timeout": "1s", "interval": "5s",
                           # Without traffic Envoy would otherwise check every 60 s.
                           "no_traffic_interval": "5s", "unhealthy_threshold": 1,
                           "healthy_threshold": 1, "grpc_health_check": {}}],
    }


def _http_cluster(port: int) -> dict[str, Any]:
    return {"name": "backupd_http", "type": "STATIC", "connect_timeout": "2s",
            "load_assignment": {"cluster_name": "backupd_http", "endpoints": [
                {"lb_endpoints": [{"endpoint": {
                    "address": _address("127.0.0.1", port)}}]}]}}


def render_cluster_config(spec: EnvoySpec, upstreams: list[tuple[str, int]],
                          grpc_listener_port: int) -> str:
    """Envoy in front of several backupd replicas (``cluster.enabled``): the REST
    listener of :func:`build_config` plus a gRPC listener, both balanced over
    ``upstreams``; a replica failing its gRPC health check (or two calls in a row)
    is taken out of rotation until it answers SERVING again."""
    config = build_config(spec)
    resources = config["static_resources"]
    backupd = resources["clusters"][0]
    hosts = [_unbracket(h) for h, _ in upstreams]
    backupd["type"] = "STATIC" if all(_is_ip(h) for h in hosts) else "STRICT_DNS"
    backupd["load_assignment"]["endpoints"] = [{"lb_endpoints": [
        {"endpoint": {"address": _address(h, _port("upstream", p))}}
        for h, (_, p) in zip(hosts, upstreams, strict=True)]}]
    backupd["health_checks"] = [{"timeout": "1s", "interval": "2s", "no_traffic_interval": "2s",
                                 "unhealthy_threshold": 2, "healthy_threshold": 1,
                                 "grpc_health_check": {}}]
    # A replica killed between two checks: its connections fail at once, so it leaves
    # the rotation without waiting for the next check.
    backupd["outlier_detection"] = {"consecutive_gateway_failure": 2,
                                    "consecutive_local_origin_failure": 2,
                                    "split_external_local_origin_errors": True,
                                    "interval": "2s", "base_ejection_time": "10s",
                                    "max_ejection_percent": 67}
    # Calls that could not reach a replica go to another one (they never started).
    retry = {"retry_on": "connect-failure,refused-stream,reset-before-request",
             "num_retries": 2}
    manager = resources["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    for host in manager["route_config"]["virtual_hosts"]:
        for route in host["routes"]:
            if route.get("route", {}).get("cluster") == "backupd":
                route["route"]["retry_policy"] = retry
    resources["listeners"].append({
        "name": "grpc",
        "address": _address(_unbracket(spec.http_host), _port("grpc_listener_port",
                                                              grpc_listener_port)),
        "enable_reuse_port": False,
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": _typed(
                "envoy.extensions.filters.network.http_connection_manager.v3."
                "HttpConnectionManager", stat_prefix="grpc", codec_type="HTTP2",
                stream_idle_timeout="0s",
                route_config={"virtual_hosts": [{"name": "backupd", "domains": ["*"], "routes": [
                    {"match": {"prefix": "/"},
                     "route": {"cluster": "backupd", "timeout": "0s",
                               "retry_policy": retry}}]}]},
                http_filters=[{"name": "envoy.filters.http.router", "typed_config": _typed(
                    "envoy.extensions.filters.http.router.v3.Router")}])}]}],
    })
    return yaml.safe_dump(config, sort_keys=False, width=100)
