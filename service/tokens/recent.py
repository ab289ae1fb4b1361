"""What the cache remembers of keys it holds no token for: recent failures and evicted tokens.

Without it, a failing key costs a GameLift call per request, and a key the LRU pushed out costs
one each time it is asked for again: both spend the account's shared quota. The record is
small and bounded, so a flood of distinct keys cannot grow it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from service import errors
from service.names import Key
from service.tokens.entries import CacheEntry


@dataclass(slots=True)
class Trace:
    """One key's recent past. Times are on the cache's monotonic clock."""

    # Consecutive failed fetches for this key with no token held; drives its back-off.
    failures: int = 0
    # No new fetch for this key before this; requests meanwhile get `error` again.
    retry_at: float = 0.0
    # The last fetch's error, given again (with a truthful Retry-After) during the back-off.
    error: errors.BrokerError | None = None
    # A still-valid token the LRU evicted: served again, and put back, without a call.
    evicted: CacheEntry | None = None


class Recent:
    """A bounded LRU of Traces: the oldest is forgotten first."""

    def __init__(self, max_keys: int) -> None:
        self._max_keys = max_keys
        self._traces: OrderedDict[Key, Trace] = OrderedDict()

    def __len__(self) -> int:
        return len(self._traces)

    def get(self, key: Key) -> Trace | None:
        return self._traces.get(key)

    def pop(self, key: Key) -> Trace | None:
        return self._traces.pop(key, None)

    def trace(self, key: Key) -> Trace:
        """The key's trace, made if it has none, and marked as the most recent."""
        trace = self._traces.get(key)
        if trace is None:
            trace = self._traces[key] = Trace()
            while len(self._traces) > self._max_keys:
                self._traces.popitem(last=False)
        else:
            self._traces.move_to_end(key)
        return trace


def again(error: errors.BrokerError, retry_after: float) -> errors.BrokerError:
    """The same error once more, for a request during the key's back-off."""
    repeated = type(error)(error.message, code=error.code)
    repeated.retry_after = max(1, int(retry_after + 0.999))  # whole seconds, rounded up
    return repeated
