"""The whole start-up loop of a game server host, with real parts only.

The broker registers its compute with the emulator in strict mode; `gamelift-token-broker exec`
starts deploy/examples/game_server.py (a stand-in game server that speaks the SDK's websocket)
with the five values the broker handed out; it connects with exactly those, calls ProcessReady,
and gets a game session created through the control plane; SIGTERM to the broker deregisters the
compute, and GameLift then tells the process to end. The shell form of `exec`
(deploy/examples/start-game-server.sh) is run against the same real broker, up and down.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aioboto3
import httpx
import pytest

from service.emulator import Emulator
from tests.conftest import emulator_server, run_server
from tests.helpers import eventually
from tests.processes import broker_process, clean_env
from tests.test_registration import FLEET, HOST, registering, url_of, wait_exit, wait_ready

ROOT = Path(__file__).resolve().parent.parent
GAME_SERVER = ROOT / "deploy" / "examples" / "game_server.py"
START_SCRIPT = ROOT / "deploy" / "examples" / "start-game-server.sh"
SHELL = shutil.which("dash") or shutil.which("sh") or "sh"


@pytest.fixture
async def strict() -> AsyncIterator[Emulator]:
    emulator = Emulator(strict=True, fleets=[FLEET], location="custom-local")
    async with run_server(emulator_server(emulator)) as url:
        emulator.url = url  # type: ignore[attr-defined]
        yield emulator
    emulator.release_hangs()


class Lines:
    """A child's stdout, line by line, read on the test's loop."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode().rstrip("\n"))

    async def wait_for(self, text: str, timeout: float = 30) -> str:
        await eventually(
            lambda: any(text in line for line in self.lines), timeout=timeout, what=repr(text)
        )
        return next(line for line in self.lines if text in line)

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        await self._reader


async def start(*argv: str, **env: str) -> Lines:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=clean_env(**env),
    )
    return Lines(proc)


async def state(emulator: Emulator) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.get(f"{emulator.url}/_emulator/state")  # type: ignore[attr-defined]
    body: dict[str, Any] = answer.json()
    return body


def control_plane(emulator: Emulator) -> Any:
    session = aioboto3.Session(
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-west-2",
    )
    return session.client("gamelift", endpoint_url=emulator.url)  # type: ignore[attr-defined]


async def test_register_exec_process_ready_game_session_and_deregister(strict: Emulator) -> None:
    with broker_process("--port", "0", **registering(strict)) as broker:
        url = await url_of(broker)
        async with httpx.AsyncClient(timeout=10) as client:
            await wait_ready(client, url)  # 1. registered, and its token held
        assert [c["ComputeName"] for c in (await state(strict))["computes"]] == [HOST]

        # 2. exec starts the stand-in game server with the five values.
        game = await start(
            sys.executable, "-m", "service", "exec",
            "--fleet-id", FLEET, "--compute-name", HOST, "--url", url, "--timeout", "30",
            "--", sys.executable, str(GAME_SERVER), "7777",
        )  # fmt: skip
        try:
            # 3. It connected with exactly what it was given: the emulator knows the process by
            # the id exec set, on this compute, and the token it presented is the one issued.
            line = await game.wait_for("process ready")
            process_id = line.split("process ")[2].split(",")[0]
            assert uuid.UUID(process_id)
            [process] = (await state(strict))["processes"]
            assert process["ProcessId"] == process_id
            assert (process["FleetId"], process["ComputeName"]) == (FLEET, HOST)
            assert (process["Status"], process["Connected"], process["Port"]) == (
                "ACTIVE",
                True,
                7777,
            )
            assert strict.calls == 1  # one GetComputeAuthToken: the broker's prefetch

            # 4. A game session created through the control plane reaches it.
            async with control_plane(strict) as gamelift:
                created = await gamelift.create_game_session(
                    FleetId=FLEET, MaximumPlayerSessionCount=4
                )
                arn = created["GameSession"]["GameSessionId"]
                assert arn in await game.wait_for("game session active")

                async def active() -> bool:
                    described = await gamelift.describe_game_sessions(GameSessionId=arn)
                    return bool(described["GameSessions"][0]["Status"] == "ACTIVE")

                await eventually(active, timeout=20, what="the game session ACTIVE")

            # 5. SIGTERM to the broker deregisters the compute; GameLift tells its process.
            broker.proc.send_signal(signal.SIGTERM)
            # uvicorn re-raises the signal once it has shut down cleanly.
            assert await wait_exit(broker) == -signal.SIGTERM
            assert (await state(strict))["computes"] == []
            assert strict.action_calls["DeregisterCompute"] == 1
            await game.wait_for("GameLift asked this process to end")
            assert await asyncio.wait_for(game.proc.wait(), 30) == 0
        finally:
            await game.close()
    # The token never reached a line the game server or the broker wrote.
    token = strict.issued_tokens[-1]
    assert not [line for line in game.lines + list(broker.lines) if token in line]


@pytest.mark.skipif(shutil.which("curl") is None, reason="the shell form needs curl")
async def test_the_shell_form_against_a_real_broker_up_and_down(
    strict: Emulator, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    report = (
        "import json, os, sys; json.dump({k: v for k, v in os.environ.items()"
        " if k.startswith('GAMELIFT_SDK_')}, open(sys.argv[1], 'w'))"
    )
    command = [SHELL, str(START_SCRIPT), sys.executable, "-c", report, str(marker)]
    with broker_process("--port", "0", **registering(strict)) as broker:
        url = await url_of(broker)
        async with httpx.AsyncClient(timeout=10) as client:
            await wait_ready(client, url)
        up = await start(*command, FLEET_ID=FLEET, COMPUTE_NAME=HOST, BROKER_URL=url)
        try:
            assert await asyncio.wait_for(up.proc.wait(), 60) == 0, up.lines
        finally:
            await up.close()
        got = json.loads(marker.read_text())
        assert set(got) == {
            f"GAMELIFT_SDK_{name}"
            for name in ("WEBSOCKET_URL", "AUTH_TOKEN", "FLEET_ID", "HOST_ID", "PROCESS_ID")
        }
        assert got["GAMELIFT_SDK_AUTH_TOKEN"] == strict.issued_tokens[-1]
        assert got["GAMELIFT_SDK_WEBSOCKET_URL"] == (
            strict.url.replace("http", "ws") + "/sdk"  # type: ignore[attr-defined]
        )
        assert (got["GAMELIFT_SDK_FLEET_ID"], got["GAMELIFT_SDK_HOST_ID"]) == (FLEET, HOST)
        assert uuid.UUID(got["GAMELIFT_SDK_PROCESS_ID"])
        assert up.lines == []  # nothing echoed, the token least of all

        broker.proc.send_signal(signal.SIGTERM)
        await wait_exit(broker)
    marker.unlink()
    # The broker is gone: the script gives up within its timeout and starts nothing.
    down = await start(
        *command, FLEET_ID=FLEET, COMPUTE_NAME=HOST, BROKER_URL=url, BROKER_TIMEOUT="3"
    )
    try:
        assert await asyncio.wait_for(down.proc.wait(), 60) != 0
    finally:
        await down.close()
    assert not marker.exists(), "COMMAND ran with the broker down"
    assert len(down.lines) == 1, down.lines
