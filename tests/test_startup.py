"""The start-up report, credentials resolved at start-up, and "ready" said only when it is true."""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx

from service import __version__
from service.emulator import Emulator
from tests.processes import broker_process

GUARD = {"X-Token-Broker-Request": "true"}
# A made-up key pair in AWS's documented shape: the chain takes it, and no line may show it.
ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # a fake


def messages(lines: list[str]) -> list[str]:
    return [json.loads(line)["msg"] for line in lines if line.startswith("{")]


def test_emulator_start_up_says_everything_once() -> None:
    with broker_process("--emulator", "--port", "0") as process:
        start = process.start_line()
        process.wait_for_line('"event": "ready"')
        assert httpx.get(f"{process.url()}/readyz").status_code == 200
        lines = list(process.lines)
    assert start["version"] == __version__
    assert start["region"] == "us-west-2"
    assert start["endpoint_source"] == "embedded emulator"
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", str(start["endpoint"]))
    assert start["credentials"] == "explicit"  # botocore's name for keys given in code
    assert start["cache"] == {
        "refresh_ahead": 900.0,
        "min_validity": 30.0,
        "max_entries": 10_000,
        "max_bytes": 40 * 1024 * 1024,
        "max_inflight": 256,
        "deadline": 10.0,
        "failure_backoff_max": 5.0,
        "upstream_rate": 5.0,
        "upstream_burst": 10,
        "budget_wait": 2.0,
        "refresh_spread": 0.8,
    }
    said = messages(lines)
    # The embedded emulator runs its own uvicorn; its life-cycle lines once doubled ours.
    assert len(said) == len(set(said)), said
    assert said.count("starting") == said.count("ready") == 1


def test_no_credentials_is_a_warning_and_never_ready() -> None:
    with broker_process(
        "--port", "0", AWS_REGION="us-west-2", AWS_EC2_METADATA_DISABLED="true"
    ) as process:
        start = process.start_line()
        warning = json.loads(process.wait_for_line('"event": "no_credentials"').string)
        process.wait_for_line('"event": "not_ready"')
        url = process.url()
        ready = httpx.get(f"{url}/readyz")
        token = httpx.get(f"{url}/fleets/fleet-1/computes/c/token", headers=GUARD)
        lines = list(process.lines)
    assert start["credentials"] == "none"
    assert start["endpoint"] == "https://gamelift.us-west-2.amazonaws.com"
    assert start["endpoint_source"] == "default"
    assert warning["level"] == "warning"
    assert (ready.status_code, ready.json()) == (503, {"status": "no AWS credentials"})
    assert token.status_code == 503
    assert "ready" not in messages(lines)


def test_start_line_names_the_provider_never_the_secret() -> None:
    with broker_process(
        "--port",
        "0",
        AWS_REGION="eu-west-1",
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_ENDPOINT_URL_GAMELIFT="http://127.0.0.1:9",
    ) as process:
        start = process.start_line()
        process.wait_for_line('"event": "ready"')
        lines = list(process.lines)
    assert start["credentials"] == "env"
    assert start["region"] == "eu-west-1"
    assert (start["endpoint"], start["endpoint_source"]) == (
        "http://127.0.0.1:9",
        "AWS_ENDPOINT_URL_GAMELIFT",
    )
    for line in lines:
        assert ACCESS_KEY not in line and SECRET_KEY not in line


async def test_ready_is_logged_only_once_readyz_is_200(emulator: Emulator) -> None:
    emulator.latency = 1.5  # the prefetch takes a while
    with broker_process(
        "--port",
        "0",
        AWS_REGION="us-west-2",
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_ENDPOINT_URL_GAMELIFT=emulator.url,  # type: ignore[attr-defined]
        TOKEN_BROKER_PREFETCH="fleet-1/c",
    ) as process:
        url = process.url()
        seen_503 = False
        async with httpx.AsyncClient(timeout=10) as client:
            deadline = time.monotonic() + 30
            while True:
                said_before = messages(list(process.lines))
                response = await client.get(f"{url}/readyz")
                if response.status_code == 200:
                    break
                seen_503 = True
                assert response.json() == {"status": "waiting for prefetched tokens"}
                # Said before a request that found it unready: the line was premature.
                assert "ready" not in said_before
                assert time.monotonic() < deadline, "never ready"
                await asyncio.sleep(0.02)
        process.wait_for_line('"event": "ready"')
    assert seen_503
    assert emulator.calls == 1
