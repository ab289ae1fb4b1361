"""The computes part alone: EndpointCache and Registrar with a fake directory and clock."""

from __future__ import annotations

import asyncio
import random

import pytest

from service import errors
from service.computes.directory import ComputeRecord, Registration
from service.computes.endpoints import EndpointCache
from service.computes.registration import Registrar
from tests.helpers import FakeClock

KEY = ("fleet-1", "host-1")
WANTED = Registration("fleet-1", "host-1", "10.0.0.1", None, "custom-home", None)


def record(
    endpoint: str | None = "ws://gamelift.example/sdk", ip: str = "10.0.0.1"
) -> ComputeRecord:
    return ComputeRecord("fleet-1", "host-1", ip, None, "custom-home", "ACTIVE", endpoint)


class FakeDirectory:
    """Answers from a script: each call pops the next outcome (an exception or a record)."""

    def __init__(self, *outcomes: ComputeRecord | Exception) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[str] = []
        self.gate: asyncio.Event | None = None

    async def _next(self, action: str) -> ComputeRecord:
        self.calls.append(action)
        if self.gate is not None:
            await self.gate.wait()
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def describe(self, fleet_id: str, compute_name: str) -> ComputeRecord:
        return await self._next("describe")

    async def register(self, registration: Registration) -> ComputeRecord:
        return await self._next("register")

    async def deregister(self, fleet_id: str, compute_name: str) -> None:
        await self._next("deregister")


def endpoints(directory: FakeDirectory, clock: FakeClock, **kw: object) -> EndpointCache:
    return EndpointCache(directory, ttl=3600, clock=clock.monotonic, **kw)  # type: ignore[arg-type]


async def test_described_endpoint_is_kept_for_its_ttl(clock: FakeClock) -> None:
    directory = FakeDirectory(record("ws://one/sdk"), record("ws://two/sdk"))
    cache = endpoints(directory, clock)
    assert await cache.get(*KEY) == "ws://one/sdk"
    clock.advance(3599.9)
    assert await cache.get(*KEY) == "ws://one/sdk"
    assert directory.calls == ["describe"]
    clock.advance(0.2)
    assert await cache.get(*KEY) == "ws://two/sdk"
    assert directory.calls == ["describe", "describe"]


async def test_concurrent_callers_share_one_describe_and_a_cancel_spares_the_rest(
    clock: FakeClock,
) -> None:
    directory = FakeDirectory(record())
    directory.gate = asyncio.Event()
    cache = endpoints(directory, clock)
    waiters = [asyncio.create_task(cache.get(*KEY)) for _ in range(10)]
    await asyncio.sleep(0)
    waiters[0].cancel()
    directory.gate.set()
    results = await asyncio.gather(*waiters[1:])
    assert set(results) == {"ws://gamelift.example/sdk"}
    assert directory.calls == ["describe"]


async def test_errors_and_missing_endpoints_are_not_kept(clock: FakeClock) -> None:
    directory = FakeDirectory(
        errors.UpstreamUnavailable("down"), record(endpoint=None), record("ws://up/sdk")
    )
    cache = endpoints(directory, clock)
    with pytest.raises(errors.UpstreamUnavailable):
        await cache.get(*KEY)
    with pytest.raises(errors.NoSdkEndpoint):
        await cache.get(*KEY)
    assert await cache.get(*KEY) == "ws://up/sdk"
    assert len(directory.calls) == 3


async def test_configured_then_registered_then_described(clock: FakeClock) -> None:
    directory = FakeDirectory(record("ws://described/sdk"))
    configured = endpoints(directory, clock, configured="wss://configured/sdk")
    configured.pin(KEY, "ws://registered/sdk")
    assert await configured.get(*KEY) == "wss://configured/sdk"
    cache = endpoints(directory, clock)
    cache.pin(KEY, "ws://registered/sdk")
    assert await cache.get(*KEY) == "ws://registered/sdk"
    assert await cache.get("fleet-1", "other") == "ws://described/sdk"
    assert directory.calls == ["describe"]


async def test_no_directory_is_a_clear_error(clock: FakeClock) -> None:
    cache = EndpointCache(None, ttl=60, clock=clock.monotonic)
    with pytest.raises(errors.NoComputeDirectory, match="TOKEN_BROKER_SDK_WEBSOCKET_URL"):
        await cache.get(*KEY)


def registrar(directory: FakeDirectory, slept: list[float], counted: list[tuple[str, str]]):
    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    return Registrar(
        directory,  # type: ignore[arg-type]
        WANTED,
        record=lambda action, outcome: counted.append((action, outcome)),
        sleep=sleep,
        rng=random.Random(7),
    )


async def test_transient_failures_back_off_with_jitter_then_register() -> None:
    transient = [
        errors.UpstreamUnavailable("InternalService"),
        errors.UpstreamThrottled("slow down"),
        errors.UpstreamTimeout("late"),
        errors.UpstreamUnavailable("NotReady", code="NotReadyException"),
        errors.UpstreamUnavailable("again"),
        errors.UpstreamUnavailable("and again"),
    ]
    directory = FakeDirectory(*transient, record())
    slept: list[float] = []
    counted: list[tuple[str, str]] = []
    registering = registrar(directory, slept, counted)
    assert registering.reason() == "registering compute"
    assert await registering.run() == record()
    assert registering.reason() is None
    assert len(slept) == 6
    # 1-2 s, then each ceiling doubles (2, 4, 8, 16, 30): jittered within its upper half.
    for failures, delay in enumerate(slept, 1):
        ceiling = min(30.0, 2.0**failures)
        assert max(1.0, ceiling / 2) <= delay <= ceiling
    assert len(set(slept)) == 6
    assert counted == [("register", "retry")] * 6 + [("register", "ok")]


@pytest.mark.parametrize(
    "final",
    [
        errors.UpstreamInvalidRequest("no such location"),
        errors.UpstreamUnauthorized("no"),
        errors.UpstreamBadGateway("UnsupportedRegion", code="UnsupportedRegionException"),
    ],
)
async def test_a_final_refusal_stops_and_says_why(final: errors.BrokerError) -> None:
    directory = FakeDirectory(final, record())
    slept: list[float] = []
    counted: list[tuple[str, str]] = []
    registering = registrar(directory, slept, counted)
    assert await registering.run() is None
    assert slept == [] and directory.calls == ["register"]
    assert registering.reason() == f"compute registration refused: {final.code}"
    assert counted == [("register", "failed")]


async def test_a_conflict_with_the_same_attributes_is_ours() -> None:
    directory = FakeDirectory(errors.UpstreamConflict("exists"), record())
    registering = registrar(directory, [], [])
    assert await registering.run() == record()
    assert directory.calls == ["register", "describe"]


async def test_a_conflict_with_other_attributes_is_refused() -> None:
    directory = FakeDirectory(errors.UpstreamConflict("exists"), record(ip="10.9.9.9"))
    registering = registrar(directory, [], [])
    assert await registering.run() is None
    assert registering.reason() == "compute registration refused: ConflictException"


async def test_deregister_once_only_when_registered_and_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counted: list[tuple[str, str]] = []
    directory = FakeDirectory(record())
    registering = registrar(directory, [], counted)
    await registering.deregister()  # never registered: nothing to take away
    assert directory.calls == []
    await registering.run()
    directory.gate = asyncio.Event()  # DeregisterCompute hangs
    monkeypatch.setattr("service.computes.registration.DEREGISTER_SECONDS", 0.05)
    await registering.deregister()
    assert directory.calls == ["register", "deregister"]
    assert counted == [("deregister", "skipped"), ("register", "ok"), ("deregister", "timeout")]
