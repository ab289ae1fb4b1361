"""The broker registers its own compute: real processes, the emulator in strict mode."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from service.emulator import Emulator
from tests.conftest import emulator_server, run_server
from tests.helpers import eventually
from tests.processes import Process, broker_process, clean_env

FLEET = "fleet-1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d"
HOST = "host-1"
GUARD = {"X-Token-Broker-Request": "true"}


@pytest.fixture
async def strict() -> AsyncIterator[Emulator]:
    """A strict emulator on the real clocks (the broker is another process)."""
    emulator = Emulator(strict=True, fleets=[FLEET], location="custom-local")
    async with run_server(emulator_server(emulator)) as url:
        emulator.url = url  # type: ignore[attr-defined]
        yield emulator
    emulator.release_hangs()


def registering(emulator: Emulator, ip: str = "127.0.0.1", **env: str) -> dict[str, str]:
    settings = {
        "AWS_REGION": "us-west-2",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_ENDPOINT_URL_GAMELIFT": emulator.url,  # type: ignore[attr-defined]
        "TOKEN_BROKER_REGISTER": f"{FLEET}/{HOST}",
        "TOKEN_BROKER_REGISTER_IP_ADDRESS": ip,
        "TOKEN_BROKER_REGISTER_LOCATION": "custom-local",
        "TOKEN_BROKER_PREFETCH_JITTER_SECONDS": "0",
    }
    return {**settings, **env}


def registered(emulator: Emulator) -> bool:
    return f"{FLEET}/{HOST}" in emulator.registry.computes


async def url_of(process: Process) -> str:
    """The listener's URL, once it answers (the start line comes before it listens)."""
    await eventually(lambda: any('"event": "start"' in line for line in process.lines), timeout=30)
    url = process.url()
    async with httpx.AsyncClient(timeout=10) as client:

        async def answers() -> bool:
            try:
                return (await client.get(f"{url}/healthz")).status_code == 200
            except httpx.ConnectError:
                return False

        await eventually(answers, timeout=30, what="the listener")
    return url


async def wait_ready(client: httpx.AsyncClient, url: str, timeout: float = 30) -> list[str]:
    """Poll /readyz until 200; the reasons it gave before."""
    reasons: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = await client.get(f"{url}/readyz")
        except httpx.ConnectError:  # bound, but uvicorn listens only once the lifespan is up
            reasons.append("not listening")
        else:
            if response.status_code == 200:
                return reasons
            reasons.append(response.json()["status"])
        assert time.monotonic() < deadline, f"never ready: {reasons[-3:]}"
        await asyncio.sleep(0.02)


def events(process: Process, event: str) -> list[dict[str, Any]]:
    found = []
    for line in list(process.lines):
        if line.startswith("{") and f'"event": "{event}"' in line:
            found.append(json.loads(line))
    return found


async def wait_exit(process: Process, timeout: float = 30) -> int:
    await eventually(lambda: process.proc.poll() is not None, timeout=timeout, what="exit")
    return process.proc.returncode


async def test_registers_at_start_serves_its_endpoint_and_deregisters_on_sigterm(
    strict: Emulator,
) -> None:
    # The first RegisterCompute hangs: the listeners must answer meanwhile.
    strict.set_fault("hang", count=1, action="RegisterCompute")
    with broker_process("--port", "0", **registering(strict)) as process:
        url = await url_of(process)
        async with httpx.AsyncClient(timeout=10) as client:
            await eventually(lambda: strict.action_calls.get("RegisterCompute") == 1)
            assert (await client.get(f"{url}/healthz")).status_code == 200
            readyz = await client.get(f"{url}/readyz")
            assert (readyz.status_code, readyz.json()) == (503, {"status": "registering compute"})
            strict.release_hangs()  # InternalServiceException: transient, so retried
            await wait_ready(client, url)
            assert registered(strict)
            assert strict.action_calls["RegisterCompute"] == 2
            params = await client.get(
                f"{url}/fleets/{FLEET}/computes/{HOST}/server-parameters", headers=GUARD
            )
            metrics = (await client.get(f"{url}/metrics")).text
        assert params.status_code == 200
        assert params.json()["WebSocketUrl"] == strict.url.replace("http", "ws") + "/sdk"  # type: ignore[attr-defined]
        assert params.json()["AuthToken"] == strict.issued_tokens[-1]
        assert "DescribeCompute" not in strict.action_calls  # the registration's URL
        assert strict.calls == 1  # prefetched once, then a hit
        for series in (
            'token_broker_compute_registrations_total{action="register",outcome="retry"} 1.0',
            'token_broker_compute_registrations_total{action="register",outcome="ok"} 1.0',
            'token_broker_upstream_calls_total{operation="RegisterCompute",result="ok"} 1.0',
            'token_broker_upstream_calls_total{operation="GetComputeAuthToken",result="ok"} 1.0',
        ):
            assert series in metrics
        assert [e["outcome"] for e in events(process, "register")] == ["retry", "ok"]

        process.proc.send_signal(signal.SIGTERM)
        await wait_exit(process)
    assert not registered(strict)
    assert strict.action_calls["DeregisterCompute"] == 1
    [deregistered] = events(process, "deregister")
    assert deregistered["outcome"] == "ok"
    assert not [line for line in process.lines if strict.issued_tokens[-1] in line]


