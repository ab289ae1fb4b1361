"""The raw ASGI front and the FastAPI route answer token requests byte for byte alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext

import uvicorn
from fastapi import FastAPI

from service import errors
from service.web.app import create_app
from service.web.front import TOUCH_SECONDS
from service.web.server import BrokerServer, uvicorn_config
from tests.conftest import make_settings, run_server
from tests.helpers import FakeClock, FakeSource, RawConnection, eventually

PATH = "/fleets/fleet-1/computes/task-1/container-2/token"
OTHER = "/fleets/fleet-1/computes/other/token"
A, B, C = (f"/fleets/fleet-1/computes/{name}/token" for name in "abc")
GUARD = {"X-Token-Broker-Request": "true"}


@asynccontextmanager
async def broker(
    serve_tokens: bool, **settings: object
) -> AsyncIterator[tuple[RawConnection, FakeClock, FakeSource, FastAPI]]:
    """A broker on a FakeSource and FakeClock, and one raw connection to it."""
    clock = FakeClock()
    source = FakeSource(clock)
    config = make_settings(**settings)
    app = create_app(config, lambda _hooks: nullcontext(source), clocks=clock.clocks)
    server: uvicorn.Server = BrokerServer(
        uvicorn_config(app, config, serve_tokens=serve_tokens, date_header=False),
        app.state.lifecycle,
    )
    async with run_server(server) as url:
        connection = await RawConnection.open(url)
        try:
            yield connection, clock, source, app
        finally:
            await connection.close()


async def answers(serve_tokens: bool) -> list[tuple[int, list, bytes]]:
    seen = []
    async with broker(serve_tokens, require_request_header=True) as (
        connection,
        clock,
        source,
        app,
    ):

        async def get(path: str, headers: dict[str, str], times: int = 1) -> None:
            for _ in range(times):
                status, body = await connection.get(path, headers)
                seen.append((status, connection.last_headers, body))

        # Each three times: a miss or a first hit, then hits answered from memory.
        text = {**GUARD, "Accept": "text/plain"}
        await get(PATH, GUARD, 3)
        await get(PATH, text, 3)
        await get(PATH, {})  # refused: no guard header
        await get(PATH, {**GUARD, "Host": "evil.example"})  # refused: two Host headers
        await get("/fleets/fleet-1/computes/bad_name/token", GUARD)  # 400
        await get(PATH + "?x=1", GUARD)
        # Upstream failures on a key with nothing cached: mapped alike, Retry-After too.
        source.error = errors.UpstreamNotFound("no such compute")
        await get(OTHER, GUARD, 2)  # the second during the key's back-off: the same, no call
        clock.advance(1)
        source.error = RuntimeError("a bug in the source")
        await get(OTHER, GUARD)
        clock.advance(1)
        source.error = None
        # The refresh window: the cached token, and one refresh behind it.
        clock.advance(3600 - 100)
        await get(PATH, GUARD)
        await eventually(lambda: app.state.cache.inflight == 0)
        await get(PATH, GUARD, 2)
        source.error = errors.UpstreamThrottled("slow down")
        await get(OTHER, GUARD)
    assert source.calls == 5
    return seen


async def test_front_and_framework_answer_alike() -> None:
    front = await answers(True)
    framework = await answers(False)
    statuses = [status for status, _, _ in front]
    assert statuses == [200] * 6 + [403, 403, 400, 200, 404, 404, 502, 200, 200, 200, 503]
    assert front[-4][2] == front[0][2] and front[-3][2] != front[0][2]  # stale, then renewed
    assert front == framework


async def evictions(serve_tokens: bool) -> tuple[list[bytes], int]:
    bodies = []
    async with broker(serve_tokens, cache_max_entries=2) as (connection, clock, source, _):

        async def get(*paths: str) -> None:
            for path in paths:
                status, body = await connection.get(path, {"Accept": "text/plain"})
                assert status == 200
                bodies.append(body)
                clock.advance(TOUCH_SECONDS)  # each hit from memory tells the cache

        # A is hot, answered from the front's memory; those hits must still count as uses,
        # so C evicts B, the least recently used, and A keeps its token.
        await get(A, A, A, B, A, A, C, A, B)
        # Then B evicts C and C evicts A. An evicted token is not served from the front's
        # memory, but the cache remembers it, so it comes back without a call while valid...
        await get(C, A, A)
        # ...and never once past its minimum validity.
        clock.advance(3600)
        await get(B)
    return bodies, source.calls


async def test_hits_from_memory_keep_the_lru_order_and_never_outlive_the_cache() -> None:
    front = await evictions(True)
    assert front == await evictions(False)
    tokens = [int(body.removeprefix(b"token-")) for body in front[0]]
    assert tokens == [1, 1, 1, 2, 1, 1, 3, 1, 2, 3, 1, 1, 4]
    assert front[1] == 4


class PerCallerGuard:
    """A rule on the caller's headers and the key together, as a caller identity would be:
    caller a may ask for fleet-1 only, caller b for fleet-2 only."""

    rotates = False
    ALLOWED = frozenset({(b"a", "fleet-1"), (b"b", "fleet-2")})

    def __init__(self, inner: object) -> None:
        self._inner = inner

    def epoch(self) -> object:
        return None

    @property
    def allowed_peer_hosts(self) -> set[str]:
        return self._inner.allowed_peer_hosts  # type: ignore[attr-defined,no-any-return]

    def check_peer(self, client: tuple[str, int] | None) -> None:
        self._inner.check_peer(client)  # type: ignore[attr-defined]

    async def check(self, headers: list[tuple[bytes, bytes]], key: tuple[str, str]) -> float:
        valid_for = await self._inner.check(headers, key)  # type: ignore[attr-defined]
        caller = dict(headers).get(b"x-caller")
        if (caller, key[0]) not in self.ALLOWED:
            raise errors.Forbidden("not this caller's fleet", code="FleetNotAllowed")
        return valid_for  # type: ignore[no-any-return]


async def per_caller(serve_tokens: bool) -> list[int]:
    statuses = []
    async with broker(serve_tokens) as (connection, _clock, _source, app):
        app.state.guard = PerCallerGuard(app.state.guard)  # before the first token request

        async def get(path: str, caller: str, times: int = 1) -> None:
            for _ in range(times):
                statuses.append((await connection.get(path, {"X-Caller": caller}))[0])

        one, two = "/fleets/fleet-1/computes/c/token", "/fleets/fleet-2/computes/c/token"
        await get(one, "a", 3)  # a miss, a hit, a hit from memory: path and headers remembered
        await get(two, "b", 3)
        # Each path and each header set has passed before, but never together.
        await get(two, "a", 2)
        await get(one, "b", 2)
    return statuses


async def test_a_remembered_verdict_covers_its_key_not_only_its_headers() -> None:
    front = await per_caller(True)
    assert front == [200] * 6 + [403] * 4
    assert front == await per_caller(False)
