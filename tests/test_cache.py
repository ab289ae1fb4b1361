"""TokenCache rules, in-process, with an injected clock and a fake token source."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time

import pytest

from service import errors
from service.tokens.cache import REMINT_SECONDS, CachePolicy, Outcome, TokenCache
from service.tokens.token import Token
from tests.helpers import FakeClock, FakeSource, eventually

KEY = ("fleet-1234", "compute-1")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def source(clock: FakeClock) -> FakeSource:
    return FakeSource(clock)


def make_cache(source: FakeSource, clock: FakeClock, **policy: float) -> TokenCache:
    # No spread and a large budget: these tests name exact window edges and count calls.
    defaults = {
        "refresh_ahead": 300.0,
        "min_validity": 30.0,
        "deadline": 5.0,
        "refresh_spread": 0.0,
        "upstream_rate": 1e9,
        "upstream_burst": 1e9,
    }
    return TokenCache(
        source, CachePolicy(**{**defaults, **policy}), clocks=clock.clocks, rng=random.Random(7)
    )


async def settle(cache: TokenCache) -> None:
    await eventually(lambda: cache.inflight == 0, what="background fetches to finish")


async def test_miss_then_hit(source: FakeSource, clock: FakeClock) -> None:
    cache = make_cache(source, clock)
    entry, outcome = await cache.lookup(*KEY)
    assert (outcome, entry.token.auth_token, source.calls) == (Outcome.MISS, "token-1", 1)
    clock.advance(60)
    entry, outcome = await cache.lookup(*KEY)
    assert (outcome, entry.token.auth_token, source.calls) == (Outcome.HIT, "token-1", 1)
    assert await cache.fetch(*KEY) == entry.token  # the TokenSource face of the same cache


async def test_keys_are_separate(source: FakeSource, clock: FakeClock) -> None:
    cache = make_cache(source, clock)
    a = await cache.fetch("fleet-a", "c")
    b = await cache.fetch("fleet-b", "c")
    c = await cache.fetch("fleet-a", "task-1/container-2")
    assert len({a.auth_token, b.auth_token, c.auth_token}) == 3
    assert source.calls == 3 and len(cache) == 3


async def test_concurrent_requests_collapse_into_one_call(
    source: FakeSource, clock: FakeClock
) -> None:
    cache = make_cache(source, clock)
    gate = source.hold()
    waiters = [asyncio.create_task(cache.lookup(*KEY)) for _ in range(200)]
    await eventually(lambda: source.calls == 1)
    gate.set()
    results = await asyncio.gather(*waiters)
    assert source.calls == 1
    outcomes = [outcome for _, outcome in results]
    assert outcomes.count(Outcome.MISS) == 1
    assert outcomes.count(Outcome.COLLAPSED) == 199
    assert {entry.token.auth_token for entry, _ in results} == {"token-1"}


async def test_refresh_window_serves_cached_and_refreshes_once(
    source: FakeSource, clock: FakeClock
) -> None:
    cache = make_cache(source, clock)
    await cache.lookup(*KEY)
    clock.advance(3600 - 300 - 1)
    assert (await cache.lookup(*KEY))[1] is Outcome.HIT
    clock.advance(2)  # inside the window: 299 s left
    gate = source.hold()
    results = [await cache.lookup(*KEY) for _ in range(50)]
    assert {(entry.token.auth_token, outcome) for entry, outcome in results} == {
        ("token-1", Outcome.STALE)
    }
    await eventually(lambda: source.calls == 2)
    assert cache.inflight == 1  # one background refresh, however many requests
    gate.set()
    await settle(cache)
    entry, outcome = await cache.lookup(*KEY)
    assert (entry.token.auth_token, outcome) == ("token-2", Outcome.HIT)


async def test_short_lifetime_refreshes_at_half_life(clock: FakeClock) -> None:
    source = FakeSource(clock, lifetime=100)
    cache = make_cache(source, clock)
    await cache.lookup(*KEY)
    clock.advance(49)
    assert (await cache.lookup(*KEY))[1] is Outcome.HIT
    clock.advance(2)
    assert (await cache.lookup(*KEY))[1] is Outcome.STALE
    await settle(cache)
    assert source.calls == 2


async def test_minimum_validity_makes_requests_wait(source: FakeSource, clock: FakeClock) -> None:
    cache = make_cache(source, clock)
    await cache.lookup(*KEY)
    source.error = errors.UpstreamUnavailable("down")  # the window's refresh fails
    clock.advance(3600 - 31)  # 31 s left: still served, refresh fails in the background
    entry, outcome = await cache.lookup(*KEY)
    assert (entry.token.auth_token, outcome) == ("token-1", Outcome.STALE)
    await settle(cache)
    source.error = None
    clock.advance(2)  # 29 s left: below the 30 s minimum, never served
    entry, outcome = await cache.lookup(*KEY)
    assert (entry.token.auth_token, outcome) == ("token-3", Outcome.MISS)


async def test_minimum_validity_is_a_tenth_of_a_short_lifetime(clock: FakeClock) -> None:
    source = FakeSource(clock, lifetime=100)
    cache = make_cache(source, clock)
    await cache.lookup(*KEY)
    source.error = errors.UpstreamUnavailable("down")
    clock.advance(89)  # 11 s left: min(30, 100/10) = 10, so still served
    assert (await cache.lookup(*KEY))[0].token.auth_token == "token-1"
    await settle(cache)
    clock.advance(2)  # 9 s left
    with pytest.raises(errors.UpstreamUnavailable):
        await cache.lookup(*KEY)


async def test_failed_refresh_serves_valid_token_with_backoff_then_503(
    source: FakeSource, clock: FakeClock
) -> None:
    cache = make_cache(source, clock)
    await cache.lookup(*KEY)
    source.error = errors.UpstreamUnavailable("GameLift is down")
    clock.advance(3600 - 200)  # in the window, 200 s left
    assert (await cache.lookup(*KEY))[0].token.auth_token == "token-1"
    await settle(cache)
    assert source.calls == 2
    # Until the back-off passes, requests get the cached token and start nothing, though each
    # is given the time to start a fetch.
    assert await lookups(cache, 20) == {("token-1", Outcome.STALE)}
    assert source.calls == 2
    entry = cache.entry(KEY)  # type: ignore[assignment]
    retry_in = entry.retry_at - clock.mono
    assert 1.0 <= retry_in <= 2.0
    clock.advance(retry_in)
    await cache.lookup(*KEY)
    await settle(cache)
    assert source.calls == 3
    assert 1.0 <= entry.retry_at - clock.mono <= 4.0  # the ceiling doubled
    # Past the minimum validity, the failure reaches the caller.
    clock.advance(200 - 29)
    with pytest.raises(errors.UpstreamUnavailable):
        await cache.lookup(*KEY)


async def test_backoff_is_capped_at_30_seconds(source: FakeSource, clock: FakeClock) -> None:
    cache = make_cache(source, clock)
    await cache.lookup(*KEY)
    source.error = errors.UpstreamUnavailable("down")
    clock.advance(3600 - 299)
    delays = []
    for _ in range(10):
        entry, _ = await cache.lookup(*KEY)
        await settle(cache)
        delays.append(entry.retry_at - clock.mono)
        clock.advance(entry.retry_at - clock.mono)
    assert all(1.0 <= d <= 30.0 for d in delays), delays
    assert max(delays) > 15  # it did grow towards the cap
    assert source.calls == 11
    assert (await cache.lookup(*KEY))[0].token.auth_token == "token-1"  # still served


async def test_a_failing_key_backs_off_and_repeats_its_error(
    source: FakeSource, clock: FakeClock
) -> None:
    cache = make_cache(source, clock)
    source.error = errors.UpstreamNotFound("no such compute")
    with pytest.raises(errors.UpstreamNotFound) as first:
        await cache.lookup(*KEY)
    assert first.value.retry_after == 1  # 0.25-0.5 s, in whole seconds rounded up
    # During the back-off: the same error, told when to come back, and no call.
    for _ in range(100):
        with pytest.raises(errors.UpstreamNotFound) as again:
            await cache.lookup(*KEY)
        assert again.value.retry_after == 1 and again.value is not first.value
        assert again.value.message == first.value.message
    assert source.calls == 1
    # Each step of the back-off allows one call, and the steps grow: 0.5, 1, 2, 4, then 5 s.
    for step in range(1, 8):
        trace = cache._recent.get(KEY)
        assert trace is not None
        delay = trace.retry_at - clock.mono
        assert min(0.25 * 2 ** (step - 1), 2.5) <= delay <= min(0.5 * 2 ** (step - 1), 5.0)
        clock.advance(delay)
        with pytest.raises(errors.UpstreamNotFound):
            await cache.lookup(*KEY)
        assert source.calls == 1 + step
    # A success clears it: the compute registered.
    source.error = None
    clock.advance(5)
    assert (await cache.lookup(*KEY))[1] is Outcome.MISS
    assert cache._recent.get(KEY) is None


async def test_500_requests_for_a_failing_key_make_a_handful_of_calls(
    source: FakeSource, clock: FakeClock
) -> None:
    # The measured abuse: 500 sequential requests in 1.1 s made 500 calls.
    cache = make_cache(source, clock)
    source.error = errors.UpstreamNotFound("no such compute")
    for _ in range(500):
        with pytest.raises(errors.UpstreamNotFound):
            await cache.lookup(*KEY)
        clock.advance(1.1 / 500)
    # Back-off steps of at most 0.5, 1 and 2 s fit in 1.1 s: at most four calls.
    assert 2 <= source.calls <= 4


async def test_concurrent_waiters_share_one_failure(source: FakeSource, clock: FakeClock) -> None:
    cache = make_cache(source, clock)
    gate = source.hold()
    source.error = errors.UpstreamUnauthorized("no")
    waiters = [asyncio.create_task(cache.lookup(*KEY)) for _ in range(30)]
    await eventually(lambda: source.calls == 1)
    gate.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, errors.UpstreamUnauthorized) for r in results)
    assert source.calls == 1


async def test_cancelled_waiter_does_not_cancel_the_shared_fetch(
    source: FakeSource, clock: FakeClock
) -> None:
    cache = make_cache(source, clock)
    gate = source.hold()
    first = asyncio.create_task(cache.lookup(*KEY))
    second = asyncio.create_task(cache.lookup(*KEY))
    await eventually(lambda: source.calls == 1)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    gate.set()
    entry, outcome = await second
    assert (entry.token.auth_token, outcome) == ("token-1", Outcome.COLLAPSED)
    assert source.calls == 1
    assert (await cache.lookup(*KEY))[1] is Outcome.HIT


async def test_already_expired_answer_is_refused(source: FakeSource, clock: FakeClock) -> None:
    cache = make_cache(source, clock)
    source.expires_at = clock.now - 1
    with pytest.raises(errors.UpstreamBadGateway):
        await cache.lookup(*KEY)
    source.expires_at = None
    clock.advance(0.5)  # past the key's first back-off step
    assert (await cache.lookup(*KEY))[1] is Outcome.MISS
    assert source.calls == 2


async def test_deadline_bounds_the_whole_fetch(source: FakeSource, clock: FakeClock) -> None:
    cache = make_cache(source, clock, deadline=0.2)
    source.hold()  # never released: the upstream hangs
    with pytest.raises(errors.UpstreamTimeout):
        await asyncio.wait_for(cache.lookup(*KEY), timeout=10)
    assert cache.inflight == 0  # the next request starts afresh


async def test_inflight_cap_counts_keys_not_waiters(source: FakeSource, clock: FakeClock) -> None:
    cache = make_cache(source, clock, max_inflight=2)
    gate = source.hold()
    held = [asyncio.create_task(cache.lookup("fleet-1", f"c{i}")) for i in range(2)]
    joiners = [asyncio.create_task(cache.lookup("fleet-1", "c0")) for _ in range(10)]
    await eventually(lambda: source.calls == 2)
    with pytest.raises(errors.TooManyInflight) as refused:
        await cache.lookup("fleet-1", "c9")
    assert refused.value.status == 503 and refused.value.retry_after
    gate.set()
    await asyncio.gather(*held, *joiners)
    assert source.calls == 2


async def test_lru_bound(source: FakeSource, clock: FakeClock) -> None:
    cache = make_cache(source, clock, max_entries=2)
    await cache.lookup("fleet-1", "a")
    await cache.lookup("fleet-1", "b")
    await cache.lookup("fleet-1", "a")  # a is now the most recent
    await cache.lookup("fleet-1", "c")  # evicts b
    assert len(cache) == 2 and set(cache.held) == {("fleet-1", "a"), ("fleet-1", "c")}
    assert (await cache.lookup("fleet-1", "a"))[1] is Outcome.HIT
    # b's token was remembered when it was evicted: back without a call, evicting c.
    entry, outcome = await cache.lookup("fleet-1", "b")
    assert (entry.token.auth_token, outcome, source.calls) == ("token-2", Outcome.HIT, 3)
    assert set(cache.held) == {("fleet-1", "a"), ("fleet-1", "b")}


async def test_keys_cycled_through_a_full_cache_make_one_call_each(
    source: FakeSource, clock: FakeClock
) -> None:
    # The measured abuse: 101 keys through a cache of 100, five times, made 505 calls.
    cache = make_cache(source, clock, max_entries=100)
    for _ in range(5):
        for n in range(101):
            entry, _ = await cache.lookup("fleet-1", f"c{n}")
            assert entry.token.compute_name == f"c{n}"
        clock.advance(10)
    assert source.calls == 101


async def test_an_evicted_token_past_its_minimum_validity_is_fetched_again(
    source: FakeSource, clock: FakeClock
) -> None:
    cache = make_cache(source, clock, max_entries=1)
    await cache.lookup("fleet-1", "a")
    await cache.lookup("fleet-1", "b")  # evicts a, remembered
    clock.advance(3600 - 29)  # a's token is below its minimum validity now
    entry, outcome = await cache.lookup("fleet-1", "a")
    assert (entry.token.auth_token, outcome) == ("token-3", Outcome.MISS)


async def test_expired_entries_are_never_served(source: FakeSource, clock: FakeClock) -> None:
    cache = make_cache(source, clock)
    await cache.lookup(*KEY)
    clock.advance(3601)
    assert cache.peek(KEY) is None
    entry, outcome = await cache.lookup(*KEY)
    assert (entry.token.auth_token, outcome) == ("token-2", Outcome.MISS)


async def test_close_cancels_background_fetches(source: FakeSource, clock: FakeClock) -> None:
    cache = make_cache(source, clock)
    await cache.lookup(*KEY)
    source.hold()
    clock.advance(3400)
    await cache.lookup(*KEY)
    assert cache.inflight == 1
    await cache.close()
    assert cache.inflight == 0


async def test_throttling_backs_off_every_key(source: FakeSource, clock: FakeClock) -> None:
    cache = make_cache(source, clock)
    await cache.lookup("fleet-1", "held")
    clock.advance(3600 - 200)  # "held" is now inside its refresh window
    source.error = errors.UpstreamThrottled("Rate exceeded")
    with pytest.raises(errors.UpstreamThrottled):
        await cache.lookup("fleet-1", "a")
    assert source.calls == 2
    # Other keys fail fast, with no upstream call, and are told when to come back.
    for name in ("b", "c", "d"):
        with pytest.raises(errors.UpstreamThrottled) as caught:
            await cache.lookup("fleet-1", name)
        assert 1 <= caught.value.retry_after <= 2
    # A cached token inside its refresh window is served, and its refresh waits too.
    entry, outcome = await cache.lookup("fleet-1", "held")
    assert (entry.token.auth_token, outcome) == ("token-1", Outcome.STALE)
    assert cache.inflight == 0 and source.calls == 2
    # After the back-off, fetches resume; a success resets it.
    clock.advance(2.01)
    source.error = None
    assert (await cache.lookup("fleet-1", "b"))[1] is Outcome.MISS
    assert (await cache.lookup("fleet-1", "c"))[1] is Outcome.MISS
    assert source.calls == 4


async def test_repeated_throttling_grows_the_back_off(source: FakeSource, clock: FakeClock) -> None:
    cache = make_cache(source, clock)
    source.error = errors.UpstreamThrottled("Rate exceeded")
    waits = []
    for attempt in range(8):
        with pytest.raises(errors.UpstreamThrottled):
            await cache.lookup("fleet-1", f"k{attempt}")
        with pytest.raises(errors.UpstreamThrottled) as caught:
            await cache.lookup("fleet-1", "other")
        waits.append(caught.value.retry_after)
        clock.advance(caught.value.retry_after)
    assert source.calls == 8  # one call per back-off period, not one per request
    assert waits[0] <= 2 and max(waits) >= 16 and max(waits) <= 30


class SameToken(FakeSource):
    """GameLift as it is: the token it already issued, until fewer than 15 minutes remain."""

    async def fetch(self, fleet_id: str, compute_name: str) -> Token:
        token = await super().fetch(fleet_id, compute_name)
        return dataclasses.replace(token, auth_token="same")


async def lookups(
    cache: TokenCache, n: int, key: tuple[str, str] = KEY
) -> set[tuple[str, Outcome]]:
    """n requests, each given the time to start whatever fetch it would start."""
    seen = set()
    for _ in range(n):
        entry, outcome = await cache.lookup(*key)
        seen.add((entry.token.auth_token, outcome))
        await settle(cache)
    return seen


async def test_repeated_token_makes_one_fetch_per_backoff_step(clock: FakeClock) -> None:
    source = SameToken(clock)
    source.expires_at = clock.now + 3600
    cache = make_cache(source, clock, refresh_ahead=1200)
    first, _ = await cache.lookup(*KEY)
    clock.advance(3600 - 1199)  # inside the 1200 s window; GameLift has nothing new yet
    assert await lookups(cache, 200) == {("same", Outcome.STALE), ("same", Outcome.HIT)}
    assert source.calls == 2  # one refresh brought the same token back, and that was all
    again = cache.entry(KEY)
    assert again is not None
    # Not again before GameLift mints a new one; the windows count from the first receipt.
    assert again.refresh_at == first.expires_at - 900
    assert (again.received_at, again.serve_until) == (first.received_at, first.serve_until)
    clock.advance(again.refresh_at - clock.mono)
    await lookups(cache, 200)
    assert source.calls == 3
    # Still the same token with under 15 minutes left: one more fetch per back-off step.
    for step in range(1, 5):
        held = cache.entry(KEY)
        assert held is not None and held.repeats == step + 1
        assert 1.0 <= held.refresh_at - clock.mono <= 30.0
        await lookups(cache, 50)
        assert source.calls == 2 + step
        clock.advance(held.refresh_at - clock.mono)
        await lookups(cache, 1)
    assert source.calls == 7


async def test_new_token_after_a_repeat_starts_normal_windows(clock: FakeClock) -> None:
    source = SameToken(clock)
    source.expires_at = clock.now + 3600
    cache = make_cache(source, clock, refresh_ahead=1200)
    await cache.lookup(*KEY)
    clock.advance(3600 - 1199)
    await lookups(cache, 1)
    source.__class__ = FakeSource  # GameLift mints a new token from now on
    source.expires_at = None
    clock.advance(cache.entry(KEY).refresh_at - clock.mono)  # type: ignore[union-attr]
    await lookups(cache, 1)
    entry = cache.entry(KEY)
    assert entry is not None and entry.token.auth_token == "token-3" and entry.repeats == 0
    assert entry.refresh_at == entry.expires_at - 1200


async def test_prefetched_repeated_token_is_not_refetched_in_a_loop(clock: FakeClock) -> None:
    from service.tokens.prefetch import Prefetcher

    source = SameToken(clock)
    source.expires_at = clock.now + 3600
    cache = make_cache(source, clock, refresh_ahead=1200)
    await cache.lookup(*KEY)
    clock.advance(3600 - 1199)
    runner = asyncio.create_task(Prefetcher(cache, [KEY]).run())
    try:
        await eventually(lambda: source.calls == 2, what="the prefetcher's refresh")
        # Proving an absence takes a window of real time: ten of the prefetcher's shortest
        # naps. Before the fix it refetched every nap (33 calls in 2 s).
        await asyncio.sleep(0.5)
        assert source.calls == 2
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner


async def test_a_wall_clock_step_back_does_not_extend_a_token(
    source: FakeSource, clock: FakeClock
) -> None:
    cache = make_cache(source, clock)
    await cache.lookup(*KEY)
    source.error = errors.UpstreamUnavailable("down")
    clock.step_wall(-600)  # an NTP step or a VM resume
    clock.advance(3600 - 31)  # 31 s of real life left: served while the refresh fails
    assert (await cache.lookup(*KEY))[0].token.auth_token == "token-1"
    await settle(cache)
    clock.advance(2)  # 29 s left in real time, 629 s by the stepped wall clock
    assert cache.peek(KEY) is None and cache.entry(KEY) is None
    with pytest.raises(errors.UpstreamUnavailable):
        await cache.lookup(*KEY)


async def test_a_wall_clock_step_forward_does_not_shorten_a_token(
    source: FakeSource, clock: FakeClock
) -> None:
    cache = make_cache(source, clock)
    await cache.lookup(*KEY)
    clock.step_wall(+3000)  # by the wall clock, the token is in its refresh window now
    clock.advance(60)
    entry, outcome = await cache.lookup(*KEY)
    assert (entry.token.auth_token, outcome) == ("token-1", Outcome.HIT)
    assert source.calls == 1


async def test_lifetime_is_read_from_the_wall_clock_once_on_receipt(
    source: FakeSource, clock: FakeClock
) -> None:
    cache = make_cache(source, clock)
    source.expires_at = clock.now + 1000
    entry, _ = await cache.lookup(*KEY)
    assert entry.expires_at == clock.mono + 1000
    assert (entry.refresh_at, entry.serve_until) == (clock.mono + 700, clock.mono + 970)


async def test_a_gone_compute_drops_its_token(source: FakeSource, clock: FakeClock) -> None:
    cache = make_cache(source, clock)
    await cache.lookup(*KEY)
    clock.advance(3600 - 200)
    source.error = errors.UpstreamNotFound("GameLift: NotFoundException: no such compute")
    assert (await cache.lookup(*KEY))[0].token.auth_token == "token-1"  # refresh starts
    await settle(cache)
    # Deregistered: no token for it any more, though 200 s of its last one remain.
    assert cache.entry(KEY) is None and cache.peek(KEY) is None and KEY not in cache.held
    # The next request gets that refresh's 404 without a call, during the key's back-off; then
    # GameLift is asked again.
    with pytest.raises(errors.UpstreamNotFound) as gone:
        await cache.lookup(*KEY)
    assert source.calls == 2 and gone.value.retry_after == 1
    clock.advance(0.5)
    with pytest.raises(errors.UpstreamNotFound):
        await cache.lookup(*KEY)
    assert source.calls == 3


async def test_other_refresh_failures_keep_the_token(source: FakeSource, clock: FakeClock) -> None:
    for error in (
        errors.UpstreamUnauthorized("no"),
        errors.UpstreamUnavailable("down"),
        errors.UpstreamBadGateway("garbage"),
        errors.UpstreamInvalidRequest("odd"),
    ):
        cache = make_cache(source, clock)
        source.error = None
        kept = (await cache.lookup(*KEY))[0].token.auth_token
        clock.advance(3600 - 200)
        source.error = error
        await lookups(cache, 1)
        entry = cache.entry(KEY)
        assert entry is not None and entry.token.auth_token == kept, error


async def test_far_future_expiry_is_refreshed_within_a_day(
    source: FakeSource, clock: FakeClock
) -> None:
    cache = make_cache(source, clock)
    source.expires_at = clock.now + 10 * 365 * 86400
    entry, _ = await cache.lookup(*KEY)
    assert entry.refresh_at <= clock.mono + 86400
    assert entry.serve_until <= clock.mono + 86400


async def test_no_repr_shows_the_token(clock: FakeClock) -> None:
    from service.web.render import render_token

    source = FakeSource(clock)
    cache = TokenCache(source, CachePolicy(), clocks=clock.clocks, render=render_token)
    entry, _ = await cache.lookup(*KEY)
    assert "token-1" not in repr(entry)
    assert "token-1" not in repr(entry.rendered)
    assert "token-1" not in repr(entry.token)


async def test_prefetch_shares_the_back_off_with_requests(clock: FakeClock) -> None:
    from service.tokens.prefetch import Prefetcher

    source = FakeSource(clock)
    cache = make_cache(source, clock)
    prefetcher = Prefetcher(cache, [KEY])
    await cache.lookup(*KEY)
    source.error = errors.UpstreamUnavailable("down")
    clock.advance(3600 - 200)
    await cache.lookup(*KEY)  # a request-driven refresh fails and sets the back-off
    await settle(cache)
    calls = source.calls
    runner = asyncio.create_task(prefetcher.run())
    for _ in range(20):
        await asyncio.sleep(0)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert source.calls == calls  # the prefetcher waited for the same retry_at


async def test_held_mirrors_the_tlru_through_every_way_out(
    source: FakeSource, clock: FakeClock
) -> None:
    # The hit path reads `held` instead of the TLRU: it must never keep what the TLRU let go.
    cache = make_cache(source, clock, max_entries=2)

    def tlru() -> dict:
        return {key: cache.entry(key) for key in [("f-1", "a"), ("f-1", "b"), ("f-1", "c")]}

    def agree() -> None:
        assert cache.held == {k: v for k, v in tlru().items() if v is not None}

    await cache.lookup("f-1", "a")
    await cache.lookup("f-1", "b")
    agree()
    assert len(cache.held) == 2
    await cache.lookup("f-1", "a")  # a use: b is now the least recently used
    await cache.lookup("f-1", "c")  # evicts b
    agree()
    assert set(cache.held) == {("f-1", "a"), ("f-1", "c")}
    old = cache.held[("f-1", "a")]
    await cache.refresh(("f-1", "a"))  # replaced
    agree()
    assert cache.held[("f-1", "a")] is not old
    clock.advance(3600)  # both past their minimum validity
    await cache.lookup("f-1", "b")  # the store runs the TLRU's expiry
    agree()
    assert set(cache.held) == {("f-1", "b")}


async def test_the_budget_books_calls_for_keys_with_no_token(
    source: FakeSource, clock: FakeClock
) -> None:
    cache = make_cache(source, clock, upstream_rate=10.0, upstream_burst=2.0, budget_wait=0.3)
    started = time.monotonic()
    # Two at once, then one each 0.1 s: three more fit in the 0.3 s wait, the sixth does not.
    results = await asyncio.gather(
        *(cache.lookup("fleet-1", f"k{n}") for n in range(6)), return_exceptions=True
    )
    waited = time.monotonic() - started
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(refused) == 1 and isinstance(refused[0], errors.BudgetExhausted)
    assert refused[0].status == 503 and refused[0].retry_after == 1
    assert source.calls == 5
    assert waited >= 0.25  # the booked calls waited their turn


async def test_refreshes_yield_to_keys_with_no_token(source: FakeSource, clock: FakeClock) -> None:
    cache = make_cache(source, clock, upstream_rate=1.0, upstream_burst=1.0, budget_wait=5.0)
    await cache.lookup("fleet-1", "held")  # the one call the budget has now
    clock.advance(3600 - 200)  # "held" is in its refresh window; the budget has refilled
    assert (await cache.lookup("fleet-1", "new"))[1] is Outcome.MISS  # takes it
    entry, outcome = await cache.lookup("fleet-1", "held")
    assert outcome is Outcome.STALE and cache.inflight == 0 and source.calls == 2
    assert entry.retry_at == pytest.approx(clock.mono + 1.0)  # when one is spare again
    clock.advance(1.0)
    await lookups(cache, 1, ("fleet-1", "held"))
    assert source.calls == 3 and cache.entry(("fleet-1", "held")).token.auth_token == "token-3"  # type: ignore[union-attr]


async def test_refresh_points_spread_over_the_window(source: FakeSource, clock: FakeClock) -> None:
    cache = make_cache(source, clock, refresh_spread=0.5)
    entries = [(await cache.lookup("fleet-1", f"k{n}"))[0] for n in range(200)]
    opens = clock.mono + 3600 - 300
    latest = opens + 0.5 * (300 - 30)  # the first half of the window, to minimum validity
    points = [entry.refresh_at for entry in entries]
    assert all(opens <= point <= latest for point in points)
    assert max(points) - min(points) > 0.8 * (latest - opens)  # spread, not in lockstep


async def test_the_default_window_is_what_gamelift_mints_anew_in(
    source: FakeSource, clock: FakeClock
) -> None:
    # The defaults, but for a budget that 200 keys at once would spend.
    policy = CachePolicy(upstream_rate=1e9, upstream_burst=1e9)
    cache = TokenCache(source, policy, clocks=clock.clocks, rng=random.Random(7))
    entries = [(await cache.lookup("fleet-1", f"k{n}"))[0] for n in range(200)]
    points = [entry.expires_at - entry.refresh_at for entry in entries]  # seconds left then
    # Never before GameLift would hand back the same token, never past the minimum validity...
    assert all(policy.min_validity < left <= REMINT_SECONDS for left in points)
    # ...and over most of that: a fleet restarted together spreads its refreshes that wide.
    usable = REMINT_SECONDS - policy.min_validity
    assert max(points) - min(points) > 0.9 * policy.refresh_spread * usable


async def test_a_throttled_refresh_draws_a_new_point_in_what_is_left(clock: FakeClock) -> None:
    # 200 hosts (a cache each: the throttle back-off is host-wide) refresh together and are
    # throttled together.
    source = FakeSource(clock)
    caches = []
    for n in range(200):
        cache = make_cache(source, clock)
        cache._rng = random.Random(n)
        await cache.lookup(*KEY)
        caches.append(cache)
    clock.advance(3600 - 200)  # in the window: 200 s left, 170 s until the minimum validity
    source.error = errors.UpstreamThrottled("Rate exceeded")
    retries = []
    for cache in caches:
        entry, outcome = await cache.lookup(*KEY)
        assert outcome is Outcome.STALE  # the working token is still served
        await settle(cache)
        retries.append(entry.retry_at - clock.mono)
    assert source.calls == 400
    # Each comes back at a point of its own in the first half of what is left (never sooner
    # than the 1 s back-off), not all within the same couple of seconds.
    assert all(1.0 <= retry <= 170 / 2 for retry in retries), (min(retries), max(retries))
    assert sum(retry > 4.0 for retry in retries) > 150
    assert max(retries) - min(retries) > 0.8 * 170 / 2
    # Until then a request starts nothing; from then on, one refresh.
    cache, retry = caches[0], retries[0]
    clock.advance(retry - 0.5)
    assert await lookups(cache, 5) == {("token-1", Outcome.STALE)}
    assert source.calls == 400
    source.error = None
    clock.advance(0.5)
    await lookups(cache, 1)
    assert source.calls == 401 and cache.entry(KEY).token.auth_token == "token-401"  # type: ignore[union-attr]


async def test_the_record_of_recent_keys_is_bounded(source: FakeSource, clock: FakeClock) -> None:
    cache = make_cache(source, clock, max_entries=8)
    source.error = errors.UpstreamNotFound("no such compute")
    for n in range(2000):
        with pytest.raises(errors.UpstreamNotFound):
            await cache.lookup("fleet-1", f"k{n}")
    assert len(cache._recent) == CachePolicy(max_entries=8).recent_keys == 256


async def test_prefetch_start_is_jittered_within_its_bound(clock: FakeClock) -> None:
    from service.tokens.prefetch import Prefetcher

    source = FakeSource(clock)
    cache = make_cache(source, clock)
    keys = [("fleet-1", f"k{n}") for n in range(20)]
    started = time.monotonic()
    runner = asyncio.create_task(
        Prefetcher(cache, keys, start_jitter=0.4, rng=random.Random(3)).run()
    )
    try:
        await eventually(lambda: source.calls >= 1)
        first = time.monotonic() - started
        await eventually(lambda: source.calls == 20)
        last = time.monotonic() - started
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
    assert last - first > 0.1  # not all at once
    assert last < 0.4 + 2.0  # and none later than the bound (plus a loaded machine's lag)
