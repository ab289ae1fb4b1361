"""The fleet-restart simulation: every host in virtual time, against a token bucket of GameLift.

The broker hosts run the real TokenCache and Prefetcher (service.tokens) on an asyncio loop whose
clock jumps to the next timer whenever nothing is ready, so 10,000 hosts and two token
lifetimes take seconds, and a seeded run gives the same figures every time. The two alternatives
(no broker, the GameLift Agent's policy) are policies of the same model: see POLICIES.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import selectors
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from service import errors
from service.config import Settings
from service.tokens import prefetch
from service.tokens.cache import REMINT_SECONDS, CachePolicy, TokenCache
from service.tokens.clock import Clocks
from service.tokens.prefetch import Prefetcher
from service.tokens.token import Token

T = TypeVar("T")

EPOCH = 1_760_000_000.0  # the wall clock at virtual time 0
FLEET = "fleet-00000000-0000-0000-0000-000000000001"

# --- virtual time ----------------------------------------------------------------------------


class _Selector(selectors.SelectSelector):
    """Waiting for I/O with a timeout is where the loop would sleep: jump the clock instead."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualLoop | None = None

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:
            raise RuntimeError("virtual time: nothing is scheduled and nothing can wake the loop")
        if timeout > 0 and self.loop is not None:
            self.loop.now += timeout
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    """asyncio in virtual time: time() only moves when every ready callback has run."""

    def __init__(self) -> None:
        selector = _Selector()
        super().__init__(selector)
        selector.loop = self
        self.now = 0.0

    def time(self) -> float:
        return self.now


def run_virtual(main: Callable[[], Awaitable[T]]) -> T:
    loop = VirtualLoop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


# --- GameLift's account limit, and the SDK's retries in front of it -------------------------


class Throttled(Exception):
    """ThrottlingException, as botocore raises it after its last attempt."""


@dataclass
class Account:
    """GetComputeAuthToken for one account: a token bucket shared by every host, and GameLift's
    token reuse (the same token until fewer than 15 minutes remain)."""

    rate: float = 5.0
    burst: float = 10.0
    lifetime: float = 3600.0
    latency: float = 0.02  # seconds per call, there and back
    level: float = field(init=False)
    at: float = 0.0
    calls: list[tuple[float, int, bool]] = field(default_factory=list)  # (time, host, throttled)
    mints: list[tuple[float, int]] = field(default_factory=list)  # (time, host): a new token
    _current: dict[int, float] = field(default_factory=dict)  # host -> its token's expiry

    def __post_init__(self) -> None:
        self.level = self.burst

    async def call(self, host: int, now: Callable[[], float]) -> float:
        """One attempt; the token's expiry (wall clock), or Throttled."""
        t = now()
        self.level = min(self.burst, self.level + (t - self.at) * self.rate)
        self.at = t
        throttled = self.level < 1
        self.calls.append((t, host, throttled))
        await asyncio.sleep(self.latency)
        if throttled:
            raise Throttled
        self.level -= 1
        wall = EPOCH + now()
        expires = self._current.get(host, 0.0)
        if expires - wall < REMINT_SECONDS:
            expires = self._current[host] = wall + self.lifetime
            self.mints.append((now(), host))
        return expires


@dataclass
class Sdk:
    """botocore's standard retry mode: `attempts` in all, U(0, 2**n) s apart, and a retry quota
    of 500 that each retry takes 5 from and each success gives back."""

    account: Account
    host: int
    rng: random.Random
    attempts: int = 3
    quota: int = 500

    async def call(self, now: Callable[[], float]) -> float:
        spent = 0
        for attempt in range(1, self.attempts + 1):
            try:
                expires = await self.account.call(self.host, now)
            except Throttled:
                if attempt == self.attempts or self.quota < 5:
                    raise
                self.quota -= 5
                spent += 5
                await asyncio.sleep(min(20.0, self.rng.random() * 2 ** (attempt - 1)))
                continue
            self.quota = min(500, self.quota + (spent or 1))
            return expires
        raise AssertionError("unreachable")


class SdkSource:
    """The broker's TokenSource: the SDK call, its failure classified as the broker does."""

    def __init__(self, sdk: Sdk, now: Callable[[], float]) -> None:
        self._sdk = sdk
        self._now = now

    async def fetch(self, fleet_id: str, compute_name: str) -> Token:
        try:
            expires = await self._sdk.call(self._now)
        except Throttled:
            raise errors.UpstreamThrottled("GameLift: ThrottlingException: Rate exceeded") from None
        arn = f"arn:aws:gamelift:us-west-2:123456789012:compute/{compute_name}"
        return Token(fleet_id, f"arn:fleet/{fleet_id}", compute_name, arn, f"t-{expires}", expires)


