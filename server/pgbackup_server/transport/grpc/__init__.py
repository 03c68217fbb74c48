"""gRPC: the thin servicer, the domain-to-proto translation, the interceptors
(shutdown gate, bearer tokens, errors) and the server with health and reflection."""
