"""Prefetch on a real clock: readiness follows the prefetched token, renewal needs no request."""

from __future__ import annotations

import pytest

from service.emulator import Emulator
from tests.conftest import Broker
from tests.helpers import SystemClock, eventually

PREFETCH = {
    "prefetch": ["fleet-1/task-1/container-2"],
    "upstream_max_attempts": 1,
    "upstream_deadline_seconds": 2,
}


@pytest.fixture
def clock() -> SystemClock:
    # Overrides the shared fake clock: prefetch sleeps until refresh windows, in real time.
    return SystemClock()


async def ready(broker: Broker) -> bool:
    return (await broker.client.get("/readyz")).status_code == 200


async def remaining(broker: Broker) -> float:
    text = (await broker.client.get("/metrics")).text
    gauge = "token_broker_token_seconds_remaining"
    line = next(line for line in text.splitlines() if line.startswith(gauge))
    return float(line.split()[-1])


async def test_readiness_follows_the_prefetched_token(start_broker, emulator: Emulator) -> None:
    emulator.latency = 0.5
    emulator.token_lifetime = 4  # refresh at 2 s left, never served under 0.4 s
    async with start_broker(**PREFETCH) as broker:
        assert not await ready(broker)  # the prefetch is still on its way
        await eventually(lambda: ready(broker), timeout=15, what="ready after the prefetch")
        assert emulator.call_log[0] == ("fleet-1", "task-1/container-2")
        assert await remaining(broker) > 0
        response = await broker.token("fleet-1", "task-1/container-2")
        assert response.status_code == 200
        calls = emulator.calls
        assert calls == 1  # the request was a hit

        emulator.latency = 0
        emulator.set_fault("internal")
        await eventually(lambda: _not(ready(broker)), timeout=15, what="unready once it expires")
        assert await remaining(broker) == 0
        emulator.set_fault(None)
        await eventually(lambda: ready(broker), timeout=15, what="ready again on recovery")


async def test_short_lived_prefetched_token_is_renewed_without_requests(
    start_broker, emulator: Emulator
) -> None:
    emulator.token_lifetime = 3
    async with start_broker(**PREFETCH) as broker:
        await eventually(lambda: emulator.calls >= 3, timeout=15, what="two renewals")
        assert await ready(broker)
        response = await broker.token("fleet-1", "task-1/container-2")
        assert response.json()["AuthToken"] in emulator.issued_tokens[-2:]
        # A key nobody prefetched is not renewed on its own, however long we wait.
        await broker.token("fleet-1", "other")
        prefetched = ("fleet-1", "task-1/container-2")
        renewals = emulator.call_log.count(prefetched)
        await eventually(lambda: emulator.call_log.count(prefetched) >= renewals + 2, timeout=15)
        assert emulator.call_log.count(("fleet-1", "other")) == 1


async def _not(awaitable) -> bool:  # type: ignore[no-untyped-def]
    return not await awaitable
