"""TokenCache: a token per (fleet, compute), refreshed ahead of expiry, one upstream call a burst.

It wraps any TokenSource and knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from cachetools import TLRUCache

from service import errors
from service.upstream import Token, TokenSource

log = logging.getLogger("service.cache")

Key = tuple[str, str]
Clock = Callable[[], float]

# Back-off for failed background refreshes: never sooner than 1 s, never later than 30 s.
RETRY_MIN_SECONDS = 1.0
RETRY_MAX_SECONDS = 30.0
MAX_TRUSTED_LIFETIME = 86_400.0


class Outcome(enum.StrEnum):
    HIT = "hit"  # a fresh cached token
    STALE = "stale"  # a cached token inside its refresh window
    MISS = "miss"  # this request started the upstream fetch and waited for it
    COLLAPSED = "collapsed"  # this request waited on a fetch another request started


@dataclass(slots=True)
class CacheEntry:
    token: Token
    # Our clock when the answer arrived. lifetime = token.expires_at - received_at.
    received_at: float
    # Start of the refresh window. A request after this gets the token and starts one refresh.
    refresh_at: float
    # The minimum-validity point. From here on the token is never served, and the TLRU drops it.
    serve_until: float
    # After a failed background refresh, no new one starts before this.
    retry_at: float = 0.0
    # Consecutive failed background refreshes; drives the back-off and resets on success.
    failures: int = 0
    # Whatever the render hook made of the token (the HTTP layer's pre-rendered bodies), so the
    # hot path serialises nothing.
    rendered: Any = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class CachePolicy:
    refresh_ahead: float = 300.0
    min_validity: float = 30.0
    max_entries: int = 10_000
    max_inflight: int = 256
    deadline: float = 10.0


class _Entries(TLRUCache[Key, CacheEntry]):
    """The TLRU, with the same entries in a plain dict beside it.

    A dict lookup is all a remembered hit can afford (front.py); the TLRU's own lookup costs a
    few microseconds. Every way an entry leaves (replaced, evicted, expired) passes one of these.
    """

    def __init__(self, maxsize: int, ttu: Any, timer: Clock) -> None:
        super().__init__(maxsize=maxsize, ttu=ttu, timer=timer)
        self.held: dict[Key, CacheEntry] = {}

    def __setitem__(self, key: Key, value: CacheEntry) -> None:  # type: ignore[override]
        super().__setitem__(key, value)
        if key in self:  # not stored if it had already expired
            self.held[key] = value
        else:
            self.held.pop(key, None)

    def __delitem__(self, key: Key) -> None:  # type: ignore[override]
        self.held.pop(key, None)  # first: the TLRU raises KeyError after removing an expired one
        super().__delitem__(key)

    def expire(self, time: Any = None) -> Any:
        expired = super().expire(time)
        for key, _ in expired:
            self.held.pop(key, None)
        return expired


class TokenCache:
    """Serves tokens from memory; fetches through `source` at most once per key at a time."""

    def __init__(
        self,
        source: TokenSource,
        policy: CachePolicy,
        *,
        clock: Clock = time.time,
        render: Callable[[Token], Any] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._source = source
        self._policy = policy
        self._clock = clock
        self._render = render
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self._entries = _Entries(maxsize=policy.max_entries, ttu=_serve_until, timer=clock)
        # One task per key being fetched. Waiters shield it; it removes itself when done, so an
        # error is shared by the callers of that one attempt but never cached.
        self._inflight: dict[Key, asyncio.Task[CacheEntry]] = {}
        # Throttling is per account, not per key: once GameLift throttles one fetch, no new
        # fetch for any key starts before this, so a thousand keys do not all hammer it.
        self._throttled_until = 0.0
        self._throttle_failures = 0

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def held(self) -> dict[Key, CacheEntry]:
        """The entries held now, by key, for reading only: a token past its refresh_at may be
        among them, so check that as peek() does. Reading it is not a use in LRU terms."""
        return self._entries.held

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def fetch(self, fleet_id: str, compute_name: str) -> Token:
        """The TokenSource interface, so a cache can stand wherever a source can."""
        entry, _ = await self.lookup(fleet_id, compute_name)
        return entry.token

    def entry(self, key: Key) -> CacheEntry | None:
        """The entry if its token may still be served (it is before its minimum validity)."""
        return self._entries.get(key)

    async def refresh(self, key: Key) -> CacheEntry:
        """Fetch a new token for `key` now, or join the fetch already under way."""
        task = self._inflight.get(key) or self._start_fetch(key)
        return await asyncio.shield(task)

    def peek(self, key: Key) -> CacheEntry | None:
        """The entry if it may be served as a plain hit right now, without awaiting anything."""
        try:
            entry = self._entries[key]  # one lookup; .get() would look twice (hot path)
        except KeyError:
            return None
        return entry if self._clock() < entry.refresh_at else None

    async def lookup(self, fleet_id: str, compute_name: str) -> tuple[CacheEntry, Outcome]:
        key = (fleet_id, compute_name)
        entry = self._entries.get(key)  # the TLRU has already dropped anything past serve_until
        if entry is not None:
            now = self._clock()
            if now < entry.refresh_at:
                return entry, Outcome.HIT
            self._refresh_in_background(key, entry, now)
            return entry, Outcome.STALE
        task = self._inflight.get(key)
        outcome = Outcome.COLLAPSED
        if task is None:
            task = self._start_fetch(key)
            outcome = Outcome.MISS
        # shield: a caller that disconnects or times out cancels only its own wait, never the
        # fetch the other callers share.
        return await asyncio.shield(task), outcome

    def _refresh_in_background(self, key: Key, entry: CacheEntry, now: float) -> None:
        if key in self._inflight or now < max(entry.retry_at, self._throttled_until):
            return
        if len(self._inflight) >= self._policy.max_inflight:
            return  # the still-valid token carries on; a later request will try again
        self._start_fetch(key)

    def _start_fetch(self, key: Key) -> asyncio.Task[CacheEntry]:
        if len(self._inflight) >= self._policy.max_inflight:
            raise errors.TooManyInflight("too many tokens are being fetched at once")
        backing_off = self._throttled_until - self._clock()
        if backing_off > 0:
            # Fail fast rather than queue: the caller's Retry-After says when to come back.
            error = errors.UpstreamThrottled("GameLift is throttling; backing off")
            error.retry_after = math.ceil(backing_off)
            raise error
        task = asyncio.get_running_loop().create_task(self._fetch(key), name=f"fetch {key}")
        self._inflight[key] = task
        task.add_done_callback(partial(self._fetch_done, key))
        return task

    def _fetch_done(self, key: Key, task: asyncio.Task[CacheEntry]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # a background refresh has no waiter; mark its error as seen

    async def _fetch(self, key: Key) -> CacheEntry:
        started = self._clock()
        try:
            # One deadline over the whole fetch: botocore's retries multiply its per-attempt
            # timeouts, and a waiting game server wants an answer, not a fourth attempt.
            async with asyncio.timeout(self._policy.deadline):
                token = await self._source.fetch(*key)
            received = self._clock()
            if token.expires_at <= received:
                # As botocore's RefreshableCredentials does: never accept what is already dead.
                raise errors.UpstreamBadGateway("GameLift answered with an expired token")
        except TimeoutError as exc:
            error: errors.BrokerError = errors.UpstreamTimeout(
                f"no answer from GameLift within {self._policy.deadline:g} s"
            )
            self._note_failure(key, started, error)
            raise error from exc
        except errors.BrokerError as exc:
            self._note_failure(key, started, exc)
            raise
        except Exception as exc:
            # The source classifies what it knows; anything else is still GameLift's answer
            # being unusable, and must back off like any other failure, not become a 500.
            error = errors.UpstreamBadGateway(f"GameLift call failed: {type(exc).__name__}")
            self._note_failure(key, started, error)
            raise error from exc
        self._throttle_failures = 0
        previous = self._entries.get(key)
        if previous is not None and previous.token.auth_token == token.auth_token:
            # GameLift hands back the same token until it nears expiry. Its lifetime still
            # counts from when we first got it, or each refresh would shrink the windows.
            received = previous.received_at
        entry = self._new_entry(token, received)
        self._entries[key] = entry
        log.info(
            "upstream fetch ok",
            extra={
                "event": "upstream_fetch",
                "fleet": key[0],
                "compute": key[1],
                "outcome": "ok",
                "status": 200,
                "duration_ms": round((received - started) * 1000, 1),
                "expires_in_s": round(token.expires_at - received),
            },
        )
        return entry

    def _new_entry(self, token: Token, received: float) -> CacheEntry:
        # An expiry years away is more likely a bug than a gift: refresh as if it were a day.
        expires_at = min(token.expires_at, received + MAX_TRUSTED_LIFETIME)
        lifetime = expires_at - received
        policy = self._policy
        return CacheEntry(
            token=token,
            received_at=received,
            # Half the lifetime at most, so a short-lived token is not refreshed on every request.
            refresh_at=expires_at - min(policy.refresh_ahead, lifetime / 2),
            serve_until=expires_at - min(policy.min_validity, lifetime / 10),
            rendered=self._render(token) if self._render else None,
        )

    def _note_failure(self, key: Key, started: float, error: errors.BrokerError) -> None:
        now = self._clock()
        if isinstance(error, errors.UpstreamThrottled):
            self._throttle_failures += 1
            backing_off = backoff_delay(self._throttle_failures, self._rng)
            self._throttled_until = now + backing_off
            error.retry_after = math.ceil(backing_off)  # what its waiters are told, truthfully
        entry = self._entries.get(key)
        retry_in = None
        if entry is not None:
            # A still-valid token keeps being served; space out the background retries.
            entry.failures += 1
            retry_in = backoff_delay(entry.failures, self._rng)
            entry.retry_at = now + retry_in
        log.warning(
            "upstream fetch failed",
            extra={
                "event": "upstream_fetch",
                "fleet": key[0],
                "compute": key[1],
                "outcome": "error",
                "code": error.code,
                "status": error.status,
                "duration_ms": round((now - started) * 1000, 1),
                "serving_cached": entry is not None,
                "retry_in_s": None if retry_in is None else round(retry_in, 2),
            },
        )

    async def close(self) -> None:
        """Cancel what is still being fetched; by now no request is waiting on it."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def backoff_delay(failures: int, rng: random.Random) -> float:
    """Jittered exponential back-off: 1-2 s after the first failure, doubling, capped at 30 s."""
    ceiling = min(RETRY_MAX_SECONDS, 2.0**failures)
    return max(RETRY_MIN_SECONDS, rng.uniform(ceiling / 2, ceiling))


def _serve_until(_key: Key, entry: CacheEntry, _now: float) -> float:
    return entry.serve_until
