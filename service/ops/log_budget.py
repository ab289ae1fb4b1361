"""A log budget: a few lines per reason per interval, and one line saying how many were dropped.

A refusal costs the caller one request and the broker one log line; a hostile web page can send
thousands a second. The metrics still count every one; the log keeps a sample.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

# Enough to see what is being refused and by whom; a burst past it is one summary line.
LINES_PER_INTERVAL = 10
INTERVAL_SECONDS = 10.0


class LogBudget:
    def __init__(
        self,
        log: logging.Logger,
        *,
        lines: int = LINES_PER_INTERVAL,
        interval: float = INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._lines = lines
        self._interval = interval
        self._clock = clock
        # reason -> [interval start, lines written, lines dropped]. Reasons are our error codes,
        # a fixed set, so this cannot grow with what callers send.
        self._spent: dict[str, list[float]] = {}

    def allow(self, reason: str) -> bool:
        """Whether a line for `reason` may be written now; if not, it is counted as dropped."""
        now = self._clock()
        spent = self._spent.get(reason)
        if spent is None or now - spent[0] >= self._interval:
            if spent is not None and spent[2]:
                self._report(reason)
            spent = self._spent[reason] = [now, 0, 0]
        if spent[1] < self._lines:
            spent[1] += 1
            return True
        if not spent[2]:
            # Said when the interval ends even if nothing more comes; needs the running loop,
            # which every request has.
            loop = asyncio.get_running_loop()
            loop.call_later(spent[0] + self._interval - now, self._report, reason, spent)
        spent[2] += 1
        return False

    def _report(self, reason: str, spent: list[float] | None = None) -> None:
        current = self._spent.get(reason)
        if spent is not None and current is not spent:
            return  # reported already, when a later line opened a new interval
        if current is None or not current[2]:
            return
        self._log.warning(
            "%d log lines dropped for %s in %.0f s; the metrics count them all",
            current[2],
            reason,
            self._interval,
            extra={"event": "lines_dropped", "code": reason, "dropped": int(current[2])},
        )
        current[2] = 0
