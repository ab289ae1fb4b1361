"""The GameLift emulator under a real uvicorn server, spoken to by the real aioboto3 client."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import aioboto3
import botocore.config
import httpx
import pytest
import pytest_asyncio
import uvicorn
from botocore.exceptions import ClientError, ReadTimeoutError

from service.emulator.app import AMZ_JSON, TARGET, Emulator

NOW = 1_800_000_000.0
FLEET = "fleet-1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d"
COMPUTE = "compute-1"
ARN = "arn:aws:gamelift:us-west-2:123456789012"
TOKEN_RE = re.compile(r"^[a-zA-Z0-9\-]{1,64}$")

pytestmark = pytest.mark.asyncio(loop_scope="module")


@asynccontextmanager
async def serve(app: Any) -> AsyncIterator[tuple[str, uvicorn.Server]]:
    """Run `app` under uvicorn on a free loopback port in this event loop."""
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only then, and
    # without it every keep-alive answer waits ~40 ms on Nagle and delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # log_config=None: leave the process-wide logging set-up alone.
    config = uvicorn.Config(app, lifespan="on", log_level="warning", log_config=None)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(5):
            # uvicorn exposes only a flag for this, so there is nothing to await instead.
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("uvicorn exited during start-up")
                await asyncio.sleep(0.005)
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        # No graceful-shutdown timeout is set, so this also proves no request was left hanging.
        await asyncio.wait_for(task, timeout=5)
        sock.close()


class Switchboard:
    """One server for the whole module, each test plugging in a fresh emulator.

    uvicorn's shutdown alone takes about 0.2 s, which per test would cost more than the tests.
    """

    def __init__(self) -> None:
        self.emulator = Emulator()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.emulator.app(scope, receive, send)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[tuple[str, Switchboard]]:
    switchboard = Switchboard()
    async with serve(switchboard) as (address, _):
        yield address, switchboard


@pytest_asyncio.fixture(loop_scope="module")
async def emulator(server: tuple[str, Switchboard]) -> AsyncIterator[Emulator]:
    emulator = server[1].emulator = Emulator(clock=lambda: NOW)
    yield emulator
    emulator.release_hangs()


@pytest.fixture
def url(server: tuple[str, Switchboard], emulator: Emulator) -> str:
    return server[0]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def http(server: tuple[str, Switchboard]) -> AsyncIterator[httpx.AsyncClient]:
    # Shared because each new httpx client spends ~0.1 s building an SSL context.
    async with httpx.AsyncClient(base_url=server[0]) as client:
        yield client


@pytest.fixture(scope="module")
def session() -> aioboto3.Session:
    # Shared because a session caches the loaded service model: a client then costs ~5 ms.
    return aioboto3.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name="us-west-2"
    )


@pytest.fixture
def gamelift(
    session: aioboto3.Session, url: str
) -> Callable[..., AbstractAsyncContextManager[Any]]:
    """`async with gamelift(max_attempts=1, **config)`: a real aioboto3 GameLift client."""

    def client(max_attempts: int = 1, **config: Any) -> AbstractAsyncContextManager[Any]:
        # botocore's "max_attempts" counts retries only; "total_max_attempts" counts them all.
        retries = {"mode": "standard", "total_max_attempts": max_attempts}
        return session.client(
            "gamelift",
            endpoint_url=url,
            config=botocore.config.Config(retries=retries, **config),
        )

    return client


async def test_success_has_every_field(emulator: Emulator, gamelift):
    async with gamelift() as client:
        answer = await client.get_compute_auth_token(FleetId=FLEET, ComputeName=COMPUTE)
    assert answer["FleetId"] == FLEET
    assert answer["FleetArn"] == f"{ARN}:fleet/{FLEET}"
    assert answer["ComputeName"] == COMPUTE
    assert answer["ComputeArn"] == f"{ARN}:compute/{COMPUTE}"
    assert TOKEN_RE.match(answer["AuthToken"])
    assert emulator.issued_tokens == [answer["AuthToken"]]
    # botocore turns the epoch number into an aware datetime.
    assert answer["ExpirationTimestamp"].timestamp() == pytest.approx(NOW + 3600.0)
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert answer["ResponseMetadata"]["RequestId"]
    assert emulator.calls == 1
    assert emulator.call_log == [(FLEET, COMPUTE)]


async def test_every_call_mints_a_fresh_token(emulator: Emulator, gamelift):
    emulator.token_lifetime = 90.0
    async with gamelift() as client:
        first = await client.get_compute_auth_token(FleetId=FLEET, ComputeName=COMPUTE)
        second = await client.get_compute_auth_token(FleetId=FLEET, ComputeName=COMPUTE)
    assert first["AuthToken"] != second["AuthToken"]
    assert second["ExpirationTimestamp"].timestamp() == pytest.approx(NOW + 90.0)
    assert emulator.issued_tokens == [first["AuthToken"], second["AuthToken"]]


async def test_arns_are_accepted_and_answered_with_plain_ids(emulator: Emulator, gamelift):
    async with gamelift() as client:
        answer = await client.get_compute_auth_token(
            FleetId=f"{ARN}:fleet/{FLEET}", ComputeName=f"{ARN}:compute/task-1/container-2"
        )
    assert answer["FleetId"] == FLEET
    assert answer["ComputeName"] == "task-1/container-2"
    assert answer["ComputeArn"] == f"{ARN}:compute/task-1/container-2"


async def test_region_shows_in_the_arns(emulator: Emulator, gamelift):
    emulator.region = "eu-north-1"
    async with gamelift() as client:
        answer = await client.get_compute_auth_token(FleetId=FLEET, ComputeName=COMPUTE)
    assert answer["FleetArn"] == f"arn:aws:gamelift:eu-north-1:123456789012:fleet/{FLEET}"


@pytest.mark.parametrize(
    ("fleet", "compute"),
    [
        ("not a fleet", COMPUTE),
        ("1-2-3", COMPUTE),
        (FLEET, "a/b/c"),
        (FLEET, ""),  # botocore's model has no minimum here, so only the service refuses it
        (FLEET, "c" * 1025),
        ("fleet-" + "f" * 507, COMPUTE),
    ],
)
async def test_invalid_input_is_invalid_request(emulator: Emulator, gamelift, fleet, compute):
    async with gamelift() as client:
        with pytest.raises(client.exceptions.InvalidRequestException):
            await client.get_compute_auth_token(FleetId=fleet, ComputeName=compute)
    assert emulator.calls == 1
    assert emulator.issued_tokens == []


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("internal", 500, "InternalServiceException"),
        ("throttle", 400, "ThrottlingException"),
        ("not_found", 400, "NotFoundException"),
        ("unauthorized", 400, "UnauthorizedException"),
        ("invalid_request", 400, "InvalidRequestException"),
        ("unsupported_region", 400, "UnsupportedRegionException"),
    ],
)
async def test_error_faults_surface_as_botocore_errors(
    emulator: Emulator, gamelift, fault: str, status: int, code: str
):
    emulator.set_fault(fault)
    async with gamelift() as client:
        with pytest.raises(ClientError) as caught:
            await client.get_compute_auth_token(FleetId=FLEET, ComputeName=COMPUTE)
        if code != "ThrottlingException":  # GameLift's model does not list throttling
            assert isinstance(caught.value, getattr(client.exceptions, code))
    assert caught.value.response["Error"]["Code"] == code
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    if fault == "throttle":
        assert caught.value.response["Error"]["Message"] == "Rate exceeded"
    assert emulator.fault == fault  # no count: it stays until cleared
    assert emulator.issued_tokens == []


@pytest.mark.parametrize("fault", ["garbage", "garbage_json"])
async def test_garbage_200_is_a_dict_without_a_token(emulator: Emulator, gamelift, fault: str):
    emulator.set_fault(fault)
    async with gamelift() as client:
        answer = await client.get_compute_auth_token(FleetId=FLEET, ComputeName=COMPUTE)
    assert "AuthToken" not in answer
    assert "ExpirationTimestamp" not in answer


async def test_expired_fault_answers_a_past_expiry(emulator: Emulator, gamelift):
    emulator.set_fault("expired")
    async with gamelift() as client:
        answer = await client.get_compute_auth_token(FleetId=FLEET, ComputeName=COMPUTE)
    assert answer["ExpirationTimestamp"].timestamp() == pytest.approx(NOW - 60)
    assert answer["AuthToken"] == emulator.issued_tokens[-1]


async def test_counted_fault_recovers_by_itself(emulator: Emulator, gamelift):
    emulator.set_fault("not_found", count=2)
    async with gamelift() as client:
        for _ in range(2):
            with pytest.raises(client.exceptions.NotFoundException):
                await client.get_compute_auth_token(FleetId=FLEET, ComputeName=COMPUTE)
        answer = await client.get_compute_auth_token(FleetId=FLEET, ComputeName=COMPUTE)
    assert answer["AuthToken"]
    assert emulator.fault is None
    assert emulator.calls == 3


async def test_a_fault_for_another_action(emulator: Emulator, gamelift, http: httpx.AsyncClient):
    config = {"fault": "internal", "count": 1, "action": "ListCompute"}
    state = (await http.post("/_emulator/config", json=config)).json()
    assert (state["fault"], state["fault_action"], state["fault_remaining"]) == (
        "internal",
        "ListCompute",
        1,
    )
    async with gamelift() as client:
        # Other actions are not faulted, nor counted down.
        assert (await client.get_compute_auth_token(FleetId=FLEET, ComputeName=COMPUTE))[
            "AuthToken"
        ]
        await client.describe_compute(FleetId=FLEET, ComputeName=COMPUTE)
        with pytest.raises(client.exceptions.InternalServiceException):
            await client.list_compute(FleetId=FLEET)
        assert (await client.list_compute(FleetId=FLEET))["ComputeList"]
    assert emulator.fault is None
    # Without an action, a fault is GetComputeAuthToken's, as before.
    state = (await http.post("/_emulator/config", json={"fault": "not_found"})).json()
    assert state["fault_action"] == "GetComputeAuthToken"
    for bad in ({"action": "Nope"}, {"fault": "expired", "action": "ListCompute"}):
        response = await http.post("/_emulator/config", json=bad)
        assert response.status_code == 400, bad
    emulator.set_fault(None)


async def test_calls_count_every_retry(emulator: Emulator, gamelift):
    emulator.set_fault("internal")
    async with gamelift(max_attempts=3) as client:
        with pytest.raises(client.exceptions.InternalServiceException):
            await client.get_compute_auth_token(FleetId=FLEET, ComputeName=COMPUTE)
    assert emulator.calls == 3
    assert emulator.call_log == [(FLEET, COMPUTE)] * 3


async def test_hang_is_counted_and_released_as_a_500(emulator: Emulator, gamelift):
    emulator.set_fault("hang")
    async with gamelift() as client:
        calls = [
            asyncio.create_task(client.get_compute_auth_token(FleetId=FLEET, ComputeName=c))
            for c in ("c-1", "c-2")
        ]
        await emulator.wait_for_calls(2, timeout=5)
        assert not any(call.done() for call in calls)
        emulator.release_hangs()
        for call in calls:
            with pytest.raises(client.exceptions.InternalServiceException):
                await call
    assert emulator.calls == 2


async def test_hang_ends_when_the_client_gives_up(session: aioboto3.Session):
    emulator = Emulator()
    emulator.set_fault("hang")
    # serve() sets no graceful-shutdown timeout: it stops only once the hanging request ended.
    async with serve(emulator.app) as (address, _):
        config = botocore.config.Config(read_timeout=0.1, retries={"total_max_attempts": 1})
        async with session.client("gamelift", endpoint_url=address, config=config) as client:
            with pytest.raises(ReadTimeoutError):
                await client.get_compute_auth_token(FleetId=FLEET, ComputeName=COMPUTE)
    assert emulator.calls == 1


async def test_latency_comes_before_the_answer(emulator: Emulator, gamelift):
    emulator.latency = 0.05
    emulator.set_fault("not_found", count=1)
    async with gamelift() as client:
        started = time.monotonic()
        with pytest.raises(client.exceptions.NotFoundException):
            await client.get_compute_auth_token(FleetId=FLEET, ComputeName=COMPUTE)
        assert time.monotonic() - started >= 0.05


async def test_wait_for_calls_has_a_deadline(emulator: Emulator):
    with pytest.raises(TimeoutError):
        await emulator.wait_for_calls(1, timeout=0.05)


async def test_no_endpoint_fault_leaves_the_compute_without_its_sdk_endpoint(
    emulator: Emulator, gamelift
):
    async with gamelift() as client:
        described = await client.describe_compute(FleetId=FLEET, ComputeName=COMPUTE)
        assert described["Compute"]["GameLiftServiceSdkEndpoint"].startswith("ws://")
        emulator.set_fault("no_endpoint", count=1, action="DescribeCompute")
        faulted = await client.describe_compute(FleetId=FLEET, ComputeName=COMPUTE)
        assert "GameLiftServiceSdkEndpoint" not in faulted["Compute"]
        assert faulted["Compute"]["ComputeName"] == COMPUTE  # the rest of the answer is whole
    with pytest.raises(ValueError, match="applies to"):
        emulator.set_fault("no_endpoint")  # GetComputeAuthToken has no Compute to shape


async def test_conflict_fault_is_registercompute_s_conflict(emulator: Emulator, gamelift):
    emulator.set_fault("conflict", count=1, action="RegisterCompute")
    async with gamelift() as client:
        with pytest.raises(client.exceptions.ConflictException):
            await client.register_compute(
                FleetId=FLEET, ComputeName=COMPUTE, IpAddress="10.0.0.1", Location="custom-local"
            )


async def test_set_fault_refuses_unknown_kinds_and_counts():
    emulator = Emulator()
    with pytest.raises(ValueError, match="unknown fault"):
        emulator.set_fault("explode")
    with pytest.raises(ValueError, match="at least 1"):
        emulator.set_fault("internal", count=0)
    emulator.set_fault("internal", count=2)
    emulator.set_fault(None)
    assert emulator.fault is None
    assert emulator.state()["fault_remaining"] is None


def signed(target: str = TARGET) -> dict[str, str]:
    # Any Authorization value passes: the emulator checks presence, never the signature.
    return {"X-Amz-Target": target, "Content-Type": AMZ_JSON, "Authorization": "AWS4 test"}


@pytest.mark.parametrize(
    ("headers", "body", "code"),
    [
        ({"X-Amz-Target": TARGET, "Content-Type": AMZ_JSON}, "{}", "MissingAuthentication"),
        (signed("GameLift.DescribeFleetAttributes"), "{}", "UnknownOperationException"),
        (signed("Other.GetComputeAuthToken"), "{}", "UnknownOperationException"),
        (signed(), "{not json", "SerializationException"),
        (signed(), "", "SerializationException"),
        (signed(), '{"FleetId": "fleet-1"}', "ValidationException"),
        (signed(), "[]", "SerializationException"),
        (signed(), '{"FleetId": 7, "ComputeName": "c"}', "SerializationException"),
    ],
)
async def test_wire_errors(emulator: Emulator, http: httpx.AsyncClient, headers, body, code):
    response = await http.post("/", headers=headers, content=body)
    assert response.status_code == (403 if code == "MissingAuthentication" else 400)
    assert response.headers["content-type"] == AMZ_JSON
    assert response.headers["x-amzn-requestid"]
    assert response.json()["__type"].startswith(code)
    assert emulator.calls == 0


async def test_control_plane(emulator: Emulator, http: httpx.AsyncClient, gamelift):
    assert (await http.get("/_emulator/healthz")).status_code == 200
    state = (await http.get("/_emulator/state")).json()
    old_keys = {"calls", "fault", "fault_remaining", "latency", "token_lifetime"}
    assert {k: state[k] for k in old_keys} == {
        "calls": 0,
        "fault": None,
        "fault_remaining": None,
        "latency": 0.0,
        "token_lifetime": 3600.0,
    }
    change = {"fault": "throttle", "count": 1, "latency": 0.01, "token_lifetime": 30}
    response = await http.post("/_emulator/config", json=change)
    assert response.status_code == 200
    assert {k: response.json()[k] for k in old_keys} == {
        "calls": 0,
        "fault": "throttle",
        "fault_remaining": 1,
        "latency": 0.01,
        "token_lifetime": 30.0,
    }
    async with gamelift() as client:
        with pytest.raises(ClientError, match="ThrottlingException"):
            await client.get_compute_auth_token(FleetId=FLEET, ComputeName=COMPUTE)
        answer = await client.get_compute_auth_token(FleetId=FLEET, ComputeName=COMPUTE)
    assert answer["ExpirationTimestamp"].timestamp() == pytest.approx(NOW + 30)
    state = (await http.get("/_emulator/state")).json()
    assert (state["calls"], state["fault"]) == (2, None)
    state = (await http.post("/_emulator/config", json={"reset_calls": True})).json()
    assert state["calls"] == 0
    assert emulator.call_log == []
    assert (await http.get("/_emulator/nothing")).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"fault": "explode"},
        {"fault": ["hang"]},
        {"fault": "internal", "count": 0},
        {"fault": "internal", "count": "2"},
        {"latency": -1},
        {"fault": "internal", "latency": -1},
        {"latency": "slow"},
        {"token_lifetime": True},
        {"reset_calls": "yes"},
        {"colour": "blue"},
        ["not", "an", "object"],
    ],
)
async def test_control_plane_refuses_bad_values(
    emulator: Emulator, http: httpx.AsyncClient, body: Any
):
    response = await http.post("/_emulator/config", json=body)
    assert response.status_code == 400
    assert response.json()["error"]
    bad_json = await http.post("/_emulator/config", content="{oops")
    assert bad_json.status_code == 400
    # Nothing was half-applied.
    assert emulator.state()["fault"] is None
    assert emulator.latency == 0.0


async def test_command_line_serves_with_the_given_fault():
    process = subprocess.Popen(
        [sys.executable, "-m", "service.emulator", "--port", "0", "--fault", "throttle"],
        cwd=Path(__file__).resolve().parents[1],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    loop = asyncio.get_running_loop()
    listening = loop.create_future()

    def announce(address: str) -> None:
        if not listening.done():
            listening.set_result(address)

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            if match := re.search(r"running on (http://127\.0\.0\.1:\d+)", line):
                loop.call_soon_threadsafe(announce, match.group(1))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        address = await asyncio.wait_for(listening, timeout=20)
        async with httpx.AsyncClient(base_url=address) as http:
            state = (await http.get("/_emulator/state")).json()
        assert state["fault"] == "throttle"
    finally:
        process.terminate()
        process.wait(timeout=10)
        reader.join(timeout=10)
        assert process.stderr is not None
        process.stderr.close()
