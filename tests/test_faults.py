"""Upstream faults: cached tokens keep being served, expired ones never are, calls stay bounded.

Each fault runs the same story against the real emulator: a token is cached, the upstream
breaks, the token enters its refresh window, then its minimum validity, then expires; the
upstream recovers. The broker uses 2 attempts per fetch and a 1.5 s deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack

import pytest

from service.emulator import Emulator
from tests.conftest import Broker, emulator_server, run_server
from tests.helpers import FakeClock, eventually

LIFETIME = 3600.0
FAST_FAILING = {
    "upstream_max_attempts": 2,
    "upstream_deadline_seconds": 1.5,
    "upstream_read_timeout_seconds": 0.5,
    "upstream_connect_timeout_seconds": 0.5,
}
# Fetches the story can start for the cached key: one background refresh in the window, one
# each for the two requests past the minimum validity. Two attempts each.
MAX_FAILING_CALLS = 3 * 2
# A key with nothing cached has no back-off: the next request tries again. A failing fetch can
# end before all of a burst has arrived, so each request may start one (collapsing concurrent
# failures is test_concurrent_requests_share_one_failure's, with latency to make it certain).
FRESH_BURST = 10


class Outage:
    """An emulator whose server can be stopped (connections refused) and started again."""

    def __init__(self, emulator: Emulator, port: int) -> None:
        self.emulator = emulator
        self.port = port
        self._stack: AsyncExitStack | None = None

    async def start(self) -> None:
        self._stack = AsyncExitStack()
        await self._stack.enter_async_context(
            run_server(emulator_server(self.emulator), port=self.port)
        )

    async def stop(self) -> None:
        assert self._stack is not None
        self.emulator.release_hangs()
        await self._stack.aclose()


async def the_story(
    broker: Broker,
    emulator: Emulator,
    clock: FakeClock,
    break_it: Callable[[], object],
    mend_it: Callable[[], object],
) -> None:
    first = (await broker.token()).json()["AuthToken"]
    calls_before = len(emulator.call_log)
    await _call(break_it)

    clock.advance(LIFETIME - 200)  # refresh window: 200 s left
    burst = await asyncio.gather(*(broker.token() for _ in range(50)))
    assert {(r.status_code, r.json()["AuthToken"]) for r in burst} == {(200, first)}
    # A key with nothing cached gets an error, never somebody else's token.
    fresh = await asyncio.gather(*(broker.token("fleet-1", "new-key") for _ in range(FRESH_BURST)))
    assert {r.status_code for r in fresh} <= {502, 503}
    assert all(set(r.json()) == {"error"} for r in fresh)
    await eventually(lambda: broker.cache.inflight == 0, what="the refresh to give up")
    again = await broker.token()
    assert (again.status_code, again.json()["AuthToken"]) == (200, first)

    clock.advance(200 - 29)  # under the 30 s minimum validity: never served
    late = await broker.token()
    assert late.status_code in (502, 503) and set(late.json()) == {"error"}
    clock.advance(60)  # expired
    dead = await broker.token()
    assert dead.status_code in (502, 503) and set(dead.json()) == {"error"}
    failing = emulator.call_log[calls_before:]
    assert failing.count(("fleet-1", "new-key")) <= FRESH_BURST * 2
    assert len(failing) - failing.count(("fleet-1", "new-key")) <= MAX_FAILING_CALLS

    await _call(mend_it)
    clock.advance(31)  # past any back-off
    recovered = await broker.token()
    assert recovered.status_code == 200
    assert recovered.json()["AuthToken"] not in (first, None)


async def _call(action: Callable[[], object]) -> None:
    result = action()
    if asyncio.iscoroutine(result):
        await result


@pytest.fixture
async def broker(start_broker) -> AsyncIterator[Broker]:  # type: ignore[no-untyped-def]
    async with start_broker(**FAST_FAILING) as running:
        yield running


@pytest.mark.parametrize(
    "fault", ["internal", "throttle", "garbage", "garbage_json", "bad_timestamp", "hang"]
)
async def test_fault(broker: Broker, emulator: Emulator, clock: FakeClock, fault: str) -> None:
    await the_story(
        broker, emulator, clock, lambda: emulator.set_fault(fault), lambda: emulator.set_fault(None)
    )


async def test_connection_refused_then_recovery(start_broker, clock: FakeClock) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    outage = Outage(Emulator(clock=clock), port)
    await outage.start()
    async with start_broker(endpoint_url=f"http://127.0.0.1:{port}", **FAST_FAILING) as broker:
        await the_story(broker, outage.emulator, clock, outage.stop, outage.start)
    await outage.stop()


async def test_recovery_after_an_outage_renews_in_the_background(
    broker: Broker, emulator: Emulator, clock: FakeClock
) -> None:
    first = (await broker.token()).json()["AuthToken"]
    emulator.set_fault("internal")
    clock.advance(LIFETIME - 250)
    for _ in range(5):  # each back-off period, one refresh try; the token is served meanwhile
        assert (await broker.token()).json()["AuthToken"] == first
        await eventually(lambda: broker.cache.inflight == 0)
        clock.advance(31)
    failing_calls = emulator.calls - 1
    assert failing_calls <= 5 * 2  # at most one refresh (2 attempts) per back-off period
    emulator.set_fault(None)
    assert (await broker.token()).json()["AuthToken"] == first  # served while it refreshes
    await eventually(lambda: broker.cache.inflight == 0)
    renewed = (await broker.token()).json()["AuthToken"]
    assert renewed != first
    assert emulator.calls == failing_calls + 2
