"""Registrar: RegisterCompute for this host at start-up, retried; DeregisterCompute on exit."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from service import errors
from service.computes.directory import ComputeDirectory, ComputeRecord, Registration
from service.tokens.backoff import backoff_delay

log = logging.getLogger("service.registration")

# DeregisterCompute on exit is one call bounded by this: the compute should not linger, but
# systemd's and the kubelet's stop timeouts are counting.
DEREGISTER_SECONDS = 5.0

# (action, outcome) -> counted: action "register" or "deregister"; outcome "ok", "retry",
# "failed", "timeout" or "skipped".
Record = Callable[[str, str], None]


class Registrar:
    """Registers one compute until it is registered or refused for good, and deregisters it."""

    def __init__(
        self,
        directory: ComputeDirectory,
        registration: Registration,
        *,
        record: Record = lambda _action, _outcome: None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._directory = directory
        self.registration = registration
        self._record = record
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self.compute: ComputeRecord | None = None  # set once registered
        self._refused: str | None = None  # the error code that ended the attempts

    @property
    def key(self) -> tuple[str, str]:
        return self.registration.fleet_id, self.registration.compute_name

    def reason(self) -> str | None:
        """Why /readyz is not 200 on account of the registration, or None once registered."""
        if self.compute is not None:
            return None
        if self._refused is not None:
            return f"compute registration refused: {self._refused}"
        return "registering compute"

    async def run(self) -> ComputeRecord | None:
        """RegisterCompute until it succeeds (the compute), or fails for good (None).

        Transient failures (InternalService, NotReady, throttling, timeouts, no connection) are
        retried with jittered back-off (1-2 s, doubling, at most 30 s); others are final.
        """
        failures = 0
        while True:
            started = time.perf_counter()
            try:
                compute = await self._register_once()
            except errors.UpstreamUnavailable as exc:
                failures += 1
                delay = backoff_delay(failures, self._rng)
                self._log("register", "retry", started, exc, retry_in=round(delay, 2))
                await self._sleep(delay)
                continue
            except errors.BrokerError as exc:
                self._refused = exc.code
                self._log("register", "failed", started, exc, level=logging.ERROR)
                return None
            self.compute = compute
            self._log("register", "ok", started, status=compute.status)
            return compute

    async def _register_once(self) -> ComputeRecord:
        try:
            return await self._directory.register(self.registration)
        except errors.UpstreamConflict:
            # Registered already: by us before a restart, most likely. The same attributes
            # make it ours; anything else is someone else's compute, and stays an error.
            found = await self._directory.describe(*self.key)
            if found.matches(self.registration):
                return found
            raise

    async def deregister(self) -> None:
        """DeregisterCompute, once, within DEREGISTER_SECONDS; never raises."""
        started = time.perf_counter()
        if self.compute is None:
            self._log("deregister", "skipped", started, reason="not registered")
            return
        try:
            async with asyncio.timeout(DEREGISTER_SECONDS):
                await self._directory.deregister(*self.key)
        except TimeoutError:
            self._log("deregister", "timeout", started, level=logging.WARNING)
        except errors.BrokerError as exc:
            self._log("deregister", "failed", started, exc, level=logging.WARNING)
        else:
            self.compute = None
            self._log("deregister", "ok", started)

    def _log(
        self,
        action: str,
        outcome: str,
        started: float,
        error: errors.BrokerError | None = None,
        *,
        level: int = logging.INFO,
        **fields: object,
    ) -> None:
        self._record(action, outcome)
        extra: dict[str, object] = {
            "event": action,
            "fleet": self.registration.fleet_id,
            "compute": self.registration.compute_name,
            "outcome": outcome,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            **fields,
        }
        if error is not None:
            # Our own error types carry no token: their messages are written for callers.
            extra["code"] = error.code
            extra["error"] = error.message
            level = max(level, logging.WARNING)
        log.log(level, f"{action} compute: {outcome}", extra=extra)
