"""End to end: httpx -> real uvicorn -> broker -> real aioboto3 -> emulator over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest

from service.emulator import Emulator
from service.ops.logs import JsonFormatter
from tests.conftest import Broker
from tests.helpers import FakeClock, eventually


async def test_token_has_the_api_shape(broker: Broker, emulator: Emulator, clock: FakeClock):
    response = await broker.token("fleet-1234", "compute-1")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {
        "FleetId",
        "FleetArn",
        "ComputeName",
        "ComputeArn",
        "AuthToken",
        "ExpirationTimestamp",
    }
    assert (body["FleetId"], body["ComputeName"]) == ("fleet-1234", "compute-1")
    assert body["FleetArn"].endswith(":fleet/fleet-1234")
    assert body["AuthToken"] == emulator.issued_tokens[-1]
    assert body["ExpirationTimestamp"].endswith("Z")
    expiry = datetime.fromisoformat(body["ExpirationTimestamp"])
    assert expiry.utcoffset().total_seconds() == 0
    assert abs(expiry.timestamp() - (clock.now + emulator.token_lifetime)) <= 1
    assert emulator.calls == 1


async def test_second_request_is_served_from_cache(broker: Broker, emulator: Emulator):
    first = (await broker.token()).json()
    for _ in range(5):
        assert (await broker.token()).json() == first
    assert emulator.calls == 1


async def test_plain_text_answer(broker: Broker, emulator: Emulator):
    response = await broker.token(headers={"Accept": "text/plain"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["cache-control"] == "no-store"
    assert response.text == emulator.issued_tokens[-1]


@pytest.mark.parametrize("path", ["task-1/container-2", "task-1%2Fcontainer-2"])
async def test_compute_name_with_one_slash(broker: Broker, emulator: Emulator, path: str):
    response = await broker.client.get(f"/fleets/fleet-1/computes/{path}/token")
    assert response.status_code == 200
    assert response.json()["ComputeName"] == "task-1/container-2"
    assert emulator.call_log == [("fleet-1", "task-1/container-2")]


@pytest.mark.parametrize(
    "path",
    [
        "/fleets/fleet_1/computes/c/token",  # underscore
        "/fleets/FLEET-1/computes/c/token",  # upper-case prefix
        "/fleets/arn:aws:gamelift:us-west-2::fleet%2Ffleet-1/computes/c/token",  # no ARNs
        "/fleets/fleet-" + "a" * 600 + "/computes/c/token",  # over 512
        "/fleets/fleet-1/computes/a/b/c/token",  # two slashes
        "/fleets/fleet-1/computes/a b/token",
        "/fleets/fleet-1/computes/a%00b/token",
        "/fleets/fleet-1/computes/" + "c" * 1025 + "/token",  # over 1024
        "/fleets/fleet-1/computes//token",
        "/fleets/fleet-1/computes/a//b/token",
        "/fleets/fleet-1/computes/%2E%2E/token",
        "/fleets/fleet-1/computes/caf%C3%A9/token",
    ],
)
async def test_bad_input_is_400_without_upstream_call(
    broker: Broker, emulator: Emulator, path: str
):
    response = await broker.client.get(path)
    assert response.status_code in (400, 404), response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message"} and error["code"] and error["message"]
    assert emulator.calls == 0


async def test_bad_names_get_400_specifically(broker: Broker, emulator: Emulator):
    for fleet, compute in [("fleet_x", "c"), ("fleet-1", "a/b/c"), ("fleet-1", "c" * 1025)]:
        response = await broker.token(fleet, compute)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "InvalidRequestException"
    assert emulator.calls == 0


async def test_unknown_path_and_method_get_json_errors(broker: Broker, emulator: Emulator):
    missing = await broker.client.get("/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NotFound"
    wrong = await broker.client.post("/fleets/fleet-1/computes/c/token")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "MethodNotAllowed"
    assert emulator.calls == 0


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("invalid_request", 400, "InvalidRequestException"),
        ("unauthorized", 403, "UnauthorizedException"),
        ("not_found", 404, "NotFoundException"),
        ("unsupported_region", 502, "UnsupportedRegionException"),
        ("garbage", 502, "BadGateway"),
        ("garbage_json", 502, "BadGateway"),
        ("bad_timestamp", 502, "BadGateway"),
        ("expired", 502, "BadGateway"),
        ("internal", 503, "InternalServiceException"),
        ("throttle", 503, "ThrottlingException"),
    ],
)
async def test_upstream_errors_map_to_statuses(
    start_broker, emulator: Emulator, clock: FakeClock, fault: str, status: int, code: str
):
    emulator.set_fault(fault)
    async with start_broker(upstream_max_attempts=1) as broker:
        response = await broker.token()
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code
        assert response.headers["cache-control"] == "no-store"
        # The key backs off, and says for how long: until then its requests get this same
        # answer without a call, even once GameLift would answer.
        retry_after = int(response.headers["retry-after"])
        assert retry_after >= 1
        emulator.set_fault(None)
        again = await broker.token()
        assert (again.status_code, again.json()) == (status, response.json())
        assert emulator.calls == 1
        clock.advance(retry_after)
        assert (await broker.token()).status_code == 200
        assert emulator.calls == 2


async def test_retries_are_standard_mode_and_bounded(start_broker, emulator: Emulator):
    emulator.set_fault("internal", count=2)  # two 500s, then an answer
    async with start_broker(upstream_max_attempts=3) as broker:
        response = await broker.token()
        assert response.status_code == 200
        assert emulator.calls == 3


async def test_connection_refused_is_503(start_broker):
    with closed_port() as port:
        async with start_broker(
            endpoint_url=f"http://127.0.0.1:{port}", upstream_max_attempts=1
        ) as broker:
            response = await broker.token()
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert response.json()["error"]["code"] == "ServiceUnavailable"


async def test_hanging_upstream_is_answered_within_the_deadline(start_broker, emulator: Emulator):
    emulator.set_fault("hang")
    # One read timeout alone (5 s) is longer than the 1 s deadline over all three attempts:
    # only the deadline can answer this fast, and only it says "within 1 s".
    async with start_broker(
        upstream_deadline_seconds=1, upstream_read_timeout_seconds=5, upstream_max_attempts=3
    ) as broker:
        started = time.monotonic()
        response = await broker.token()
        elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.json()["error"] == {
        "code": "UpstreamTimeout",
        "message": "no answer from GameLift within 1 s",
    }
    assert response.headers["retry-after"]
    assert elapsed < 4
    emulator.release_hangs()


async def test_concurrent_requests_make_one_upstream_call(broker: Broker, emulator: Emulator):
    emulator.latency = 0.3
    responses = await asyncio.gather(*(broker.token() for _ in range(100)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["AuthToken"] for r in responses}) == 1
    assert emulator.calls == 1


async def test_concurrent_requests_share_one_failure(start_broker, emulator: Emulator):
    emulator.latency = 0.3
    emulator.set_fault("not_found")
    async with start_broker() as broker:
        responses = await asyncio.gather(*(broker.token() for _ in range(50)))
    assert {r.status_code for r in responses} == {404}
    assert emulator.calls == 1


async def test_a_cancelled_request_does_not_cancel_the_shared_fetch(
    broker: Broker, emulator: Emulator
):
    emulator.latency = 0.5
    tasks = broker.server.server_state.tasks  # the server's own task per request
    async with httpx.AsyncClient(base_url=broker.url) as impatient:
        leaver = asyncio.create_task(impatient.get("/fleets/fleet-1/computes/c/token"))
        await emulator.wait_for_calls(1)
        (leaving,) = tasks  # the request that started the fetch
        stayer = asyncio.create_task(broker.token("fleet-1", "c"))
        await eventually(lambda: len(tasks) == 2, what="the second request to wait")
        # uvicorn never cancels a request when its client goes; a shutdown or a bug can, and
        # that must end this request's wait only, not the fetch the other one shares.
        leaving.cancel()
        await leaver
    response = await stayer
    assert response.status_code == 200
    assert emulator.calls == 1
    assert (await broker.token("fleet-1", "c")).json() == response.json()
    assert emulator.calls == 1


async def test_refresh_window_and_minimum_validity(
    start_broker, emulator: Emulator, clock: FakeClock
):
    async with start_broker(upstream_max_attempts=1) as broker:
        first = (await broker.token()).json()["AuthToken"]
        for _ in range(3):  # hits, and remembered hits on the hit path
            assert (await broker.token()).json()["AuthToken"] == first
        clock.advance(emulator.token_lifetime - 299)  # inside the 300 s refresh window
        assert (await broker.token()).json()["AuthToken"] == first
        await eventually(lambda: emulator.calls == 2 and broker.cache.inflight == 0)
        second = (await broker.token()).json()["AuthToken"]
        assert second != first
        assert emulator.calls == 2
        # The minimum validity (30 s): served at 31 s left while its refresh fails...
        emulator.set_fault("internal")
        clock.advance(emulator.token_lifetime - 31)
        for _ in range(3):
            response = await broker.token()
            assert (response.status_code, response.json()["AuthToken"]) == (200, second)
        await eventually(lambda: emulator.calls == 3 and broker.cache.inflight == 0)
        # ...and never at 29 s left, on either path, though it has not expired.
        clock.advance(2)
        for _ in range(3):
            response = await broker.token()
            assert response.status_code == 503 and "AuthToken" not in response.text


async def test_failed_refresh_serves_valid_token_until_minimum_validity(
    start_broker, emulator: Emulator, clock: FakeClock
):
    async with start_broker(upstream_max_attempts=1) as broker:
        first = (await broker.token()).json()["AuthToken"]
        emulator.set_fault("internal")
        clock.advance(emulator.token_lifetime - 100)
        for _ in range(10):
            response = await broker.token()
            assert (response.status_code, response.json()["AuthToken"]) == (200, first)
        await eventually(lambda: broker.cache.inflight == 0 and emulator.calls == 2)
        assert emulator.calls == 2  # back-off: one failed refresh, not one per request
        clock.advance(100 - 29)  # under the 30 s minimum validity: never served
        response = await broker.token()
        assert response.status_code == 503
        emulator.set_fault(None)
        clock.advance(int(response.headers["retry-after"]))  # the key's back-off
        response = await broker.token()
        assert response.status_code == 200 and response.json()["AuthToken"] != first


async def test_expired_token_is_never_served(start_broker, emulator: Emulator, clock: FakeClock):
    async with start_broker(upstream_max_attempts=1) as broker:
        for _ in range(3):  # a miss, a hit, a remembered hit
            await broker.token()
        emulator.set_fault("internal")
        clock.advance(emulator.token_lifetime + 1)
        response = await broker.token()
        assert response.status_code == 503
        assert set(response.json()) == {"error"}


async def test_probes_never_call_upstream(broker: Broker, emulator: Emulator):
    emulator.set_fault("hang")
    health = await broker.client.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    ready = await broker.client.get("/readyz")
    assert ready.status_code == 200
    broker.app.state.lifecycle.draining = True
    assert (await broker.client.get("/readyz")).status_code == 503
    assert emulator.calls == 0
    emulator.set_fault(None)


async def test_tokens_never_reach_the_logs(
    start_broker, emulator: Emulator, clock: FakeClock, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    async with start_broker(upstream_max_attempts=1, access_log=True) as broker:
        await broker.token()
        await broker.token(headers={"Accept": "text/plain"})
        clock.advance(emulator.token_lifetime - 100)
        emulator.set_fault("garbage")
        await broker.token()
        await eventually(lambda: broker.cache.inflight == 0)
        emulator.set_fault("expired")
        clock.advance(90)
        await broker.token()
    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    assert any('"event": "upstream_fetch"' in line for line in lines)
    assert emulator.issued_tokens
    for token in emulator.issued_tokens:
        assert not any(token in line for line in lines)
    for line in lines:
        json.loads(line)


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections while the block runs.

    Bound but not listening, so no other test's server can take it meanwhile (a port merely
    found free once may be another worker's emulator a moment later).
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_access_lines_for_hits_only_when_asked(
    start_broker, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="service")
    for access_log, expected_hit_lines in ((False, 0), (True, 3)):
        caplog.clear()
        async with start_broker(access_log=access_log) as broker:
            for _ in range(4):  # one miss, three hits
                assert (await broker.token()).status_code == 200
            await broker.token("fleet_bad", "c")  # a refusal is always logged
        served = [r for r in caplog.records if getattr(r, "event", None) == "request"]
        hits = [r for r in served if r.outcome == "hit"]
        refusals = [r for r in served if r.outcome == "error"]
        assert len(hits) == expected_hit_lines
        assert len(refusals) == 1
        assert refusals[0].status == 400 and refusals[0].fleet == "fleet_bad"
        assert all(isinstance(r.duration_ms, float) for r in served)


async def test_caller_secret_never_reaches_the_logs(
    start_broker, tmp_path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    secret_file = tmp_path / "secret"
    secret_file.write_text("the-caller-secret-123")
    async with start_broker(auth_token_file=str(secret_file), access_log=True) as broker:
        await broker.token(headers={"Authorization": "Bearer the-caller-secret-123"})
        await broker.token(headers={"Authorization": "Bearer wrong-guess-456"})
    lines = [JsonFormatter().format(record) for record in caplog.records]
    assert lines
    assert not any("the-caller-secret-123" in line or "wrong-guess-456" in line for line in lines)
