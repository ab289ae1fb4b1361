"""Test helpers: a fake clock, a fake token source, and waiting on conditions with deadlines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from service.upstream import Token


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], *, timeout: float = 10.0, what: str = ""
) -> None:
    """Wait until condition() holds; fail after `timeout` seconds. Never a bare sleep."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {what or condition}")
        await asyncio.sleep(0.005)


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeSource:
    """A TokenSource that mints numbered tokens, and can be held, failed or slowed."""

    def __init__(self, clock: Callable[[], float], lifetime: float = 3600.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls = 0
        self.error: Exception | None = None
        self.gate: asyncio.Event | None = None  # when set to an unset Event, fetches wait on it
        self.expires_at: float | None = None  # force an expiry (e.g. one already in the past)

    def hold(self) -> asyncio.Event:
        self.gate = asyncio.Event()
        return self.gate

    async def fetch(self, fleet_id: str, compute_name: str) -> Token:
        self.calls += 1
        number = self.calls
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return Token(
            fleet_id=fleet_id,
            fleet_arn=f"arn:aws:gamelift:us-west-2::fleet/{fleet_id}",
            compute_name=compute_name,
            compute_arn=f"arn:aws:gamelift:us-west-2::compute/{compute_name}",
            auth_token=f"token-{number}",
            expires_at=self.expires_at or self.clock() + self.lifetime,
        )
