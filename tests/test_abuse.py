"""Bad traffic never breaks the broker: random paths (hypothesis) and a mixed load."""

from __future__ import annotations

import asyncio
import random
from urllib.parse import quote, unquote

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from service.emulator import Emulator
from tests.conftest import Broker
from tests.helpers import RawConnection

ALLOWED_FLEET = "fleet-allowed"
REFUSALS = {400, 403, 404, 414, 431}


segments = st.one_of(
    st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="?#"), max_size=40
    ),
    st.text(max_size=20).map(lambda s: quote(s, safe="")),
    st.binary(max_size=24).map(lambda b: "".join(f"%{x:02X}" for x in b)),
    st.integers(400, 5000).map(lambda n: "a" * n),
    st.sampled_from(["fleet-1", ALLOWED_FLEET, "..", ".", "", "%2F", "%2e%2e", "a%2Fb%2Fc", "x/y"]),
)
targets = st.one_of(
    st.builds(lambda f, c: f"/fleets/{f}/computes/{c}/token".encode(), segments, segments),
    st.builds(lambda s: f"/fleets/{s}".encode(), segments),
    # Raw bytes, not percent-encoded: high bytes, controls and all.
    st.builds(
        lambda b: b"/fleets/" + b + b"/computes/c/token",
        st.binary(min_size=1, max_size=30).filter(lambda b: not set(b) & set(b" \r\n?#")),
    ),
)


@pytest.fixture
async def fenced(start_broker):  # type: ignore[no-untyped-def]
    # An allow-list makes any well-formed path a refusal too, so no example may reach GameLift.
    async with start_broker(allowed_fleets=[ALLOWED_FLEET], require_request_header=True) as broker:
        yield broker


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(target=targets, send_guard=st.booleans())
async def test_random_paths_are_refused_without_upstream_calls(
    fenced: Broker, emulator: Emulator, target: bytes, send_guard: bool
) -> None:
    decoded = unquote(target.decode("latin-1"))
    assume(ALLOWED_FLEET not in decoded)
    headers = {"X-Token-Broker-Request": "true"} if send_guard else {}
    connection = await RawConnection.open(fenced.url)
    try:
        status, _ = await connection.get(target, {**headers, "Connection": "close"})
    finally:
        await connection.close()
    assert status in REFUSALS, (target, status)
    assert emulator.calls == 0


async def test_mixed_load_over_100_connections(start_broker, emulator: Emulator) -> None:
    emulator.latency = 0.05
    good = [("fleet-1", f"compute-{i}") for i in range(10)] + [("fleet-2", "task-1/container-2")]
    bad = [
        "/fleets/fleet_1/computes/c/token",
        "/fleets/fleet-1/computes/a/b/c/token",
        "/fleets/fleet-1/computes/" + "x" * 1100 + "/token",
        "/fleets/fleet-1/computes/c/tokens",
        "/fleets/fleet-1/computes/c/token",  # good, but sent without the guard header
        "/nope",
    ]
    rng = random.Random(42)
    # (path, send the guard header?, the key it should get a token for, or None)
    plan: list[tuple[str, bool, tuple[str, str] | None]] = []
    for _ in range(4000):
        if rng.random() < 0.7:
            key = rng.choice(good)
            plan.append((f"/fleets/{key[0]}/computes/{key[1]}/token", True, key))
        else:
            path = rng.choice(bad)
            plan.append((path, not path.endswith("c/token"), None))
    results: list[tuple[int, tuple[str, str] | None]] = []
    errors: list[Exception] = []

    async with start_broker(require_request_header=True) as broker:
        queue = list(reversed(plan))

        async def connection() -> None:
            # 100 keep-alive connections, each reused for its share of the plan.
            conn = await RawConnection.open(broker.url)
            try:
                while queue:
                    path, guarded, key = queue.pop()
                    headers = {"X-Token-Broker-Request": "true"} if guarded else {}
                    try:
                        status, _ = await conn.get(path, headers)
                    except (OSError, asyncio.IncompleteReadError) as exc:  # a dropped connection
                        errors.append(exc)
                        return
                    results.append((status, key))
            finally:
                await conn.close()

        await asyncio.gather(*(connection() for _ in range(100)))

    assert not errors, errors[:3]
    assert len(results) == 4000
    assert not [status for status, _ in results if status >= 500]
    assert all((status == 200) == (key is not None) for status, key in results)
    requested_keys = {key for _, _, key in plan if key is not None}
    assert emulator.calls == len(requested_keys) == len(good)
