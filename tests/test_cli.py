"""The real command line, as a subprocess: emulator mode, bad settings, and SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time

import httpx
import pytest

from service.config import Settings
from service.ops.readiness import Readiness
from service.web.server import BrokerServer, uvicorn_config
from tests.helpers import eventually
from tests.processes import Process, broker_process, clean_env

GUARD = {"X-Token-Broker-Request": "true"}


def started(process: Process) -> tuple[str, str]:
    """(broker URL, emulator URL) from the start-up log lines."""
    line = process.start_line()
    process.wait_for_line('"event": "ready"')
    return process.url(), str(line["endpoint"])


def test_emulator_mode_serves_a_token_like_the_readme_says() -> None:
    with broker_process("--emulator", "--port", "0") as process:
        url, _ = started(process)
        response = httpx.get(f"{url}/fleets/fleet-1234/computes/my-host/token", headers=GUARD)
        assert response.status_code == 200
        body = response.json()
        assert body["FleetId"] == "fleet-1234" and body["AuthToken"]
        for line in process.lines:  # every line is JSON, and none holds the token
            assert body["AuthToken"] not in line
            json.loads(line)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TOKEN_BROKER_REFRESH_AHEAD_SECONDS", "soon"),
        ("TOKEN_BROKER_MAX_INFLIGHT", "-3"),
        ("TOKEN_BROKER_PREFETCH", "not-a-key"),
        ("TOKEN_BROKER_AUTH_TOKEN_FILE", "/nonexistent/secret"),
        ("TOKEN_BROKER_AUTH_TOKEN_FILE", os.devnull),  # readable, but empty
        ("TOKEN_BROKER_AUTH_TOKEN_FILES", "/etc/secret"),  # misspelt: it would fail open
        ("TOKEN_BROKER_MAX_CONNECTIONS", "999999999"),  # past the file limit
    ],
)
def test_bad_setting_stops_start_up_with_one_line(name: str, value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "--emulator", "--port", "0"],
        capture_output=True,
        text=True,
        env=clean_env(**{name: value}),
        timeout=30,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert name in lines[0]


def test_missing_region_stops_start_up_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "--port", "0"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=30,
    )
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0
    assert "AWS_REGION" in result.stderr


def test_stop_signal_marks_the_app_draining() -> None:
    settings = Settings()
    readiness = Readiness()
    server = BrokerServer(uvicorn_config(object(), settings), readiness)
    server.handle_exit(signal.SIGTERM, None)
    assert readiness.draining and server.should_exit


async def test_sigterm_lets_in_flight_requests_finish() -> None:
    with broker_process(
        "--emulator", "--port", "0", TOKEN_BROKER_SHUTDOWN_GRACE_SECONDS="10"
    ) as process:
        url, emulator = started(process)
        async with httpx.AsyncClient(timeout=30) as client:
            await client.post(f"{emulator}/_emulator/config", json={"latency": 1.5})
            requests = [
                asyncio.create_task(
                    client.get(f"{url}/fleets/fleet-1/computes/c{i % 3}/token", headers=GUARD)
                )
                for i in range(30)
            ]

            async def fetching() -> bool:
                state = (await client.get(f"{emulator}/_emulator/state")).json()
                return state["calls"] == 3

            deadline = time.monotonic() + 20
            while not await fetching():
                assert time.monotonic() < deadline, "the fetches never started"
                await asyncio.sleep(0.02)
            signalled = time.monotonic()
            process.proc.send_signal(signal.SIGTERM)
            responses = await asyncio.gather(*requests)
        assert [r.status_code for r in responses] == [200] * 30
        code = await asyncio.to_thread(process.proc.wait, 20)
        assert time.monotonic() - signalled < 12
        # uvicorn re-raises SIGTERM after a graceful shutdown, so death by it is clean too.
        assert code in (0, -signal.SIGTERM), "\n".join(process.lines)
        assert not any('"level": "error"' in line for line in process.lines), process.lines


def test_unix_socket_listener_is_0660(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "broker.sock"
    with broker_process("--emulator", "--port", "0", "--uds", str(path)) as process:
        started(process)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        transport = httpx.HTTPTransport(uds=str(path))
        with httpx.Client(transport=transport, base_url="http://localhost") as client:
            response = client.get("/fleets/fleet-1/computes/c/token", headers=GUARD)
        assert response.status_code == 200 and response.json()["AuthToken"]


async def test_sigterm_stops_taking_connections() -> None:
    with broker_process("--emulator", "--port", "0") as process:
        url, emulator = started(process)
        host, port = url.removeprefix("http://").split(":")
        async with httpx.AsyncClient(timeout=30) as client:
            await client.post(f"{emulator}/_emulator/config", json={"latency": 3})
            slow = asyncio.create_task(
                client.get(f"{url}/fleets/fleet-1/computes/c/token", headers=GUARD)
            )
            await asyncio.sleep(0)  # let the request go out before the signal
            while (await client.get(f"{emulator}/_emulator/state")).json()["calls"] < 1:
                await asyncio.sleep(0.02)
            process.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            while True:  # the listener closes at once, while the slow request is still going
                try:
                    _, writer = await asyncio.open_connection(host, int(port))
                except (ConnectionRefusedError, ConnectionResetError):
                    break  # refused, or reset by a listener closing as the SYN arrived
                writer.close()
                assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
                await asyncio.sleep(0.02)
            assert not slow.done()
            assert (await slow).status_code == 200
        assert await asyncio.to_thread(process.proc.wait, 20) in (0, -signal.SIGTERM)


async def test_drain_keeps_listening_with_readyz_503() -> None:
    drain = 3.0
    with broker_process(
        "--emulator",
        "--port",
        "0",
        TOKEN_BROKER_DRAIN_SECONDS=str(drain),
        TOKEN_BROKER_OPS_PORT="0",
    ) as process:
        url, _ = started(process)
        ops = str(process.start_line()["ops_listener"])
        async with httpx.AsyncClient(timeout=10) as client:
            assert (await client.get(f"{url}/readyz")).status_code == 200
            signalled = time.monotonic()
            process.proc.send_signal(signal.SIGTERM)
            while (await client.get(f"{ops}/readyz")).status_code == 200:
                assert time.monotonic() - signalled < 2, "readiness did not turn at once"
            turned = time.monotonic() - signalled
            # Still listening, on both listeners, and still serving tokens, while endpoints go.
            token = await client.get(f"{url}/fleets/fleet-1/computes/c/token", headers=GUARD)
            assert token.status_code == 200
            assert (await client.get(f"{url}/readyz")).status_code == 503
        host, port = url.removeprefix("http://").split(":")
        while True:  # then uvicorn's own shutdown closes the port
            try:
                _, writer = await asyncio.open_connection(host, int(port))
            except (ConnectionRefusedError, ConnectionResetError):
                break  # refused, or reset by a listener closing as the SYN arrived
            writer.close()
            assert time.monotonic() - signalled < drain + 10, "never stopped listening"
            await asyncio.sleep(0.02)
        closed = time.monotonic() - signalled
        assert await asyncio.to_thread(process.proc.wait, 20) in (0, -signal.SIGTERM)
    assert turned < drain <= closed + 0.2, (turned, closed)


async def test_a_second_signal_ends_the_drain_at_once() -> None:
    drain = 60.0
    with broker_process(
        "--emulator", "--port", "0", TOKEN_BROKER_DRAIN_SECONDS=str(drain)
    ) as process:
        url, _ = started(process)
        async with httpx.AsyncClient(timeout=10) as client:
            process.proc.send_signal(signal.SIGTERM)
            await eventually(
                lambda: _status(client, f"{url}/readyz", 503), what="readiness to turn"
            )
            signalled = time.monotonic()
            process.proc.send_signal(signal.SIGTERM)  # an operator who will not wait
        code = await asyncio.to_thread(process.proc.wait, 20)
        assert code in (0, -signal.SIGTERM)
        assert time.monotonic() - signalled < drain / 4


async def _status(client: httpx.AsyncClient, url: str, status: int) -> bool:
    return (await client.get(url)).status_code == status
