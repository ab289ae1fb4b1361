"""Fixtures: explicit settings, the emulator and the broker, each under a real uvicorn server."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aioboto3
import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from service.config import Settings
from service.emulator import Emulator
from service.gamelift.client import GameLiftTokenSource
from service.listen import bind_tcp
from service.tokens.cache import TokenCache
from service.web.app import create_app
from service.web.server import BrokerServer, uvicorn_config
from tests.helpers import FakeClock, eventually

TEST_SESSION = {
    "aws_access_key_id": "test",
    "aws_secret_access_key": "test",
    "region_name": "us-west-2",
}


@pytest.fixture(autouse=True)
def _no_environment_leaks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings must come from the test, never from whoever runs it.
    for name in list(os.environ):
        if name.startswith(("TOKEN_BROKER_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@asynccontextmanager
async def run_server(
    server: uvicorn.Server, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serve on a loopback port (a free one by default) in this loop, as uvicorn's tests do."""
    sock = bind_tcp(host, port)
    port = sock.getsockname()[1]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await eventually(lambda: server.started or task.done(), what="server start")
    if task.done():
        sock.close()
        task.result()
        raise RuntimeError("server exited during start-up")
    try:
        yield f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=15)


@pytest.fixture
def clock() -> FakeClock:
    """One clock shared by the emulator and the broker, so tests move time instead of waiting."""
    return FakeClock()


def emulator_server(emulator: Emulator) -> uvicorn.Server:
    config = uvicorn.Config(emulator.app, log_config=None, access_log=False, lifespan="on")
    # A hanging request must not hold the test's teardown for long.
    config.timeout_graceful_shutdown = 1
    return uvicorn.Server(config)


@pytest.fixture
async def emulator(clock: FakeClock) -> AsyncIterator[Emulator]:
    emulator = Emulator(clock=clock)
    async with run_server(emulator_server(emulator)) as url:
        emulator.url = url  # type: ignore[attr-defined]
        yield emulator
    emulator.release_hangs()


@dataclass
class Broker:
    url: str
    app: FastAPI
    server: BrokerServer
    client: httpx.AsyncClient

    @property
    def cache(self) -> TokenCache:
        return self.app.state.cache  # type: ignore[no-any-return]

    async def token(self, fleet: str = "fleet-1", compute: str = "compute-1", **kw: Any):
        return await self.client.get(f"/fleets/{fleet}/computes/{compute}/token", **kw)


def make_settings(**overrides: Any) -> Settings:
    # No spread of the refresh point: tests name the window's exact edges (the spread has its
    # own tests). A budget no test of other things runs into.
    defaults: dict[str, Any] = {
        "require_request_header": False,
        "refresh_spread": 0.0,
        "upstream_rate": 1e9,
        "upstream_burst": 1_000_000_000,
    }
    return Settings(**{**defaults, **overrides})


@pytest.fixture(params=[True, False], ids=["front", "framework-only"])
def serve_tokens(request: pytest.FixtureRequest) -> bool:
    """Every broker test runs twice: token requests answered by the raw ASGI front (as
    deployed), and all of them left to the FastAPI route."""
    return bool(request.param)


@pytest.fixture
async def start_broker(
    emulator: Emulator, clock: FakeClock, serve_tokens: bool
) -> AsyncIterator[Callable[..., Any]]:
    """`async with start_broker(**settings) as broker`: the real aioboto3 client to the emulator."""

    @asynccontextmanager
    async def start(endpoint_url: str | None = None, **overrides: Any) -> AsyncIterator[Broker]:
        settings = make_settings(**overrides)
        session = aioboto3.Session(**TEST_SESSION)
        target = endpoint_url or emulator.url  # type: ignore[attr-defined]
        app = create_app(
            settings,
            lambda hooks: GameLiftTokenSource.open(
                settings, session=session, endpoint_url=target, event_hooks=hooks
            ),
            clocks=clock.clocks,
        )
        config = uvicorn_config(app, settings, serve_tokens=serve_tokens)
        server = BrokerServer(config, app.state.lifecycle)
        async with run_server(server) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                yield Broker(url=url, app=app, server=server, client=client)

    yield start


@pytest.fixture
async def broker(start_broker: Callable[..., Any]) -> AsyncIterator[Broker]:
    async with start_broker() as running:
        yield running
