"""Injected faults for one action (GetComputeAuthToken unless told): errors, hangs, garbage
answers, expired tokens."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from service.emulator.shapes import ACTIONS

# fault kind -> (HTTP status, AWS error type); the faults that shape the body are handled apart.
ERROR_FAULTS = {
    "internal": (500, "InternalServiceException"),
    "throttle": (400, "ThrottlingException"),
    "not_found": (400, "NotFoundException"),
    "unauthorized": (400, "UnauthorizedException"),
    "invalid_request": (400, "InvalidRequestException"),
    "unsupported_region": (400, "UnsupportedRegionException"),
    "conflict": (400, "ConflictException"),
}
FAULTS = frozenset(ERROR_FAULTS) | {
    "hang",
    "garbage",
    "garbage_json",
    "bad_timestamp",
    "expired",
    "no_endpoint",
}
DEFAULT_ACTION = "GetComputeAuthToken"
TOKEN_ONLY = frozenset({"bad_timestamp", "expired"})  # they shape a token answer
# A Compute without GameLiftServiceSdkEndpoint (the model leaves every member optional).
COMPUTE_ONLY = frozenset({"no_endpoint"})
COMPUTE_ACTIONS = frozenset({"RegisterCompute", "DescribeCompute", "ListCompute"})
# The faults that shape a well-formed answer rather than replace it.
SHAPING = frozenset({"expired", "no_endpoint"})

Receive = Callable[[], Awaitable[dict[str, Any]]]


class Faults:
    """One fault kind for one action, for every call or for the next `remaining` calls, and
    the hang gate."""

    def __init__(self) -> None:
        self.kind: str | None = None
        self.remaining: int | None = None
        self.action = DEFAULT_ACTION
        # Created lazily: an asyncio.Event binds to the loop that first waits on it, and the
        # emulator is often built before the loop that serves it exists.
        self._released: asyncio.Event | None = None

    def set(self, kind: str | None, count: int | None = None, action: str = DEFAULT_ACTION) -> None:
        """Fault every call of `action` (count None) or only the next `count`; kind None clears."""
        if kind is not None and (not isinstance(kind, str) or kind not in FAULTS):
            raise ValueError(f"unknown fault {kind!r}; one of {sorted(FAULTS)}")
        if count is not None and (not isinstance(count, int) or isinstance(count, bool)):
            raise ValueError("count must be an integer or null")
        if count is not None and count < 1:
            raise ValueError("count must be at least 1")
        if not isinstance(action, str) or action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; one of {sorted(ACTIONS)}")
        if kind in TOKEN_ONLY and action != DEFAULT_ACTION:
            raise ValueError(f"the {kind} fault applies to {DEFAULT_ACTION} only")
        if kind in COMPUTE_ONLY and action not in COMPUTE_ACTIONS:
            raise ValueError(f"the {kind} fault applies to {sorted(COMPUTE_ACTIONS)} only")
        self.kind, self.remaining = kind, (count if kind else None)
        self.action = action

    def take(self, action: str) -> str | None:
        """The fault for the call of `action` that just arrived, counting it down."""
        kind = self.kind if action == self.action else None
        if kind is not None and self.remaining is not None:
            self.remaining -= 1
            if self.remaining <= 0:
                self.kind = self.remaining = None
        return kind

    def release(self) -> None:
        """Wake every hanging request."""
        if self._released is not None:
            self._released.set()
            self._released = None  # requests that hang from now on wait on a fresh event

    async def hang(self, receive: Receive) -> bool:
        """Wait for release (True) or for the client to go away (False)."""
        self._released = self._released or asyncio.Event()
        released = asyncio.ensure_future(self._released.wait())
        # Without this, a client that gave up would leave the request to block server shutdown.
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            done, _ = await asyncio.wait({released, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            released.cancel()
            gone.cancel()
        return released in done


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
