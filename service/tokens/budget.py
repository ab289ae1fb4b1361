"""The host's budget of GameLift calls: a token bucket that fetches for empty keys come first in.

GameLift's GetComputeAuthToken limit is per account, shared by every host. One broker must
never spend more than its share, whatever its callers do, and when the budget is short a
game server waiting for its first token matters more than renewing one that still works.
"""

from __future__ import annotations

from collections.abc import Callable


class Budget:
    """`rate` calls a second, `burst` at once. Times are on the given monotonic clock."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self._rate = rate
        self._burst = burst
        self._now = clock
        self._level = burst
        self._at = clock()

    def _refill(self) -> float:
        now = self._now()
        self._level = min(self._burst, self._level + (now - self._at) * self._rate)
        self._at = now
        return self._level

    def reserve(self, max_wait: float) -> float | None:
        """Book one call for a key with no token: how long to wait for it (0 for at once), or
        None if that would be longer than `max_wait`, and then nothing is booked. Booked calls
        may take the level below zero: later callers wait behind them."""
        level = self._refill()
        wait = 0.0 if level >= 1 else (1 - level) / self._rate
        if wait > max_wait:
            return None
        self._level -= 1
        return wait

    def take_spare(self) -> bool:
        """One call for a refresh of a token that still works, only if one is spare now:
        booked calls come first, and a refresh can wait for its next turn."""
        if self._refill() >= 1:
            self._level -= 1
            return True
        return False

    def next_spare(self) -> float:
        """Seconds until take_spare() can succeed."""
        return max(0.0, (1 - self._refill()) / self._rate)
