"""What the cache holds: one entry per key, in a TLRU with a plain dict mirror for the hot path.

The TLRU is bounded in bytes as well as in entries: a key's names may be 1,536 characters, and
its token's answer repeats them, so ten thousand entries can weigh 10 KB or 1 KB each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cachetools import TLRUCache

from service.names import Key
from service.tokens.token import Token

# What one entry costs beyond the characters of its strings and the bytes its render hook made
# (`nbytes`): the CacheEntry, its Token, the key tuple, the rendered object, every str and
# bytes object's own header, and the entry's slots in the TLRU's dicts, links and heap and in
# `held`. Measured once with tracemalloc (tests/test_memory.py checks it still holds); an
# estimate from lengths costs nothing per insert, where sys.getsizeof's walk would.
ENTRY_OVERHEAD = 1000


def entry_bytes(entry: CacheEntry) -> int:
    """The memory one held entry costs, estimated from its lengths: deterministic and cheap."""
    token = entry.token
    names = len(token.fleet_id) + len(token.compute_name)
    # The key's own copies of the names (parsed from the request) and the token's.
    strings = 2 * names + len(token.fleet_arn) + len(token.compute_arn) + len(token.auth_token)
    return ENTRY_OVERHEAD + strings + getattr(entry.rendered, "nbytes", 0)


@dataclass(slots=True)
class CacheEntry:
    """One held token. Every time here is on the cache's monotonic clock."""

    token: Token
    # When this token (this AuthToken value) first arrived.
    received_at: float
    # When it expires: its remaining lifetime on receipt, added to received_at. Never later
    # than MAX_TRUSTED_LIFETIME after it.
    expires_at: float
    # Start of the refresh window. A request after this gets the token and starts one refresh.
    refresh_at: float
    # The minimum-validity point. From here on the token is never served, and the TLRU drops it.
    serve_until: float
    # After a failed background refresh, no new one starts before this.
    retry_at: float = 0.0
    # Consecutive failed background refreshes; drives the back-off and resets on success.
    failures: int = 0
    # Consecutive refreshes that brought this same token back; drives the same back-off.
    repeats: int = 0
    # Whatever the render hook made of the token (the HTTP layer's pre-rendered bodies), so the
    # hot path serialises nothing.
    rendered: Any = field(default=None, repr=False)


class Entries(TLRUCache[Key, CacheEntry]):
    """The TLRU, with the same entries in a plain dict beside it.

    A dict lookup is all a remembered hit can afford (web/front.py); the TLRU's own lookup costs
    a few microseconds. Every way an entry leaves (replaced, evicted, expired) passes one of
    these overrides, and an eviction passes popitem(): that is how cachetools routes removals,
    and why its version is bounded in pyproject.toml.
    """

    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        timer: Callable[[], float],
        evicted: Callable[[Key, CacheEntry], None] | None = None,
    ) -> None:
        # One size bound for both: every entry counts at least max_bytes/max_entries, so no more
        # than max_entries fit, and no more than about max_bytes of them. The TLRU evicts the
        # least recently used until a new one fits, whichever bound it meets.
        self.unit = -(-max_bytes // max_entries)
        # Each entry's time to use is its own serve_until, on the same clock as the timer.
        super().__init__(
            maxsize=self.unit * max_entries,
            ttu=_serve_until,
            timer=timer,
            getsizeof=self.charge,
        )
        self.held: dict[Key, CacheEntry] = {}
        self._evicted = evicted

    def charge(self, entry: CacheEntry) -> int:
        """What an entry counts against the bound: its bytes, or its share of the entries."""
        return max(self.unit, entry_bytes(entry))

    def __setitem__(self, key: Key, value: CacheEntry) -> None:
        super().__setitem__(key, value)
        if key in self:  # not stored if it had already expired
            self.held[key] = value
        else:
            self.held.pop(key, None)

    def __delitem__(self, key: Key) -> None:
        self.held.pop(key, None)  # first: the TLRU raises KeyError after removing an expired one
        super().__delitem__(key)

    def popitem(self) -> tuple[Key, CacheEntry]:
        # Only the LRU bound evicts through here (after expiring what is due): the entry is
        # still valid, and the cache may want to remember it.
        key, entry = super().popitem()
        if self._evicted is not None:
            self._evicted(key, entry)
        return key, entry

    def expire(self, time: Any = None) -> Any:
        expired = super().expire(time)
        for key, _ in expired:
            self.held.pop(key, None)
        return expired


def _serve_until(_key: Key, entry: CacheEntry, _now: float) -> float:
    return entry.serve_until
