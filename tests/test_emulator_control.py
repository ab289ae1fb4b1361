"""The emulator's control plane, every action through real botocore under a real uvicorn:
strict and lenient modes, token reuse, pagination, validation, rate limits and bounds."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import aioboto3
import botocore.config
import httpx
import pytest
from botocore.exceptions import ClientError

from service.emulator import Emulator
from service.emulator.app import AMZ_JSON
from tests.emulator_helpers import FLEET, LOCATION, serving
from tests.helpers import FakeClock

OTHER_FLEET = "fleet-99999999-0000-0000-0000-000000000000"
ARN = "arn:aws:gamelift:us-west-2:123456789012"
SESSION = aioboto3.Session(
    aws_access_key_id="test", aws_secret_access_key="test", region_name="us-west-2"
)


@asynccontextmanager
async def running(
    clock: FakeClock | None = None, **options: Any
) -> AsyncIterator[tuple[Emulator, Any, str]]:
    """(emulator, botocore GameLift client, URL): one attempt per call, so errors show."""
    if clock is not None:
        options.update(clock=clock, monotonic=clock.monotonic)
    emulator = Emulator(**options)
    config = botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 1})
    async with serving(emulator) as url:
        async with SESSION.client("gamelift", endpoint_url=url, config=config) as client:
            yield emulator, client, url


def strict(clock: FakeClock | None = None, **options: Any) -> AbstractAsyncContextManager[Any]:
    return running(clock, strict=True, fleets=[FLEET], **options)


async def register(client: Any, name: str = "compute-1", **extra: Any) -> dict[str, Any]:
    fields = {"IpAddress": "10.1.2.3", "Location": LOCATION, **extra}
    return (await client.register_compute(FleetId=FLEET, ComputeName=name, **fields))["Compute"]


def code(caught: pytest.ExceptionInfo[ClientError]) -> str:
    return str(caught.value.response["Error"]["Code"])


async def test_register_describe_list_deregister_in_strict_mode(clock: FakeClock):
    async with strict(clock) as (emulator, client, url):
        compute = await register(client, DnsName="host-1.example", CertificatePath="/c.pem")
        endpoint = url.replace("http://", "ws://") + "/sdk"
        assert compute["FleetId"] == FLEET
        assert compute["FleetArn"] == f"{ARN}:fleet/{FLEET}"
        assert compute["ComputeName"] == "compute-1"
        assert compute["ComputeArn"] == f"{ARN}:compute/compute-1"
        assert (compute["IpAddress"], compute["DnsName"]) == ("10.1.2.3", "host-1.example")
        assert (compute["Location"], compute["ComputeStatus"]) == (LOCATION, "ACTIVE")
        assert compute["CreationTime"].timestamp() == pytest.approx(clock.now)
        assert compute["GameLiftServiceSdkEndpoint"] == endpoint
        described = await client.describe_compute(FleetId=FLEET, ComputeName="compute-1")
        assert described["Compute"] == compute
        by_arn = await client.describe_compute(
            FleetId=f"{ARN}:fleet/{FLEET}", ComputeName=f"{ARN}:compute/compute-1"
        )
        assert by_arn["Compute"] == compute
        listed = await client.list_compute(FleetId=FLEET)
        assert listed["ComputeList"] == [compute]
        token = await client.get_compute_auth_token(FleetId=FLEET, ComputeName="compute-1")
        assert token["AuthToken"] == emulator.issued_tokens[-1]

        await client.deregister_compute(FleetId=FLEET, ComputeName="compute-1")
        for call in (client.describe_compute, client.get_compute_auth_token):
            with pytest.raises(client.exceptions.NotFoundException):
                await call(FleetId=FLEET, ComputeName="compute-1")
        with pytest.raises(client.exceptions.NotFoundException):
            await client.deregister_compute(FleetId=FLEET, ComputeName="compute-1")
        assert (await client.list_compute(FleetId=FLEET))["ComputeList"] == []
        assert emulator.action_calls["RegisterCompute"] == 1
        assert emulator.calls == 2  # GetComputeAuthToken only


@pytest.mark.parametrize(
    ("call", "code"),
    [
        ("get_compute_auth_token", "NotFoundException"),
        ("describe_compute", "NotFoundException"),
        ("deregister_compute", "NotFoundException"),
        # Neither models NotFoundException: an unknown fleet is an invalid request there.
        ("register_compute", "InvalidRequestException"),
        ("list_compute", "InvalidRequestException"),
    ],
)
async def test_strict_mode_knows_only_its_fleets(call: str, code: str):
    async with strict() as (_, client, _):
        fields: dict[str, str] = {"ComputeName": "c-1"} if call != "list_compute" else {}
        if call == "register_compute":
            fields |= {"IpAddress": "10.0.0.1", "Location": LOCATION}
        with pytest.raises(client.exceptions.ClientError) as caught:
            await getattr(client, call)(FleetId=OTHER_FLEET, **fields)
        error = caught.value.response["Error"]
        assert error["Code"] == code and OTHER_FLEET in error["Message"]
        operation = client.meta.service_model.operation_model(
            client.meta.method_to_api_mapping[call]
        )
        assert code in {shape.name for shape in operation.error_shapes}  # botocore knows it


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"Location": LOCATION}, "IpAddress"),
        ({"IpAddress": "10.0.0.1"}, "Location"),
        ({"IpAddress": "10.0.0.1", "Location": "custom-elsewhere"}, "custom-elsewhere"),
        ({"IpAddress": "not an ip", "Location": LOCATION}, "IpAddress"),
        ({"IpAddress": "10.0.0.1", "Location": LOCATION, "DnsName": "a b"}, "DnsName"),
        ({"IpAddress": "10.0.0.1", "Location": "has space"}, "Location"),
    ],
)
async def test_register_compute_refuses_what_an_anywhere_fleet_refuses(fields, named):
    async with strict() as (emulator, client, _):
        with pytest.raises(client.exceptions.InvalidRequestException) as caught:
            await client.register_compute(FleetId=FLEET, ComputeName="c-1", **fields)
        assert named in caught.value.response["Error"]["Message"]
        assert emulator.state()["computes"] == []


async def test_registering_again_is_idempotent_and_different_attributes_conflict(
    clock: FakeClock,
):
    async with strict(clock) as (_, client, _):
        first = await register(client)
        clock.advance(10)
        assert await register(client) == first  # the same compute, CreationTime and all
        with pytest.raises(client.exceptions.ConflictException):
            await register(client, IpAddress="10.9.9.9")
        with pytest.raises(client.exceptions.ConflictException):
            await register(client, DnsName="other.example")


async def test_lenient_mode_makes_fleets_and_computes_on_first_use():
    async with running() as (emulator, client, url):
        token = await client.get_compute_auth_token(FleetId=OTHER_FLEET, ComputeName="any-1")
        assert token["AuthToken"]
        compute = (await client.describe_compute(FleetId=OTHER_FLEET, ComputeName="any-1"))[
            "Compute"
        ]
        assert (compute["IpAddress"], compute["Location"]) == ("127.0.0.1", LOCATION)
        assert compute["GameLiftServiceSdkEndpoint"] == url.replace("http", "ws") + "/sdk"
        # RegisterCompute replaces a compute made on first use, and needs nothing but names.
        registered = await client.register_compute(
            FleetId=OTHER_FLEET, ComputeName="any-1", IpAddress="10.0.0.7", Location="custom-2"
        )
        assert registered["Compute"]["IpAddress"] == "10.0.0.7"
        bare = await client.register_compute(FleetId=OTHER_FLEET, ComputeName="bare-1")
        assert bare["Compute"]["Location"] == LOCATION
        assert await client.deregister_compute(FleetId=OTHER_FLEET, ComputeName="gone-1")
        state = emulator.state()
        assert {c["ComputeName"]: c["Registered"] for c in state["computes"]} == {
            "any-1": True,
            "bare-1": True,
        }
        assert state["fleets"] == [{"FleetId": OTHER_FLEET, "Locations": ["custom-2", LOCATION]}]


async def test_the_same_token_until_under_15_minutes_remain(clock: FakeClock):
    async with running(clock, token_lifetime=3600) as (emulator, client, _):

        async def token(compute: str = "c-1") -> dict[str, Any]:
            return await client.get_compute_auth_token(FleetId=FLEET, ComputeName=compute)

        first = await token()
        clock.advance(3600 - 901)
        again = await token()
        assert again["AuthToken"] == first["AuthToken"]
        assert again["ExpirationTimestamp"] == first["ExpirationTimestamp"]
        other = await token("c-2")
        assert other["AuthToken"] != first["AuthToken"]  # bound to its (fleet, compute)
        clock.advance(2)  # 899 s left: GameLift mints a new one
        second = await token()
        assert second["AuthToken"] != first["AuthToken"]
        assert second["ExpirationTimestamp"].timestamp() == pytest.approx(clock.now + 3600)
        assert emulator.issued_tokens == [
            first["AuthToken"],
            other["AuthToken"],
            second["AuthToken"],
        ]


async def test_token_reuse_can_be_turned_off_and_the_lifetime_set(clock: FakeClock):
    async with running(clock, token_reuse=False, token_lifetime=7200) as (_, client, url):
        tokens = [
            await client.get_compute_auth_token(FleetId=FLEET, ComputeName="c-1") for _ in range(3)
        ]
        assert len({t["AuthToken"] for t in tokens}) == 3
        assert tokens[0]["ExpirationTimestamp"].timestamp() == pytest.approx(clock.now + 7200)
        async with httpx.AsyncClient(base_url=url) as http:
            change = {"token_reuse": True, "token_lifetime": 1800}
            state = (await http.post("/_emulator/config", json=change)).json()
        assert (state["token_reuse"], state["token_lifetime"]) == (True, 1800)
        again = [
            (await client.get_compute_auth_token(FleetId=FLEET, ComputeName="c-9"))["AuthToken"]
            for _ in range(2)
        ]
        assert again[0] == again[1]


async def test_list_compute_pages_and_filters():
    async with running(fleets=[FLEET]) as (_, client, _):
        for n in range(5):
            location = LOCATION if n % 2 == 0 else "custom-other"
            await register(client, f"c-{n}", Location=location)
        page = await client.list_compute(FleetId=FLEET, Limit=2)
        names = [c["ComputeName"] for c in page["ComputeList"]]
        while "NextToken" in page:
            page = await client.list_compute(FleetId=FLEET, Limit=2, NextToken=page["NextToken"])
            names += [c["ComputeName"] for c in page["ComputeList"]]
        assert names == [f"c-{n}" for n in range(5)]
        only = await client.list_compute(FleetId=FLEET, Location="custom-other")
        assert [c["ComputeName"] for c in only["ComputeList"]] == ["c-1", "c-3"]
        listing = client.meta.service_model.operation_model("ListCompute")
        if "ComputeStatus" in listing.input_shape.members:  # the floor's botocore 1.34 lacks it
            active = await client.list_compute(FleetId=FLEET, ComputeStatus="IMPAIRED")
            assert active["ComputeList"] == []
        with pytest.raises(client.exceptions.InvalidRequestException):
            await client.list_compute(FleetId=FLEET, NextToken="garbage")


async def test_create_game_session_with_no_process_is_capacity_exceeded():
    async with strict() as (_, client, _):
        await register(client)
        with pytest.raises(client.exceptions.FleetCapacityExceededException):
            await client.create_game_session(FleetId=FLEET, MaximumPlayerSessionCount=4)
        with pytest.raises(client.exceptions.NotFoundException):
            await client.create_game_session(FleetId=OTHER_FLEET, MaximumPlayerSessionCount=4)
        with pytest.raises(client.exceptions.InvalidRequestException):
            await client.create_game_session(
                FleetId=FLEET, MaximumPlayerSessionCount=4, Location="custom-nowhere"
            )
        with pytest.raises(client.exceptions.InvalidRequestException):
            await client.create_game_session(AliasId="alias-1", MaximumPlayerSessionCount=4)


async def test_describe_game_sessions_with_none_yet():
    async with strict() as (_, client, _):
        assert (await client.describe_game_sessions(FleetId=FLEET))["GameSessions"] == []
        arn = f"arn:aws:gamelift:us-west-2::gamesession/{FLEET}/{LOCATION}/gsess-1"
        with pytest.raises(client.exceptions.NotFoundException):
            await client.describe_game_sessions(GameSessionId=arn)
        with pytest.raises(client.exceptions.InvalidRequestException):
            await client.describe_game_sessions()
        with pytest.raises(client.exceptions.InvalidRequestException):
            await client.describe_game_sessions(FleetId=FLEET, StatusFilter="SLEEPING")


def signed(action: str) -> dict[str, str]:
    return {
        "X-Amz-Target": f"GameLift.{action}",
        "Content-Type": AMZ_JSON,
        "Authorization": "AWS4-HMAC-SHA256 test",
    }


@pytest.mark.parametrize(
    ("action", "body", "error", "named"),
    [
        ("CreateGameSession", {"FleetId": FLEET}, "ValidationException", "maximumPlayer"),
        ("RegisterCompute", {"FleetId": FLEET}, "ValidationException", "computeName"),
        ("ListCompute", {}, "ValidationException", "fleetId"),
        ("ListCompute", {"FleetId": FLEET, "Limit": "2"}, "SerializationException", "Limit"),
        ("ListCompute", {"FleetId": FLEET, "Limit": 0}, "InvalidRequestException", "Limit"),
        ("RegisterCompute", {"FleetId": FLEET, "ComputeName": True}, "Serialization", "Compute"),
        (
            "CreateGameSession",
            {"FleetId": FLEET, "MaximumPlayerSessionCount": 2, "GameProperties": [{"K": 1}]},
            "InvalidRequestException",
            "GameProperties",
        ),
        ("DescribeCompute", {"FleetId": "fleet_1", "ComputeName": "c"}, "InvalidRequest", "Fleet"),
    ],
)
async def test_bad_input_is_a_4xx_naming_the_field(action, body, error, named):
    async with running() as (_, _, url):
        async with httpx.AsyncClient(base_url=url) as http:
            response = await http.post("/", headers=signed(action), content=json.dumps(body))
    assert response.status_code == 400
    assert response.json()["__type"].startswith(error)
    assert named in response.json()["message"]


async def test_a_huge_body_is_refused_with_413():
    async with running() as (_, _, url):
        async with httpx.AsyncClient(base_url=url) as http:
            response = await http.post("/", headers=signed("ListCompute"), content=b"x" * (2 << 20))
    assert response.status_code == 413


async def test_aws_rate_limits_throttle_past_the_burst(clock: FakeClock):
    async with running(clock, rate_limits="aws") as (emulator, client, _):
        for _ in range(10):  # GetComputeAuthToken: burst 10
            await client.get_compute_auth_token(FleetId=FLEET, ComputeName="c-1")
        with pytest.raises(ClientError) as caught:
            await client.get_compute_auth_token(FleetId=FLEET, ComputeName="c-1")
        assert code(caught) == "ThrottlingException"
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        # Another action has its own bucket: DescribeCompute's burst is 30.
        for _ in range(30):
            await client.describe_compute(FleetId=FLEET, ComputeName="c-1")
        with pytest.raises(ClientError, match="ThrottlingException"):
            await client.describe_compute(FleetId=FLEET, ComputeName="c-1")
        clock.advance(0.25)  # 5 per second: one more GetComputeAuthToken
        await client.get_compute_auth_token(FleetId=FLEET, ComputeName="c-1")
        with pytest.raises(ClientError, match="ThrottlingException"):
            await client.get_compute_auth_token(FleetId=FLEET, ComputeName="c-1")
        assert emulator.calls == 13  # throttled calls arrived, so they count
        state = emulator.state()
        assert (state["throttled"], state["action_throttled"]) == (
            2,
            {"GetComputeAuthToken": 2, "DescribeCompute": 1},
        )
        assert state["calls_by_compute"] == {f"{FLEET}/c-1": 13}
        assert emulator.state()["rate_limits"]["RegisterCompute"] == {"burst": 20, "rate": 20}


async def test_rate_limits_set_one_by_one_through_config(clock: FakeClock):
    async with running(clock) as (_, client, url):
        async with httpx.AsyncClient(base_url=url) as http:
            change = {"rate_limits": {"RegisterCompute": {"burst": 2, "rate": 1}}}
            state = (await http.post("/_emulator/config", json=change)).json()
            assert state["rate_limits"] == {"RegisterCompute": {"burst": 2, "rate": 1}}
            for bad in (
                {"Nope": {"burst": 1, "rate": 1}},
                {"ListCompute": {"burst": 0, "rate": 1}},
            ):
                refused = await http.post("/_emulator/config", json={"rate_limits": bad})
                assert refused.status_code == 400 and refused.json()["error"]
            for _ in range(2):
                await register(client, "c-1")
            with pytest.raises(ClientError, match="ThrottlingException"):
                await register(client, "c-1")
            clock.advance(1)
            await register(client, "c-1")
            for _ in range(20):  # unlimited: only RegisterCompute has a bucket
                await client.describe_compute(FleetId=FLEET, ComputeName="c-1")
            state = (await http.post("/_emulator/config", json={"rate_limits": "off"})).json()
            assert state["rate_limits"] == {}
            for _ in range(3):
                await register(client, "c-1")


async def test_faults_apply_to_tokens_only_and_latency_to_every_action(clock: FakeClock):
    async with running(clock) as (emulator, client, url):
        async with httpx.AsyncClient(base_url=url) as http:
            await http.post("/_emulator/config", json={"fault": "not_found", "count": 1})
        await register(client)  # not faulted
        with pytest.raises(client.exceptions.NotFoundException):
            await client.get_compute_auth_token(FleetId=FLEET, ComputeName="compute-1")
        assert emulator.fault is None


async def test_everything_kept_is_bounded(monkeypatch: pytest.MonkeyPatch):
    from service.emulator import control, state

    monkeypatch.setattr(state, "MAX_TOKENS", 3)
    monkeypatch.setattr(state, "MAX_COMPUTES", 4)
    monkeypatch.setattr(control, "MAX_CALL_LOG", 5)
    async with running(token_reuse=False) as (emulator, client, _):
        for n in range(8):
            await client.get_compute_auth_token(FleetId=FLEET, ComputeName=f"c-{n}")
        assert len(emulator.registry.tokens) == 3
        assert len(emulator.issued_tokens) == 3
        assert len(emulator.call_log) == 5
        assert len(emulator.state()["computes"]) == 4
        assert emulator.calls == 8
