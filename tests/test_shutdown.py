"""Requests still waiting on GameLift when the shutdown grace runs out get a JSON 503, not a 500."""

from __future__ import annotations

import asyncio
import signal

import httpx

from service.emulator import Emulator
from tests.helpers import eventually
from tests.processes import broker_process

GUARD = {"X-Token-Broker-Request": "true"}


def assert_shutting_down(responses: list[httpx.Response]) -> None:
    for response in responses:
        assert response.status_code == 503, (response.status_code, response.text)
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "ShuttingDown"


async def test_waiting_requests_get_503_when_the_grace_runs_out(
    start_broker,  # type: ignore[no-untyped-def]
    emulator: Emulator,
) -> None:
    emulator.latency = 60  # GameLift hangs past the grace and the upstream deadline alike
    async with start_broker(shutdown_grace_seconds=0.5, upstream_deadline_seconds=60) as broker:
        waiting = [asyncio.create_task(broker.token(compute=f"c-{i % 4}")) for i in range(20)]
        await eventually(lambda: broker.cache.inflight == 4, what="fetches started")
        # What SIGTERM does, without uvicorn re-raising the signal in the test process.
        broker.app.state.lifecycle.draining = True
        broker.server.should_exit = True
        responses = await asyncio.gather(*waiting)
    assert_shutting_down(responses)


async def test_sigterm_with_a_hanging_upstream_answers_no_500() -> None:
    # The case, in a real process: grace 3 s, GameLift hanging, 20 callers.
    with broker_process(
        "--emulator",
        "--port",
        "0",
        TOKEN_BROKER_SHUTDOWN_GRACE_SECONDS="3",
        TOKEN_BROKER_UPSTREAM_DEADLINE_SECONDS="60",
        # Hanging means no answer before the grace ends: no read timeout either.
        TOKEN_BROKER_UPSTREAM_READ_TIMEOUT_SECONDS="60",
    ) as process:
        url = process.url()
        emulator = process.wait_for_line(r'"endpoint": "(http://127\.0\.0\.1:\d+)"').group(1)
        process.wait_for_line('"event": "ready"')
        async with httpx.AsyncClient(timeout=30) as client:
            await client.post(f"{emulator}/_emulator/config", json={"latency": 60})
            waiting = [
                asyncio.create_task(
                    client.get(f"{url}/fleets/fleet-1/computes/c{i}/token", headers=GUARD)
                )
                for i in range(20)
            ]

            async def all_fetching() -> bool:
                state = (await client.get(f"{emulator}/_emulator/state")).json()
                return bool(state["calls"] == 20)

            await eventually(all_fetching, timeout=20, what="20 fetches started")
            process.proc.send_signal(signal.SIGTERM)
            responses = await asyncio.gather(*waiting)
        assert_shutting_down(responses)
        await asyncio.to_thread(process.proc.wait, 20)
