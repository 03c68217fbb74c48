"""PostgreSQL: connection strings, client programs, servers (embedded included)."""