async def test_deregistration_waits_for_requests_in_flight(strict: Emulator) -> None:
    with broker_process("--port", "0", **registering(strict)) as process:
        url = await url_of(process)
        async with httpx.AsyncClient(timeout=30) as client:
            await wait_ready(client, url)
            strict.registry.register(FLEET, "host-2", "127.0.0.2", None, "custom-local", None)
            strict.set_fault("hang", count=1)  # the next GetComputeAuthToken
            waiting = asyncio.create_task(
                client.get(f"{url}/fleets/{FLEET}/computes/host-2/token", headers=GUARD)
            )
            await eventually(lambda: strict.calls == 2, what="the in-flight fetch")
            process.proc.send_signal(signal.SIGTERM)
            await eventually(lambda: events(process, "stopping") != [], what="stopping")
            await asyncio.sleep(0.5)  # long enough for a premature DeregisterCompute to land
            assert registered(strict)
            strict.release_hangs()
            answer = await waiting
        await wait_exit(process)
    assert answer.status_code == 503  # the released hang's InternalServiceException
    assert not registered(strict)


async def test_deregister_on_exit_false_keeps_the_compute(strict: Emulator) -> None:
    env = registering(strict, TOKEN_BROKER_DEREGISTER_ON_EXIT="false")
    with broker_process("--port", "0", **env) as process:
        url = await url_of(process)
        async with httpx.AsyncClient(timeout=10) as client:
            await wait_ready(client, url)
        process.proc.send_signal(signal.SIGTERM)
        await wait_exit(process)
    assert registered(strict)
    assert "DeregisterCompute" not in strict.action_calls
    assert events(process, "deregister") == []


async def test_registering_again_with_the_same_attributes_is_success(strict: Emulator) -> None:
    with broker_process("--port", "0", **registering(strict)) as first:
        async with httpx.AsyncClient(timeout=10) as client:
            await wait_ready(client, await url_of(first))
            # A second broker for the same compute: the emulator answers the same compute.
            with broker_process("--port", "0", **registering(strict)) as second:
                await wait_ready(client, await url_of(second))
            # GameLift might answer ConflictException instead: then DescribeCompute decides.
            strict.set_fault("conflict", count=1, action="RegisterCompute")
            with broker_process("--port", "0", **registering(strict)) as third:
                await wait_ready(client, await url_of(third))
            assert strict.action_calls["DescribeCompute"] == 1
            # Other attributes are someone else's compute: refused, and /readyz says so.
            with broker_process("--port", "0", **registering(strict, ip="127.0.0.9")) as other:
                url = await url_of(other)
                await eventually(lambda: events(other, "register") != [], timeout=30)
                readyz = await client.get(f"{url}/readyz")
                assert (readyz.status_code, readyz.json()["status"]) == (
                    503,
                    "compute registration refused: ConflictException",
                )
                [refused] = events(other, "register")
                assert (refused["outcome"], refused["code"]) == ("failed", "ConflictException")
                assert refused["level"] == "error"
            assert registered(strict)  # the refused one never deregisters what is not its own
        first.proc.send_signal(signal.SIGTERM)
        await wait_exit(first)
    assert not registered(strict)


async def test_strict_mode_needs_the_registration_before_a_token(strict: Emulator) -> None:
    # Without TOKEN_BROKER_REGISTER, the prefetch of an unregistered compute never succeeds:
    # the deadlock the registration removes.
    env = {k: v for k, v in registering(strict).items() if "REGISTER" not in k}
    env["TOKEN_BROKER_PREFETCH"] = f"{FLEET}/{HOST}"
    with broker_process("--port", "0", **env) as process:
        url = await url_of(process)
        async with httpx.AsyncClient(timeout=10) as client:
            await eventually(lambda: strict.calls >= 2, timeout=30)
            readyz = await client.get(f"{url}/readyz")
    assert (readyz.status_code, readyz.json()["status"]) == (503, "waiting for prefetched tokens")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TOKEN_BROKER_REGISTER": "fleet-1/h"}, "TOKEN_BROKER_REGISTER_IP_ADDRESS"),
        (
            {"TOKEN_BROKER_REGISTER": "fleet-1/h", "TOKEN_BROKER_REGISTER_IP_ADDRESS": "10.0.0.1"},
            "TOKEN_BROKER_REGISTER_LOCATION",
        ),
        ({"TOKEN_BROKER_REGISTER_LOCATION": "custom-home"}, "TOKEN_BROKER_REGISTER"),
        ({"TOKEN_BROKER_REGISTER": "fleet-1"}, "TOKEN_BROKER_REGISTER"),
        (
            {
                "TOKEN_BROKER_REGISTER": "fleet-1/h",
                "TOKEN_BROKER_REGISTER_IP_ADDRESS": "10.0.0.1",
                "TOKEN_BROKER_REGISTER_LOCATION": "custom-home",
                "TOKEN_BROKER_ALLOWED_FLEETS": "fleet-2",
            },
            "TOKEN_BROKER_ALLOWED_FLEETS",
        ),
        ({"TOKEN_BROKER_REGISTER_IP_ADDRESS": "10.0.0.1%eth0"}, "TOKEN_BROKER_REGISTER_IP"),
        ({"TOKEN_BROKER_REGISTER_LOCATION": "us-west-2"}, "TOKEN_BROKER_REGISTER_LOCATION"),
        ({"TOKEN_BROKER_SDK_WEBSOCKET_URL": "http://x/sdk"}, "TOKEN_BROKER_SDK_WEBSOCKET_URL"),
        ({"TOKEN_BROKER_SDK_WEBSOCKET_URL": "ws://x/'$HOME"}, "TOKEN_BROKER_SDK_WEBSOCKET_URL"),
    ],
)
def test_bad_registration_settings_stop_start_up_with_one_line(
    env: dict[str, str], named: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "service", "--port", "0"],
        capture_output=True,
        text=True,
        env=clean_env(AWS_REGION="us-west-2", **env),
        timeout=30,
    )
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1, done.stderr
    assert named in done.stderr and done.stderr.startswith("gamelift-token-broker: ")
