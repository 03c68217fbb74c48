"""Observability: nothing fails silently. Service events become Prometheus metrics
(metrics.py), alerts for backups that should exist and do not (alerts.py) and
notifications (../notify); health says whether backups can be written at all
(health.py); logs.py configures the log lines. setup.py starts them together."""
