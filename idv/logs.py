"""Structured JSON-lines logging. Only whitelisted, non-personal fields are ever emitted."""

from __future__ import annotations

import json
import logging
import sys
import time

# Fields a log call may attach with `extra=`; anything else is dropped, so a
# careless `extra={"name": ...}` cannot leak personal data into the log.
ALLOWED_FIELDS = frozenset({
    "rpc", "request_id", "caller", "purpose", "verdict", "reason", "error_reason", "code", "timings_ms",
    "template_count", "model", "source", "port", "seconds", "fingerprints", "state", "in_flight", "path",
    "count", "mode", "key_id", "records",
    "chosen", "variants",  # issue 12: which model build serves, and the start-time measurements
})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ALLOWED_FIELDS:
            if key in record.__dict__:
                entry[key] = record.__dict__[key]
        if record.exc_info:
            # The exception type and where it happened; not its message, which may quote input.
            exc_type = record.exc_info[0]
            entry["exc_type"] = exc_type.__name__ if exc_type else "?"
            entry["trace"] = [
                line.strip() for line in self.formatException(record.exc_info).splitlines() if line.startswith("  File ")
            ]
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str = "INFO", stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
