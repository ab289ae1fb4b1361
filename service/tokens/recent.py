"""What the cache remembers of keys it holds no token for: recent failures and evicted tokens.

Without it, a failing key costs a GameLift call per request, and a key the LRU pushed out costs
one each time it is asked for again: both spend the account's shared quota. The record is
small and bounded, in keys and in bytes, so a flood of distinct keys cannot grow it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from service import errors
from service.names import Key
from service.tokens.entries import CacheEntry, entry_bytes

# A Trace, its key tuple and its slot in the OrderedDict, beyond the names' characters
# (tracemalloc, as entries.ENTRY_OVERHEAD).
TRACE_OVERHEAD = 340


@dataclass(slots=True)
class Trace:
    """One key's recent past. Times are on the cache's monotonic clock."""

    # Consecutive failed fetches for this key with no token held; drives its back-off.
    failures: int = 0
    # No new fetch for this key before this; requests meanwhile get `error` again.
    retry_at: float = 0.0
    # The last fetch's error, given again (with a truthful Retry-After) during the back-off.
    error: errors.BrokerError | None = None
    # A still-valid token the LRU evicted: served again, and put back, without a call. Set and
    # taken through Recent, which counts its bytes.
    evicted: CacheEntry | None = None
    # What this trace counts against the record's byte bound now.
    nbytes: int = 0


class Recent:
    """A bounded LRU of Traces: the oldest is forgotten first, past either bound."""

    def __init__(self, max_keys: int, max_bytes: int) -> None:
        self._max_keys = max_keys
        self._max_bytes = max_bytes
        self._bytes = 0
        self._traces: OrderedDict[Key, Trace] = OrderedDict()

    def __len__(self) -> int:
        return len(self._traces)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key: Key) -> Trace | None:
        return self._traces.get(key)

    def pop(self, key: Key) -> Trace | None:
        trace = self._traces.pop(key, None)
        if trace is not None:
            self._bytes -= trace.nbytes
        return trace

    def trace(self, key: Key) -> Trace:
        """The key's trace, made if it has none, and marked as the most recent."""
        trace = self._traces.get(key)
        if trace is None:
            trace = self._traces[key] = Trace(nbytes=TRACE_OVERHEAD + len(key[0]) + len(key[1]))
            self._bytes += trace.nbytes
            self._bound()
        else:
            self._traces.move_to_end(key)
        return trace

    def keep_evicted(self, key: Key, entry: CacheEntry) -> None:
        """Remember a still-valid entry the cache's LRU bound pushed out."""
        trace = self.trace(key)
        self.take_evicted(trace)
        trace.evicted = entry
        size = entry_bytes(entry)
        trace.nbytes += size
        self._bytes += size
        self._bound()

    def take_evicted(self, trace: Trace) -> CacheEntry | None:
        """The trace's evicted entry, forgotten by the trace."""
        entry, trace.evicted = trace.evicted, None
        if entry is not None:
            size = entry_bytes(entry)
            trace.nbytes -= size
            self._bytes -= size
        return entry

    def _bound(self) -> None:
        # The newest trace stays even alone over the byte bound: it is the one just asked for.
        while len(self._traces) > 1 and (
            len(self._traces) > self._max_keys or self._bytes > self._max_bytes
        ):
            _, oldest = self._traces.popitem(last=False)
            self._bytes -= oldest.nbytes


def again(error: errors.BrokerError, retry_after: float) -> errors.BrokerError:
    """The same error once more, for a request during the key's back-off."""
    repeated = type(error)(error.message, code=error.code)
    repeated.retry_after = max(1, int(retry_after + 0.999))  # whole seconds, rounded up
    return repeated
