"""GET .../server-parameters: InitSDK's values, checked as token requests are, on the wire."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.emulator import Emulator
from service.names import SDK_VARIABLES
from service.web.parameters import quoted
from tests.conftest import Broker, make_settings
from tests.envfiles import (
    ENVIRONMENT_D_GENERATOR,
    sh_environment,
    systemd_environment,
    systemd_generator_environment,
)
from tests.helpers import FakeClock
from tests.test_metrics import scrape


def upstream(operation: str, result: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return "token_broker_upstream_calls_total", (("operation", operation), ("result", result))


FIELDS = {"WebSocketUrl", "FleetId", "HostId", "ProcessId", "AuthToken", "ExpirationTimestamp"}


@pytest.fixture(params=[False], ids=["framework"])
def serve_tokens(request: pytest.FixtureRequest) -> bool:
    # The route has no fast path; the front only passes it on, so one mode is enough here.
    return bool(request.param)


async def parameters(
    broker: Broker, fleet: str = "fleet-1", compute: str = "compute-1", **kw: Any
) -> httpx.Response:
    return await broker.client.get(f"/fleets/{fleet}/computes/{compute}/server-parameters", **kw)


def describes(emulator: Emulator) -> int:
    return emulator.action_calls.get("DescribeCompute", 0)


async def test_json_answer(broker: Broker, emulator: Emulator) -> None:
    response = await parameters(broker, compute="task-1/container-2")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == FIELDS
    assert body["FleetId"] == "fleet-1"
    assert body["HostId"] == "task-1/container-2"
    assert body["AuthToken"] == emulator.issued_tokens[-1]
    assert body["WebSocketUrl"] == emulator.url.replace("http://", "ws://") + "/sdk"  # type: ignore[attr-defined]
    assert uuid.UUID(body["ProcessId"]).version == 4
    token = (await broker.token("fleet-1", "task-1/container-2")).json()
    assert body["ExpirationTimestamp"] == token["ExpirationTimestamp"]  # formatted alike
    assert emulator.calls == 1  # the token route's hit is the same cache entry


async def test_a_fresh_process_id_on_every_call(broker: Broker) -> None:
    ids = [(await parameters(broker)).json()["ProcessId"] for _ in range(20)]
    assert len(set(ids)) == 20


async def test_text_answer_reads_alike_in_sh_and_systemd(broker: Broker, tmp_path: Path) -> None:
    as_json = (await parameters(broker)).json()
    response = await parameters(broker, headers={"Accept": "text/plain"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["cache-control"] == "no-store"
    text = response.text
    assert text.count("\n") == 5 and text.endswith("\n")
    expected = {name: as_json[field] for field, name in SDK_VARIABLES.items()}
    for read in (
        sh_environment(text, tmp_path),
        sh_environment(text, tmp_path, how="eval"),
        systemd_environment(text),
    ):
        process_id = read.pop("GAMELIFT_SDK_PROCESS_ID")
        assert uuid.UUID(process_id).version == 4 and process_id != as_json["ProcessId"]
        assert read == {k: v for k, v in expected.items() if k != "GAMELIFT_SDK_PROCESS_ID"}
        assert all(read.values())  # never an empty variable


@pytest.mark.skipif(ENVIRONMENT_D_GENERATOR is None, reason="systemd's generator not installed")
async def test_text_answer_reads_alike_in_systemd_itself(broker: Broker, tmp_path: Path) -> None:
    text = (await parameters(broker, headers={"Accept": "text/plain"})).text
    assert systemd_generator_environment(text, tmp_path) == systemd_environment(text)


@pytest.mark.parametrize(
    "value",
    [
        "ws://127.0.0.1:1/sdk",
        "wss://a.example/p?x=1&y=2#f",
        'a b;c|d&e>f<g(h)*~`x`"q"',  # shell metacharacters and double quotes, kept verbatim
        "tab\tinside",
    ],
)
def test_quoting_keeps_odd_values_verbatim(value: str, tmp_path: Path) -> None:
    if "\t" in value:
        with pytest.raises(Exception, match="safely"):
            quoted(value)
        return
    text = f"GAMELIFT_SDK_WEBSOCKET_URL={quoted(value)}\n"
    assert sh_environment(text, tmp_path) == {"GAMELIFT_SDK_WEBSOCKET_URL": value}
    assert systemd_environment(text) == {"GAMELIFT_SDK_WEBSOCKET_URL": value}


@pytest.mark.parametrize("value", ["it's", "$HOME", "a\nb", "back\\slash", "", "\x7f"])
def test_quoting_refuses_what_a_reader_could_take_otherwise(value: str) -> None:
    with pytest.raises(Exception, match="safely"):
        quoted(value)


async def test_configured_url_wins_and_describes_nothing(start_broker, emulator: Emulator) -> None:
    async with start_broker(sdk_websocket_url="wss://sdk.example:443/x") as broker:
        body = (await parameters(broker)).json()
    assert body["WebSocketUrl"] == "wss://sdk.example:443/x"
    assert describes(emulator) == 0


async def test_registered_url_comes_before_describecompute(broker: Broker, emulator: Emulator):
    broker.app.state.endpoints.pin(("fleet-1", "compute-1"), "ws://registered.example/sdk")
    assert (await parameters(broker)).json()["WebSocketUrl"] == "ws://registered.example/sdk"
    assert (await parameters(broker, compute="other")).json()["WebSocketUrl"].endswith("/sdk")
    assert describes(emulator) == 1  # for "other" only


async def test_describecompute_is_collapsed_and_cached(
    start_broker, emulator: Emulator, clock: FakeClock
) -> None:
    async with start_broker(sdk_endpoint_ttl_seconds=600) as broker:
        assert (await broker.token()).status_code == 200  # the token is held: a hit below
        emulator.latency = 0.3
        answers = await asyncio.gather(*(parameters(broker) for _ in range(20)))
        emulator.latency = 0
        assert {a.status_code for a in answers} == {200}
        assert describes(emulator) == 1
        for _ in range(5):
            await parameters(broker)
        assert describes(emulator) == 1
        clock.advance(599)
        await parameters(broker)
        assert describes(emulator) == 1
        clock.advance(2)  # past the endpoint's TTL (and still inside the token's lifetime)
        assert (await parameters(broker)).status_code == 200
        assert describes(emulator) == 2
        assert emulator.calls == 1
        samples = await scrape(broker)
    assert samples[upstream("DescribeCompute", "ok")] == 2
    assert samples[upstream("GetComputeAuthToken", "ok")] == 1
    # Each answer is counted as a token request, by how its token was found.
    assert samples[("token_broker_requests_total", (("outcome", "hit"),))] == 20 + 5 + 2


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("no_endpoint", 502, "NoSdkEndpoint"),
        ("not_found", 404, "NotFoundException"),
        ("internal", 503, "InternalServiceException"),
        ("unauthorized", 403, "UnauthorizedException"),
    ],
)
async def test_describecompute_failures_are_clear_errors_and_not_kept(
    broker: Broker, emulator: Emulator, fault: str, status: int, code: str
) -> None:
    emulator.set_fault(fault, action="DescribeCompute")
    response = await parameters(broker)
    assert response.status_code == status
    assert response.headers["cache-control"] == "no-store"
    assert response.json()["error"]["code"] == code
    assert ("retry-after" in response.headers) == (status == 503)
    emulator.set_fault(None)
    assert (await parameters(broker)).json()["WebSocketUrl"]  # the error was not kept
    assert describes(emulator) == 2


async def test_describecompute_throttled_does_not_back_tokens_off(
    broker: Broker, emulator: Emulator
) -> None:
    # The cache's host-wide throttling back-off is for GetComputeAuthToken, whose limit it is;
    # DescribeCompute has a limit of its own.
    emulator.set_fault("throttle", action="DescribeCompute")
    response = await parameters(broker)
    assert (response.status_code, response.json()["error"]["code"]) == (503, "ThrottlingException")
    assert (await broker.token("fleet-1", "another")).status_code == 200
    assert emulator.calls == 2


async def test_a_token_failure_asks_describecompute_nothing(broker: Broker, emulator: Emulator):
    emulator.set_fault("not_found")
    response = await parameters(broker)
    assert (response.status_code, response.json()["error"]["code"]) == (404, "NotFoundException")
    assert describes(emulator) == 0


@pytest.mark.parametrize(
    "path",
    [
        "/fleets/fleet_1/computes/c/server-parameters",
        "/fleets/fleet-1/computes/a/b/c/server-parameters",
        "/fleets/fleet-1/computes/a%00b/server-parameters",
        "/fleets/fleet-" + "a" * 600 + "/computes/c/server-parameters",
    ],
)
async def test_bad_input_is_400_with_no_upstream_call(
    broker: Broker, emulator: Emulator, path: str
) -> None:
    response = await broker.client.get(path)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidRequestException"
    assert emulator.action_calls == {}


@pytest.mark.parametrize(
    ("settings", "headers", "status", "code"),
    [
        ({"require_request_header": True}, {}, 403, "MissingRequestHeader"),
        ({}, {"Host": "evil.example"}, 403, "HostNotAllowed"),
        ({}, {"X-Forwarded-For": "10.0.0.1"}, 403, "ProxiedRequest"),
        ({"allowed_fleets": ["fleet-2"]}, {}, 403, "FleetNotAllowed"),
        ({"allowed_peers": ["10.0.0.0/8"]}, {}, 403, "PeerNotAllowed"),
    ],
)
async def test_refusals_are_those_of_the_token_route(
    start_broker,
    emulator: Emulator,
    settings: dict[str, Any],
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    async with start_broker(**settings) as broker:
        response = await parameters(broker, headers=headers)
        token = await broker.token(headers=headers)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert token.status_code == status and token.json() == response.json()
    assert emulator.action_calls == {}


async def test_caller_secret(start_broker, emulator: Emulator, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    async with start_broker(auth_token_file=secret) as broker:
        refused = await parameters(broker)
        served = await parameters(broker, headers={"Authorization": "Bearer s3cret"})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "Unauthenticated"
    assert served.status_code == 200


async def test_without_a_compute_directory_it_says_so(emulator: Emulator) -> None:
    # A token source that is no ComputeDirectory (a test's fake, say): a clear 503.
    from service.web.app import create_app
    from tests.helpers import FakeSource

    settings = make_settings()
    source = FakeSource(lambda: 1_800_000_000.0)

    def upstream(_hooks: Any) -> Any:
        from contextlib import asynccontextmanager

        @asynccontextmanager
        async def opened() -> Any:
            yield source

        return opened()

    app = create_app(settings, upstream)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            response = await client.get("/fleets/fleet-1/computes/c/server-parameters")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "NoComputeDirectory"
    assert "TOKEN_BROKER_SDK_WEBSOCKET_URL" in response.json()["error"]["message"]
