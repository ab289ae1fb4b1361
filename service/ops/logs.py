"""Structured logging: one JSON object a line, with the `extra` fields a call site passes."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

# Attributes every LogRecord has; anything else on a record came in through `extra=`.
# uvicorn's color_message repeats msg with terminal escapes: noise in a JSON line.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


# uvicorn's life-cycle lines, said once per server: with the embedded emulator and the ops
# listener there are up to three servers in the process, and the broker's own start, ready,
# draining and stopped lines say it once, for all of them.
_UVICORN_LIFECYCLE = frozenset(
    {
        "Started server process [%d]",
        "Waiting for application startup.",
        "Application startup complete.",
        "Shutting down",
        "Waiting for application shutdown.",
        "Application shutdown complete.",
        "Finished server process [%d]",
    }
)


def _not_lifecycle(record: logging.LogRecord) -> bool:
    return record.msg not in _UVICORN_LIFECYCLE


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                line[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            # The type only: an exception's text may quote a response body, and so a token.
            line["exc_type"] = record.exc_info[0].__name__
        return json.dumps(line, default=str)


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's loggers propagate to ours, so every line has one shape.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    uvicorn_error = logging.getLogger("uvicorn.error")
    if _not_lifecycle not in uvicorn_error.filters:
        uvicorn_error.addFilter(_not_lifecycle)
