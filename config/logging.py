"""JSON log lines carrying the trace, span and job of the work in hand."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

_job_id: ContextVar[str | None] = ContextVar("job_id", default=None)

# LogRecord attributes that are not "extra" fields passed by the caller.
_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


@contextmanager
def bind_job_id(job_id: str) -> Iterator[None]:
    """Tag every log line written inside the block with this job id."""
    token = _job_id.set(job_id)
    try:
        yield
    finally:
        _job_id.reset(token)


class ContextFilter(logging.Filter):
    """Adds trace_id, span_id (from the current OpenTelemetry span) and job_id to a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        record.trace_id = format(context.trace_id, "032x") if context.is_valid else None
        record.span_id = format(context.span_id, "016x") if context.is_valid else None
        if getattr(record, "job_id", None) is None:
            record.job_id = _job_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message, ids, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "timestamp": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and value is not None and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def logging_config(
    *, level: str = "INFO", formatter: str = "json", loggers: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The one logging setup, as a dictConfig: every line to stdout through ContextFilter, as
    JSON ("json") or readable text ("console"). Django's LOGGING and gunicorn's logconfig_dict
    both come from here and add their own loggers."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "config.logging.ContextFilter"}},
        "formatters": {
            "json": {"()": "config.logging.JsonFormatter"},
            "console": {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"},
        },
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "filters": ["context"],
                "formatter": formatter,
            }
        },
        "root": {"handlers": ["stdout"], "level": level},
        "loggers": dict(loggers or {}),
    }
