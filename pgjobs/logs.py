"""Structured logging: key=value text for people, one JSON object a line for machines.

Fields travel in `extra=` (job_id, task, queue, attempt, duration, worker_id, ...), so
every formatter sees the same data.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any

# Attributes every LogRecord has; anything else was passed in `extra=`.
_STANDARD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields attached to a record."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRIBUTES}


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **record_fields(record),
        }
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`time level message key=value ...`, readable in a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in record_fields(record).items())
        line = f"{_timestamp(record)} {record.levelname:<7} {record.getMessage()}"
        if fields:
            line = f"{line} {fields}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


# Filters of every handler on the `pgjobs` logger, those there now and those
# `configure_logging` installs later: a filter may add fields (pgjobs.opentelemetry adds
# the trace ids), and the App, which registers it, is imported before logging is set up.
_handler_filters: list[logging.Filter] = []


def add_handler_filter(record_filter: logging.Filter) -> None:
    """Give pgjobs' log handlers, present and future, `record_filter` (once)."""
    if record_filter not in _handler_filters:
        _handler_filters.append(record_filter)
    for handler in logging.getLogger("pgjobs").handlers:
        handler.addFilter(record_filter)


def configure_logging(log_format: str = "text", level: str = "INFO") -> None:
    """Send pgjobs' logs to stderr in the chosen format."""
    if log_format not in ("text", "json"):
        raise ValueError(f"log format must be 'text' or 'json', got {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    for record_filter in _handler_filters:
        handler.addFilter(record_filter)
    logger = logging.getLogger("pgjobs")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
