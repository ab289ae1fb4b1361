"""Readiness: the one answer that /readyz, the "ready" log line and systemd all give."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from service.ops.notify import Notifier

log = logging.getLogger("service.readiness")

# A check returns why the broker is not ready, or None when it has no objection.
Check = Callable[[], str | None]

# How often the announcer looks; readiness has no event of its own (a prefetched token turning
# valid, say), and this only decides how soon after that the line is logged.
POLL_SECONDS = 0.05


class Readiness:
    """Why the broker is not ready, if it is not, from the server, the start-up and the parts."""

    def __init__(self, notifier: Notifier | None = None) -> None:
        self.notifier = notifier or Notifier(None)
        # Set by the server once its listeners accept connections, and on a stop signal.
        self.serving = False
        self.draining = False
        self._checks: list[Check] = []

    def require(self, check: Check) -> None:
        self._checks.append(check)

    def reason(self) -> str | None:
        """None when ready; otherwise why not, in words /readyz answers with."""
        if self.draining:
            return "shutting down"
        if not self.serving:
            return "starting"
        for check in self._checks:
            if (why := check()) is not None:
                return why
        return None

    def drain(self) -> None:
        """A stop signal came: not ready from now on, and systemd is told."""
        if not self.draining:
            self.draining = True
            log.info("stopping: /readyz is 503 from now on", extra={"event": "stopping"})
            self.notifier.send(STOPPING="1", STATUS="draining")

    async def announce(self) -> None:
        """Log every change of readiness, and tell systemd READY=1 the first time it is ready.

        Runs for the app's lifetime; a prefetched token that lapses makes it unready again.
        """
        said: str | None = ""  # nothing said yet
        announced = False
        while not self.draining:
            why = self.reason()
            if why != said and why != "starting":
                if why is None:
                    log.info("ready", extra={"event": "ready"})
                    fields = {"STATUS": "serving tokens"}
                    if not announced:
                        fields = {"READY": "1", **fields}
                        announced = True
                    self.notifier.send(**fields)
                else:
                    # Waiting for a first prefetch is normal; losing readiness is not.
                    level = logging.WARNING if announced else logging.INFO
                    log.log(level, "not ready", extra={"event": "not_ready", "reason": why})
                    self.notifier.send(STATUS=f"not ready: {why}")
                said = why
            await asyncio.sleep(POLL_SECONDS)