# --- the policies ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """How one host gets its compute's token. `broker`: the real TokenCache and Prefetcher with
    `cache` and `prefetch_jitter`, and `callers` game servers asking it. Otherwise each of
    `callers` asks GameLift itself: `tries` SDK calls `try_gap`*2**n s apart (jittered ±25 %),
    then the process exits and is restarted after `restart` s; a token is kept `keep` s after
    it was fetched (None: until `refresh_ahead` before its expiry)."""

    name: str
    broker: bool
    callers: int
    cache: CachePolicy = field(default_factory=CachePolicy)
    prefetch_jitter: float = 0.5
    tries: int = 1
    try_gap: float = 0.5
    restart: float = 1.0
    keep: float | None = None
    refresh_ahead: float = 300.0
    sdk_attempts: int = 3  # botocore's total_max_attempts (the broker's UPSTREAM_MAX_ATTEMPTS)


POLICIES = {
    # Every game server calls GameLift itself through botocore (standard retries), as an SDK
    # user does today: one call at start-up, a supervisor restart 1 s after it fails, and a new
    # call 5 minutes before expiry.
    "no broker": Policy("no broker", broker=False, callers=3),
    # The GameLift Agent: one caller per compute; its RetryHelper makes 3 tries 0.5 s and 1 s
    # apart around the SDK's own, its cache drops the token 5 minutes after each fetch, and a
    # failed start-up exits the Agent (restarted 1 s later).
    "GameLift Agent": Policy("GameLift Agent", broker=False, callers=1, tries=3, keep=300.0),
    # This broker, as configured by default, with 3 game servers asking it at start-up.
    "broker": Policy(
        "broker",
        broker=True,
        callers=3,
        prefetch_jitter=Settings.model_fields["prefetch_jitter_seconds"].default,
        sdk_attempts=Settings.model_fields["upstream_max_attempts"].default,
    ),
}


# --- one run ---------------------------------------------------------------------------------


@dataclass
class HostRecord:
    start: float
    ready_at: float | None = None  # every caller on the host holds a token
    answers_503: int = 0  # a broker's 503s to its game servers
    gave_up: int = 0  # SDK calls that failed for good (the caller exits), or callers past the end


@dataclass
class Result:
    policy: str
    hosts: int
    rate: float
    lifetime: float
    duration: float
    records: list[HostRecord]
    calls: list[tuple[float, int, bool]]
    mints: list[tuple[float, int]] = field(default_factory=list)

    @property
    def all_ready(self) -> float | None:
        ready = [r.ready_at for r in self.records]
        return None if None in ready else max(r for r in ready if r is not None)

    @property
    def floor(self) -> float:
        return self.hosts / self.rate

    def restart_calls(self) -> tuple[int, int, int]:
        """(calls, throttled, the most any host made) until every host held a token."""
        end = self.all_ready if self.all_ready is not None else self.duration
        during = [(h, thr) for t, h, thr in self.calls if t <= end]
        per_host = Counter(h for h, _ in during)
        return len(during), sum(thr for _, thr in during), max(per_host.values(), default=0)

    def steady_per_compute_hour(self) -> float:
        """Calls (throttled ones too) per compute-hour from each host's first token to the end."""
        first = {i: r.ready_at for i, r in enumerate(self.records) if r.ready_at is not None}
        calls = sum(1 for t, h, _ in self.calls if h in first and t > first[h])  # type: ignore[operator]
        hours = sum(self.duration - t for t in first.values()) / 3600  # type: ignore[operator]
        return calls / hours if hours else math.nan

    def busiest_second(self, after: float) -> tuple[int, int]:
        """(the most calls in any one second from `after` on, throttled calls from then on)."""
        bins = Counter(int(t) for t, _, _ in self.calls if t >= after)
        throttled = sum(1 for t, _, thr in self.calls if t >= after and thr)
        return max(bins.values(), default=0), throttled

    def long_run_per_compute_hour(self) -> float:
        """Accepted calls per compute-hour as the fleet settles: 3600 over the mean gap between
        a host's accepted calls after its first token. Unlike steady_per_compute_hour() it does
        not depend on how many refreshes the run's end happens to cut off."""
        last: dict[int, float] = {}
        gaps = []
        for t, h, throttled in self.calls:
            if throttled:
                continue
            if h in last:
                gaps.append(t - last[h])
            last[h] = t
        return 3600 * len(gaps) / sum(gaps) if gaps else math.nan

    def seconds_over(self, calls: float, after: float) -> int:
        """How many whole seconds from `after` on saw more than `calls` calls."""
        bins = Counter(int(t) for t, _, _ in self.calls if t >= after)
        return sum(1 for n in bins.values() if n > calls)

    def poisson_seconds_over(self, calls: int, after: float, window: int = 60) -> float:
        """How many seconds over `calls` independent hosts would give by chance alone: the sum,
        over each second from `after` on, of P(Poisson(local mean) > calls), the local mean
        being the calls per second in the `window` s around it."""
        bins = Counter(int(t) for t, _, _ in self.calls if t >= after)
        counts = [bins.get(s, 0) for s in range(int(after), int(self.duration) + 1)]
        expected = 0.0
        for i in range(len(counts)):
            lo, hi = max(0, i - window // 2), min(len(counts), i + window // 2)
            mean = sum(counts[lo:hi]) / (hi - lo)
            below = sum(math.exp(-mean) * mean**k / math.factorial(k) for k in range(calls + 1))
            expected += max(0.0, 1 - below)
        return expected

    def lapsed(self, min_validity: float) -> int:
        """Hosts that held no token they could serve at some time after their first one: the
        next new token came more than lifetime - min_validity after the last (or not before
        the end). A refresh put off too long shows here."""
        last: dict[int, float] = {}
        lapsed = set()
        usable = self.lifetime - min(min_validity, self.lifetime / 10)
        for t, h in self.mints:
            if h in last and t > last[h] + usable:
                lapsed.add(h)
            last[h] = t
        lapsed.update(h for h, t in last.items() if self.duration > t + usable)
        return len(lapsed)

    def gave_up(self) -> int:
        return sum(r.gave_up for r in self.records)

    def answers_503(self) -> int:
        return sum(r.answers_503 for r in self.records)


async def _broker_host(
    policy: Policy, index: int, record: HostRecord, account: Account, seed: int, end: float
) -> None:
    loop = asyncio.get_running_loop()
    now = loop.time
    rng = random.Random(seed)
    await asyncio.sleep(record.start)
    source = SdkSource(Sdk(account, index, rng, policy.sdk_attempts), now)
    cache = TokenCache(
        source, policy.cache, clocks=Clocks(monotonic=now, wall=lambda: EPOCH + now()), rng=rng
    )
    key = (FLEET, f"compute-{index:05d}")
    keeper = loop.create_task(
        Prefetcher(cache, [key], start_jitter=policy.prefetch_jitter, rng=rng).run()
    )

    async def game_server() -> bool:
        # It asks until it has a token, each time after the Retry-After it was told.
        while now() < end:
            try:
                await cache.lookup(*key)
                return True
            except errors.BrokerError as error:
                record.answers_503 += error.status == 503
                await asyncio.sleep(error.retry_after or 1)
        record.gave_up += 1
        return False

    served = await asyncio.gather(*(game_server() for _ in range(policy.callers)))
    if all(served):
        record.ready_at = now()
    try:
        await asyncio.sleep(max(0.0, end - now()))
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        await cache.close()


async def _direct_host(
    policy: Policy, index: int, record: HostRecord, account: Account, seed: int, end: float
) -> None:
    """No broker: each caller on the host (a game server, or the Agent) asks GameLift itself."""
    now = asyncio.get_running_loop().time
    await asyncio.sleep(record.start)
    holding = [False] * policy.callers

    async def caller(slot: int) -> None:
        rng = random.Random(seed * 31 + slot)
        sdk = Sdk(account, index, rng, policy.sdk_attempts)
        while now() < end:
            expires = None
            for attempt in range(policy.tries):
                try:
                    expires = await sdk.call(now)
                    break
                except Throttled:
                    if attempt + 1 < policy.tries:
                        await asyncio.sleep(policy.try_gap * 2**attempt * rng.uniform(0.75, 1.25))
            if expires is None:
                record.gave_up += 1  # the process exits; its supervisor starts it again
                await asyncio.sleep(policy.restart)
                continue
            holding[slot] = True
            if record.ready_at is None and all(holding):
                record.ready_at = now()
            hold = policy.keep or (expires - EPOCH - now() - policy.refresh_ahead)
            await asyncio.sleep(max(hold, 1.0))

    await asyncio.gather(*(caller(slot) for slot in range(policy.callers)))


def simulate(
    policy: Policy,
    hosts: int,
    *,
    rate: float = 5.0,
    burst: float = 10.0,
    lifetime: float = 3600.0,
    lifetimes: float = 2.0,
    starts: list[float] | None = None,
    restart_window: float = 60.0,
    latency: float = 0.02,
    seed: int = 12,
) -> Result:
    """One restart of `hosts` hosts (started uniformly over `restart_window` s, or at `starts`),
    run until `lifetimes` token lifetimes after the restart's floor (hosts / rate)."""
    rng = random.Random(seed)
    if starts is None:
        starts = sorted(rng.uniform(0, restart_window) for _ in range(hosts))
    duration = max(starts) + hosts / rate + lifetimes * lifetime
    account = Account(rate=rate, burst=burst, lifetime=lifetime, latency=latency)
    records = [HostRecord(start=s) for s in starts]
    host = _broker_host if policy.broker else _direct_host
    # The prefetcher naps at most 1 s so that a full cache's LRU keeps its keys; with one key
    # per host there is no LRU to feed, and it wakes at each entry's refresh point either way.
    prefetch.MAX_NAP_SECONDS = lifetime

    async def main() -> None:
        async with asyncio.TaskGroup() as group:
            for i, record in enumerate(records):
                group.create_task(host(policy, i, record, account, seed * 100_003 + i, duration))

    logging.disable(logging.CRITICAL)  # a failed fetch logs a line: a million of them here
    try:
        run_virtual(main)
    finally:
        logging.disable(logging.NOTSET)
        prefetch.MAX_NAP_SECONDS = 1.0
    return Result(
        policy.name, hosts, rate, lifetime, duration, records, account.calls, account.mints
    )
