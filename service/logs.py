"""JSON-lines logging on stderr.

Callers pass structured values in ``extra={"fields": {...}}``; values are
JSON-encoded, so no field can split a record into two lines. Nothing here
ever receives a secret, a token or a raw customer identity. A record logged
while a span is current (tracing on) carries its `trace_id` and `span_id`.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

from service.tracing import current_trace_ids


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        trace_id = getattr(record, "trace_id", None)
        if trace_id:
            entry["trace_id"], entry["span_id"] = trace_id, getattr(record, "span_id", None)
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TraceIdsFilter(logging.Filter):
    """Puts the current span's ids on a record where it is logged: a handler may format it in another
    thread, outside the call's context."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = current_trace_ids()
        if ids is not None:
            record.trace_id, record.span_id = ids
        return True


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send every log record to `stream` (stderr) as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(TraceIdsFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
