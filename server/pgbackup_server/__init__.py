"""backupd: scheduled pg_dump backups with retention, served over gRPC and REST."""

__version__ = "0.1.0"
