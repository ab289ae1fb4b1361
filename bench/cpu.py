"""CPU time per hit through uvicorn's own protocol, with no sockets: the broker against bare ASGI.

    python bench/cpu.py              # 15 interleaved rounds of 2,000 requests per server
    python bench/cpu.py --rounds 5   # quicker, for trying a change

wrk's figures swing with the shared host; this one barely does. Each server is uvicorn's
HttpToolsProtocol fed the same request bytes by a transport that only counts writes, on one
uvloop loop, in one process, so the rounds of every server interleave within milliseconds. The
difference between two servers' CPU microseconds is what one costs per hit over the other,
before any socket work (which both pay alike). The broker runs the real app with a token cached
from an in-memory source; its protocol is measured with and without the request-head bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import uvicorn
import uvloop
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo, for service

from apps import SERVER_OPTIONS, bare_app

from service.config import Settings
from service.tokens.token import Token
from service.web.app import create_app
from service.web.connections import Connections
from service.web.front import Front
from service.web.protocol import protocol_for
from service.web.render import render_token

REQUEST = (
    b"GET /fleets/fleet-1/computes/c-00000/token HTTP/1.1\r\n"
    b"Host: localhost\r\nX-Token-Broker-Request: true\r\n\r\n"
)
Batch = Callable[[int], Awaitable[None]]


class CountingTransport(asyncio.Transport):
    """Takes what uvicorn writes and counts it; a hit is two writes (head, then body)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.answered: asyncio.Future[None] | None = None  # set at the write that ends a hit

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8787), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def write(self, data: Any) -> None:
        self.writes += 1
        if self.writes % 2 == 0 and self.answered is not None:
            self.answered.set_result(None)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class StaticSource:
    """A TokenSource with no network: one token, an hour long, for every key."""

    async def fetch(self, fleet_id: str, compute_name: str) -> Token:
        return Token(
            fleet_id=fleet_id,
            fleet_arn=f"arn:aws:gamelift:us-west-2:123456789012:fleet/{fleet_id}",
            compute_name=compute_name,
            compute_arn=f"arn:aws:gamelift:us-west-2:123456789012:compute/{compute_name}",
            auth_token="00000000-0000-0000-0000-000000000000",
            expires_at=time.time() + 3600,
        )


async def broker_app(stack: contextlib.AsyncExitStack) -> Any:
    @contextlib.asynccontextmanager
    async def upstream(_hooks: Any) -> AsyncIterator[StaticSource]:
        yield StaticSource()

    app = create_app(Settings(), upstream)
    await stack.enter_async_context(app.router.lifespan_context(app))
    return Front(app)


async def server(app: Any, protocol: type[HttpToolsProtocol]) -> Batch:
    """The protocol as uvicorn would run it (the bench's server options), on this loop."""
    options = {**SERVER_OPTIONS, "lifespan": "off", "http": protocol, "loop": "none"}
    config = uvicorn.Config(app, **options)
    config.load()
    loop = asyncio.get_running_loop()
    connection = protocol(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    transport = CountingTransport()
    connection.connection_made(transport)

    async def batch(requests: int) -> None:
        for _ in range(requests):
            transport.answered = loop.create_future()
            connection.data_received(REQUEST)
            await transport.answered
            await asyncio.sleep(0)  # let uvicorn finish the cycle before the next request

    return batch


async def measure(rounds: int, requests: int) -> dict[str, list[float]]:
    async with contextlib.AsyncExitStack() as stack:
        hit = render_token(await StaticSource().fetch("fleet-1", "c-00000"))
        headers = hit.json_headers
        servers = {
            "bare ASGI": await server(bare_app(headers, hit.json), HttpToolsProtocol),
            "broker, stock protocol": await server(await broker_app(stack), HttpToolsProtocol),
            "broker as deployed": await server(
                await broker_app(stack),
                protocol_for(Connections(max_connections=1024, head_timeout=10.0)),
            ),
        }
        for batch in servers.values():
            await batch(requests)  # warm-up: the first request of a broker is a miss
        seconds: dict[str, list[float]] = {name: [] for name in servers}
        for _ in range(rounds):
            for name, batch in servers.items():
                started = time.process_time()
                await batch(requests)
                seconds[name].append((time.process_time() - started) / requests * 1e6)
        return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=2000, help="per round and server")
    args = parser.parse_args()
    results = uvloop.run(measure(args.rounds, args.requests))
    bare = statistics.median(results["bare ASGI"])
    print(f"CPU µs per hit, {args.rounds} interleaved rounds of {args.requests:,} requests")
    print(f"{'server':24} {'median':>8} {'min':>8} {'over bare':>10} {'ratio':>6}")
    for name, values in results.items():
        middle = statistics.median(values)
        print(
            f"{name:24} {middle:8.2f} {min(values):8.2f} {middle - bare:+10.2f}"
            f" {bare / middle:6.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
