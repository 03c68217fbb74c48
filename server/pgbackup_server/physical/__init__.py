"""Physical backups of a whole cluster: pg_basebackup (full and incremental),
chains, pg_combinebackup restores with point-in-time recovery, and WAL archiving
with a supervised pg_receivewal."""
