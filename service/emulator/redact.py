"""Keeps auth tokens out of uvicorn's websocket log lines, which print the whole query string."""

from __future__ import annotations

import logging
import re

# The SDK sends its token as the `Authorization` query parameter (SDK5.md), and uvicorn logs
# '"WebSocket /sdk?Authorization=..." [accepted]' at info on its error logger.
_TOKEN_PARAMETER = re.compile(r"(Authorization=)[^&\s\"']*")


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = _TOKEN_PARAMETER.sub(r"\1***", record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_PARAMETER.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args
            )
        return True


def install() -> None:
    """Add the filter to uvicorn's error logger, once per process."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, RedactTokens) for f in logger.filters):
        logger.addFilter(RedactTokens())
