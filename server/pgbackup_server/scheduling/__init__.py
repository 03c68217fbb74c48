"""Cron schedules: firing backups in the configured timezone, and catching up the
fires missed while the service was down."""
