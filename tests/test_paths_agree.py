"""The raw hit path and the FastAPI route answer a hit byte for byte alike."""

from __future__ import annotations

from contextlib import nullcontext

import uvicorn

from service.app import create_app
from service.server import BrokerServer, uvicorn_config
from tests.conftest import make_settings, run_server
from tests.helpers import FakeClock, FakeSource, RawConnection

PATH = "/fleets/fleet-1/computes/task-1/container-2/token"
GUARD = {"X-Token-Broker-Request": "true"}


async def answers(serve_hits: bool, clock: FakeClock) -> list[tuple[int, list, bytes]]:
    settings = make_settings(require_request_header=True)
    source = FakeSource(clock)
    app = create_app(settings, upstream=lambda _hooks: nullcontext(source), clock=clock)
    server: uvicorn.Server = BrokerServer(
        uvicorn_config(app, settings, serve_hits=serve_hits, date_header=False),
        app.state.lifecycle,
    )
    seen = []
    async with run_server(server) as url:
        connection = await RawConnection.open(url)
        try:
            # Each three times: a miss or first hit, then hits the hit path answers from memory.
            text = {**GUARD, "Accept": "text/plain"}
            for headers in (GUARD, GUARD, GUARD, text, text, text, {}, GUARD):
                status, body = await connection.get(PATH, headers)
                seen.append((status, connection.last_headers, body))
        finally:
            await connection.close()
    assert source.calls == 1
    return seen


async def test_hit_path_and_framework_answer_alike() -> None:
    fast = await answers(True, FakeClock())
    framework = await answers(False, FakeClock())
    assert [status for status, _, _ in fast] == [200] * 6 + [403, 200]
    assert fast == framework
