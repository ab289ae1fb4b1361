"""TokenCache: a token per (fleet, compute), refreshed ahead of expiry, one upstream call a burst.

It wraps any TokenSource and knows nothing of HTTP. Every window is on the monotonic clock.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from service import errors
from service.names import Key
from service.tokens.backoff import backoff_delay, failure_delay
from service.tokens.budget import Budget
from service.tokens.clock import SYSTEM_CLOCKS, Clocks
from service.tokens.entries import CacheEntry, Entries
from service.tokens.recent import Recent, again
from service.tokens.token import Token, TokenSource

log = logging.getLogger("service.cache")

# An expiry further away than this is more likely a bug than a gift: refresh as if it were so.
MAX_TRUSTED_LIFETIME = 86_400.0
# GameLift hands back the token it already issued until fewer than this many seconds remain
# (the GameLift Agent's source says so); asking again before then only brings the same token.
REMINT_SECONDS = 900.0


class Outcome(enum.StrEnum):
    HIT = "hit"  # a fresh cached token
    STALE = "stale"  # a cached token inside its refresh window
    MISS = "miss"  # this request started the upstream fetch and waited for it
    COLLAPSED = "collapsed"  # this request waited on a fetch another request started


@dataclass(frozen=True, slots=True)
class CachePolicy:
    # The refresh window: GameLift's REMINT_SECONDS, the widest in which a refresh still brings
    # a new token. The wider it is, the wider a fleet restarted together spreads its refreshes
    # (bench/fleet.py, 1,000 hosts a lifetime after their restart: 12 calls in the busiest
    # second with 300 s, 5 with 900 s).
    refresh_ahead: float = 900.0
    min_validity: float = 30.0
    max_entries: int = 10_000
    # The entries' memory, estimated from their lengths (entries.entry_bytes): whichever bound
    # is met first evicts. The record of recent keys and the front's memos get a quarter each.
    max_bytes: int = 40 * 1024 * 1024
    max_inflight: int = 256
    deadline: float = 10.0
    # A key whose fetch failed (and holds no token) is not fetched again for a jittered,
    # growing back-off of at most this long; its requests get the same error meanwhile.
    failure_backoff_max: float = 5.0
    # The host's budget of GameLift calls: this many a second, this many at once.
    upstream_rate: float = 5.0
    upstream_burst: float = 10.0
    # A fetch for a key with no token waits at most this long for its turn in the budget;
    # past it the caller is told when to come back.
    budget_wait: float = 2.0
    # Where in its refresh window an entry's refresh point falls: drawn at random in the first
    # `refresh_spread` of the window (0: at its start), so brokers that started together do
    # not refresh together for ever. The rest of the window is left for retries.
    refresh_spread: float = 0.8

    @property
    def recent_keys(self) -> int:
        """How many keys' failures and evicted tokens the cache remembers."""
        return max(256, self.max_entries // 4)

    @property
    def recent_bytes(self) -> int:
        """The bytes the record of recent keys may hold (evicted tokens, mostly)."""
        return self.max_bytes // 4


class TokenCache:
    """Serves tokens from memory; fetches through `source` at most once per key at a time."""

    def __init__(
        self,
        source: TokenSource,
        policy: CachePolicy,
        *,
        clocks: Clocks = SYSTEM_CLOCKS,
        render: Callable[[Token], Any] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._source = source
        self._policy = policy
        self._now = clocks.monotonic
        self._wall = clocks.wall
        self._render = render
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self._entries = Entries(
            policy.max_entries, policy.max_bytes, timer=self._now, evicted=self._remember_evicted
        )
        self._recent = Recent(policy.recent_keys, policy.recent_bytes)
        self._budget = Budget(policy.upstream_rate, policy.upstream_burst, self._now)
        # One task per key being fetched. Waiters shield it; it removes itself when done, so an
        # error is shared by the callers of that one attempt but never cached.
        self._inflight: dict[Key, asyncio.Task[CacheEntry]] = {}
        # Throttling is per account, not per key: once GameLift throttles one fetch, no new
        # fetch for any key starts before this, so a thousand keys do not all hammer it.
        self._throttled_until = 0.0
        self._throttle_failures = 0

    @property
    def clock(self) -> Callable[[], float]:
        """The monotonic clock every entry's times are on."""
        return self._now

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
        task = self._inflight.get(key)
        if task is None:
            held = self._entries.get(key)
            if held is not None and not self._budget.take_spare():
                # A token that still works waits its turn behind keys that have none.
                wait = self._budget.next_spare()
                held.retry_at = self._now() + wait
                raise _budget_spent(wait)
            task = self._start_fetch(key, budgeted=held is not None)
        return await asyncio.shield(task)

    def peek(self, key: Key) -> CacheEntry | None:
        """The entry if it may be served as a plain hit right now, without awaiting anything."""
        try:
            entry = self._entries[key]  # one lookup; .get() would look twice (hot path)
        except KeyError:
            return None
        return entry if self._now() < entry.refresh_at else None

    async def lookup(self, fleet_id: str, compute_name: str) -> tuple[CacheEntry, Outcome]:
        key = (fleet_id, compute_name)
        entry = self._entries.get(key)  # the TLRU has already dropped anything past serve_until
        if entry is None and key not in self._inflight:
            entry = self._from_recent(key)
        if entry is not None:
            now = self._now()
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

    def _from_recent(self, key: Key) -> CacheEntry | None:
        """An evicted token that may still be served, put back; or, while the key backs off
        after a failed fetch, that fetch's error again. None if neither."""
        trace = self._recent.get(key)
        if trace is None:
            return None
        now = self._now()
        entry = self._recent.take_evicted(trace)
        if entry is not None and now < entry.serve_until:
            self._entries[key] = entry  # the most recently used again
            return entry
        if trace.error is not None and now < trace.retry_at:
            raise again(trace.error, trace.retry_at - now)
        return None

    def _remember_evicted(self, key: Key, entry: CacheEntry) -> None:
        # A caller cycling through more keys than the cache holds would otherwise make a call
        # each time it came back to one.
        self._recent.keep_evicted(key, entry)

    def _refresh_in_background(self, key: Key, entry: CacheEntry, now: float) -> None:
        if key in self._inflight or now < max(entry.retry_at, self._throttled_until):
            return
        if len(self._inflight) >= self._policy.max_inflight:
            return  # the still-valid token carries on; a later request will try again
        if not self._budget.take_spare():
            entry.retry_at = now + self._budget.next_spare()  # yield to keys with no token
            return
        self._start_fetch(key, budgeted=True)

    def _start_fetch(self, key: Key, *, budgeted: bool = False) -> asyncio.Task[CacheEntry]:
        """Start the one fetch for `key`. `budgeted`: its call was already taken from the
        budget (a refresh); otherwise one is booked here, with a short wait at most."""
        if len(self._inflight) >= self._policy.max_inflight:
            raise errors.TooManyInflight("too many tokens are being fetched at once")
        backing_off = self._throttled_until - self._now()
        if backing_off > 0:
            # Fail fast rather than queue: the caller's Retry-After says when to come back.
            error: errors.BrokerError = errors.UpstreamThrottled(
                "GameLift is throttling; backing off"
            )
            error.retry_after = math.ceil(backing_off)
            raise error
        wait = 0.0
        if not budgeted:
            booked = self._budget.reserve(self._policy.budget_wait)
            if booked is None:
                raise _budget_spent(self._budget.next_spare())
            wait = booked
        fetch = self._fetch(key, wait)
        task = asyncio.get_running_loop().create_task(fetch, name=f"fetch {key}")
        self._inflight[key] = task
        task.add_done_callback(partial(self._fetch_done, key))
        return task

    def _fetch_done(self, key: Key, task: asyncio.Task[CacheEntry]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # a background refresh has no waiter; mark its error as seen

    async def _fetch(self, key: Key, wait: float = 0.0) -> CacheEntry:
        if wait > 0:
            await asyncio.sleep(wait)  # the budget's turn for this call
        started = time.perf_counter()
        try:
            # One deadline over the whole fetch: botocore's retries multiply its per-attempt
            # timeouts, and a waiting game server wants an answer, not a fourth attempt.
            async with asyncio.timeout(self._policy.deadline):
                token = await self._source.fetch(*key)
            received = self._now()
            # The one wall-clock reading: what is left of the token's life, as of now.
            lifetime = min(token.expires_at - self._wall(), MAX_TRUSTED_LIFETIME)
            if lifetime <= 0:
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
        self._recent.pop(key)  # a success clears the key's back-off
        previous = self._entries.get(key)
        if previous is not None and previous.token.auth_token == token.auth_token:
            entry = self._repeated_entry(previous, token, received + lifetime, received)
        else:
            entry = self._new_entry(token, received, received + lifetime)
        self._entries[key] = entry
        log.info(
            "upstream fetch ok",
            extra={
                "event": "upstream_fetch",
                "fleet": key[0],
                "compute": key[1],
                "outcome": "ok",
                "status": 200,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                "expires_in_s": round(entry.expires_at - received),
                "repeated": entry.repeats > 0,
            },
        )
        return entry

    def _new_entry(
        self, token: Token, received: float, expires_at: float, rendered: Any = None
    ) -> CacheEntry:
        lifetime = expires_at - received
        policy = self._policy
        # Half the lifetime at most, so a short-lived token is not refreshed on every request.
        window_opens = expires_at - min(policy.refresh_ahead, lifetime / 2)
        serve_until = expires_at - min(policy.min_validity, lifetime / 10)
        spread = policy.refresh_spread * (serve_until - window_opens)
        return CacheEntry(
            token=token,
            received_at=received,
            expires_at=expires_at,
            refresh_at=window_opens + (self._rng.uniform(0, spread) if spread > 0 else 0.0),
            serve_until=serve_until,
            rendered=rendered if rendered is not None or not self._render else self._render(token),
        )

    def _repeated_entry(
        self, previous: CacheEntry, token: Token, expires_at: float, now: float
    ) -> CacheEntry:
        """GameLift handed back the token we hold: its windows stay where they were (counted
        from its first receipt, so they do not shrink), but asking again at once would only
        bring it back again. Wait until GameLift mints a new one (REMINT_SECONDS before
        expiry), or for the next back-off step if that time has passed already."""
        # The earlier reading wins: a wall clock stepped back since then must not extend it.
        entry = self._new_entry(
            token,
            previous.received_at,
            min(expires_at, previous.expires_at),
            previous.rendered,
        )
        entry.repeats = previous.repeats + 1
        not_before = max(
            entry.expires_at - REMINT_SECONDS, now + backoff_delay(entry.repeats, self._rng)
        )
        # Past serve_until the TLRU drops the entry anyway, and the next request fetches.
        entry.refresh_at = min(max(entry.refresh_at, not_before), entry.serve_until)
        return entry

    def _respread(self, entry: CacheEntry, now: float) -> float:
        """A throttled refresh of a token that still works: a new point, drawn at random in
        the first half of what is left before its minimum validity. The account is shared by
        every host, so a throttle means many refreshes came due together; retrying all of them
        within seconds keeps them together (and throttled), while a new draw spreads them over
        the time they have, and halving it leaves room for the next throttle."""
        return self._rng.uniform(0, (entry.serve_until - now) / 2)

    def _note_failure(self, key: Key, started: float, error: errors.BrokerError) -> None:
        now = self._now()
        if isinstance(error, errors.UpstreamThrottled):
            self._throttle_failures += 1
            backing_off = backoff_delay(self._throttle_failures, self._rng)
            self._throttled_until = now + backing_off
            error.retry_after = math.ceil(backing_off)  # what its waiters are told, truthfully
        entry = self._entries.get(key)
        retry_in = None
        evicted = False
        if entry is not None and isinstance(error, errors.UpstreamNotFound):
            # The compute (or fleet) is gone: deregistered. Its token must not outlive it, as
            # the EKS Pod Identity Agent evicts on irrecoverable errors; the next request is
            # told so.
            self._entries.pop(key, None)
            entry, evicted = None, True
        if entry is not None:
            # A still-valid token keeps being served; space out the background retries.
            entry.failures += 1
            retry_in = backoff_delay(entry.failures, self._rng)
            if isinstance(error, errors.UpstreamThrottled):
                retry_in = max(retry_in, self._respread(entry, now))
            entry.retry_at = now + retry_in
        else:
            # No token to serve: the key backs off, and its requests meanwhile get this same
            # error without a call, told truthfully when to come back.
            trace = self._recent.trace(key)
            trace.failures += 1
            self._recent.take_evicted(trace)
            retry_in = failure_delay(trace.failures, self._policy.failure_backoff_max, self._rng)
            trace.retry_at = now + retry_in
            trace.error = error
            error.retry_after = max(error.retry_after or 0, math.ceil(retry_in))
        log.warning(
            "upstream fetch failed",
            extra={
                "event": "upstream_fetch",
                "fleet": key[0],
                "compute": key[1],
                "outcome": "error",
                "code": error.code,
                "status": error.status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                "serving_cached": entry is not None,
                "evicted": evicted,
                "retry_in_s": None if retry_in is None else round(retry_in, 2),
            },
        )

    async def close(self) -> None:
        """Cancel what is still being fetched; by now no request is waiting on it."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _budget_spent(wait: float) -> errors.BrokerError:
    """The budget's refusal, with how long until a call is spare as its Retry-After."""
    error = errors.BudgetExhausted("the host's GameLift call budget is spent")
    error.retry_after = max(1, math.ceil(wait))
    return error
