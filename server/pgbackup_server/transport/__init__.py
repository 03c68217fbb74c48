"""The edges clients talk to: gRPC (grpc/), Envoy in front of it for REST (envoy/),
and backupd's own plain-HTTP endpoints (http.py)."""
