"""Logging, configured once: seed-like console lines or JSON lines.

Console: ``INFO    Database backup completed successfully    file_path=...``.
Standard-library loggers (APScheduler, grpc) go through the same renderer.
"""

from __future__ import annotations

import logging
import sys
import unicodedata
from typing import Any

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def _console(_logger: Any, _name: str, event: dict[str, Any]) -> str:
    level = str(event.pop("level", "info")).upper()
    message = _escape(str(event.pop("event", "")))
    timestamp = event.pop("timestamp", "")
    event.pop("logger", None)
    exc = event.pop("exception", None)
    fields = "    ".join(f"{_escape(str(k))}={_fmt(v)}" for k, v in event.items())
    line = f"{timestamp} {level:<8}{message}" + (f"    {fields}" if fields else "")
    return line + (f"\n{exc}" if exc else "")


def _fmt(value: Any) -> str:
    text = _escape(str(value))
    return f'"{text}"' if (" " in text or not text) else text


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(text: str) -> str:
    """Control characters as escapes: a value (a path, a name, an error from
    elsewhere) must never start a new line and forge one."""
    if text.isprintable():
        return text
    return "".join(_ESCAPES.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else
                                        f"\\u{ord(ch):04x}")
                   if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in text)


def configure(level: str = "info", fmt: str = "console", stream: Any = None) -> None:
    """Set up structlog and the standard library logging to one stream."""
    renderer: Any = structlog.processors.JSONRenderer() if fmt == "json" else _console
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
        foreign_pre_chain=[structlog.stdlib.add_log_level,
                           structlog.processors.TimeStamper(fmt="iso", utc=True)]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    # APScheduler is chatty at INFO ("Running job ..."); ours already says it.
    logging.getLogger("apscheduler").setLevel(max(_LEVELS[level], logging.WARNING))
    # Alembic announces every migration step at INFO; the store logs what matters.
    logging.getLogger("alembic").setLevel(max(_LEVELS[level], logging.WARNING))
    # boto3 (S3 Object Lock) logs signed request headers (the access key id) and every
    # response body at DEBUG; the storage layer reports what matters, scrubbed.
    for name in ("boto3", "botocore", "urllib3", "s3transfer"):
        logging.getLogger(name).setLevel(max(_LEVELS[level], logging.WARNING))
