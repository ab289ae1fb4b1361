"""Prometheus metrics move as they should, and the upstream-call count matches the emulator's."""

from __future__ import annotations

import asyncio
import math
import platform
import subprocess
import sys
from importlib import metadata

from prometheus_client.parser import text_string_to_metric_families

from service import __version__
from service.emulator import Emulator
from tests.conftest import Broker
from tests.helpers import FakeClock, eventually
from tests.processes import clean_env


async def scrape(broker: Broker) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await broker.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def outcome(samples, name: str) -> float:  # type: ignore[no-untyped-def]
    return samples.get(("token_broker_requests_total", (("outcome", name),)), 0.0)


def upstream_calls(samples) -> float:  # type: ignore[no-untyped-def]
    return sum(v for (n, _), v in samples.items() if n == "token_broker_upstream_calls_total")


def token_calls(result: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    labels = (("operation", "GetComputeAuthToken"), ("result", result))
    return "token_broker_upstream_calls_total", labels


async def test_request_outcomes(broker: Broker, emulator: Emulator, clock: FakeClock) -> None:
    emulator.latency = 0.2
    results = await asyncio.gather(*(broker.token() for _ in range(10)))  # 1 miss, 9 collapsed
    assert {r.status_code for r in results} == {200}
    emulator.latency = 0
    for _ in range(5):
        await broker.token()  # hits
    await broker.token("fleet_bad", "c")  # error: bad input
    clock.advance(emulator.token_lifetime - 100)
    await broker.token()  # stale: served while refreshing
    await eventually(lambda: broker.cache.inflight == 0)
    samples = await scrape(broker)
    assert outcome(samples, "miss") == 1
    assert outcome(samples, "collapsed") == 9
    assert outcome(samples, "hit") == 5
    assert outcome(samples, "error") == 1
    assert outcome(samples, "stale") == 1
    assert samples[("token_broker_cache_entries", ())] == 1
    assert samples[("token_broker_inflight_fetches", ())] == 0
    assert upstream_calls(samples) == emulator.calls == 2
    assert samples[token_calls("ok")] == 2
    assert (
        samples[
            ("token_broker_upstream_latency_seconds_count", (("operation", "GetComputeAuthToken"),))
        ]
        == 2
    )


async def test_upstream_calls_count_retries_and_errors(start_broker, emulator: Emulator) -> None:
    emulator.set_fault("internal", count=2)
    async with start_broker(upstream_max_attempts=3) as broker:
        assert (await broker.token()).status_code == 200
        emulator.set_fault("not_found")
        assert (await broker.token("fleet-1", "gone")).status_code == 404
        samples = await scrape(broker)
    assert emulator.calls == 4
    assert upstream_calls(samples) == 4
    assert samples[token_calls("InternalServiceException")] == 2
    assert samples[token_calls("NotFoundException")] == 1
    assert outcome(samples, "error") == 1


async def test_unparseable_answers_are_counted_too(start_broker, emulator: Emulator) -> None:
    emulator.set_fault("bad_timestamp")
    async with start_broker(upstream_max_attempts=1) as broker:
        assert (await broker.token()).status_code == 502
        samples = await scrape(broker)
    assert upstream_calls(samples) == emulator.calls == 1
    assert samples[token_calls("malformed")] == 1
    assert outcome(samples, "error") == 1


async def test_no_key_or_token_in_metrics(broker: Broker, emulator: Emulator) -> None:
    response = await broker.token("fleet-secretive", "compute-hidden")
    text = (await broker.client.get("/metrics")).text
    assert response.json()["AuthToken"] not in text
    assert "fleet-secretive" not in text and "compute-hidden" not in text


async def test_build_info_and_process_metrics(broker: Broker) -> None:
    samples = await scrape(broker)
    labels = (
        ("botocore", metadata.version("botocore")),
        ("python", platform.python_version()),
        ("version", __version__),
    )
    assert samples[("gamelift_token_broker_build_info", labels)] == 1
    # prometheus-client's own collectors, in the broker's registry.
    assert samples[("process_resident_memory_bytes", ())] > 0
    assert samples[("process_open_fds", ())] > 0
    assert any(name == "python_info" for name, _ in samples)


async def test_no_series_is_nan(broker: Broker) -> None:
    await broker.token()
    samples = await scrape(broker)
    assert not [key for key, value in samples.items() if math.isnan(value)]
    # Nothing is prefetched, so there is no lowest remaining validity: absent, not NaN.
    assert not [name for name, _ in samples if name == "token_broker_token_seconds_remaining"]


def test_version_flag() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "--version"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=30,
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"gamelift-token-broker {__version__}"
