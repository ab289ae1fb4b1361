"""The emulator's SDK websocket, spoken to by a real websocket client that follows SDK5.md frame
by frame, with the control plane driven by real botocore, all under a real uvicorn."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aioboto3
import botocore.config
import httpx
import pytest
from websockets.exceptions import InvalidStatus

from service.emulator import Emulator
from tests.emulator_helpers import FLEET, LOCATION, GameServer, serving
from tests.helpers import FakeClock, eventually

SESSION = aioboto3.Session(
    aws_access_key_id="test", aws_secret_access_key="test", region_name="us-west-2"
)


class Host:
    """An emulator, a botocore client to it, and one registered compute."""

    def __init__(self, emulator: Emulator, client: Any, url: str, compute: dict[str, Any]):
        self.emulator, self.client, self.url, self.compute = emulator, client, url, compute
        self.endpoint = compute["GameLiftServiceSdkEndpoint"]

    async def token(self, name: str = "host-1") -> str:
        answer = await self.client.get_compute_auth_token(FleetId=FLEET, ComputeName=name)
        return str(answer["AuthToken"])

    async def game_server(self, **kw: Any) -> GameServer:
        return GameServer(self.endpoint, FLEET, "host-1", await self.token(), **kw)

    async def state(self) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.url) as http:
            return dict((await http.get("/_emulator/state")).json())

    def process(self, process_id: str) -> dict[str, Any]:
        return next(p for p in self.emulator.state()["processes"] if p["ProcessId"] == process_id)


@asynccontextmanager
async def host(**options: Any) -> AsyncIterator[Host]:
    options = {"strict": True, "fleets": [FLEET], **options}
    emulator = Emulator(**options)
    config = botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 1})
    async with serving(emulator) as url:
        async with SESSION.client("gamelift", endpoint_url=url, config=config) as client:
            compute = await client.register_compute(
                FleetId=FLEET,
                ComputeName="host-1",
                IpAddress="10.0.0.5",
                DnsName="host-1.example",
                Location=LOCATION,
            )
            yield Host(emulator, client, url, compute["Compute"])


def refused(caught: pytest.ExceptionInfo[InvalidStatus]) -> int:
    return int(caught.value.response.status_code)


async def test_a_game_server_session_from_connect_to_process_ending():
    # Token lifetime 6 s and lead 4 s: the RefreshConnection push comes after 3 s.
    async with host(token_lifetime=6.0, refresh_lead=4.0, token_reuse=False) as h:
        server = await h.game_server()
        await server.connect()
        assert h.process(server.process_id)["Status"] == "INITIALIZING"
        started = time.monotonic()
        ready = await server.process_ready(port=7777, log_paths=["/logs/a.log"])
        assert time.monotonic() - started < 6
        assert ready["StatusCode"] == 200 and ready["Action"] == "ActivateServerProcess"
        process = h.process(server.process_id)
        assert (process["Status"], process["Port"], process["LogPaths"]) == (
            "ACTIVE",
            7777,
            ["/logs/a.log"],
        )
        assert process["Healthy"] is True and process["LastHeartbeat"]

        created = await h.client.create_game_session(
            FleetId=FLEET,
            MaximumPlayerSessionCount=8,
            Name="match-1",
            GameProperties=[{"Key": "mode", "Value": "ctf"}],
            GameSessionData="seed=42",
        )
        session = created["GameSession"]
        push = await server.push("CreateGameSession")
        arn = session["GameSessionId"]
        assert arn.startswith(f"arn:aws:gamelift:us-west-2::gamesession/{FLEET}/{LOCATION}/")
        assert push["StatusCode"] == 200 and push["GameSessionId"] == arn
        assert (push["IpAddress"], push["DnsName"], push["Port"]) == (
            "10.0.0.5",
            "host-1.example",
            7777,
        )
        assert push["GameSessionName"] == "match-1" and push["GameSessionData"] == "seed=42"
        assert push["MaximumPlayerSessionCount"] == 8
        assert push["GameProperties"] == {"mode": "ctf"}
        assert (session["Status"], session["IpAddress"], session["Port"]) == (
            "ACTIVATING",
            "10.0.0.5",
            7777,
        )

        reply = await server.request("ActivateGameSession", GameSessionId=arn)
        assert reply["StatusCode"] == 200
        described = await h.client.describe_game_sessions(GameSessionId=arn)
        assert described["GameSessions"][0]["Status"] == "ACTIVE"
        for action, fields in (
            ("AcceptPlayerSession", {"PlayerSessionId": "psess-1"}),
            ("AcceptPlayerSession", {"PlayerSessionId": "psess-2"}),
            ("RemovePlayerSession", {"PlayerSessionId": "psess-1"}),
            ("UpdatePlayerSessionCreationPolicy", {"PlayerSessionPolicy": "DENY_ALL"}),
        ):
            reply = await server.request(action, GameSessionId=arn, **fields)
            assert (reply["Action"], reply["StatusCode"]) == (action, 200)
        recorded = next(s for s in (await h.state())["game_sessions"] if s["GameSessionId"] == arn)
        assert recorded["PlayerSessions"] == ["psess-2"]
        assert recorded["PlayerSessionCreationPolicy"] == "DENY_ALL"
        denied = await server.request(
            "AcceptPlayerSession", GameSessionId=arn, PlayerSessionId="psess-3"
        )
        assert denied["StatusCode"] == 400 and denied["ErrorMessage"]

        # RefreshConnection: a new token and our endpoint; the SDK opens a second socket with
        # a new IdempotencyToken while the first is still open.
        refresh = await server.push("RefreshConnection", timeout=15)
        assert refresh["StatusCode"] == 200
        assert refresh["RefreshConnectionEndpoint"] == h.endpoint
        assert refresh["AuthToken"] not in (server.auth_token, None)
        old_socket = server.socket
        server.auth_token = refresh["AuthToken"]
        server.idempotency_token = "new-" + server.idempotency_token[4:]
        await server.connect(refresh["RefreshConnectionEndpoint"])
        heartbeat = await server.request("HeartbeatServerProcess", HealthStatus=False)
        assert heartbeat["StatusCode"] == 200
        assert h.process(server.process_id)["Healthy"] is False
        assert old_socket is not None
        await old_socket.close()  # the SDK drops the old one later: nothing changes
        assert h.process(server.process_id)["Connected"] is True

        ending = await server.request("TerminateServerProcess")
        assert ending["StatusCode"] == 200
        assert h.process(server.process_id)["Status"] == "TERMINATED"
        described = await h.client.describe_game_sessions(FleetId=FLEET)
        assert [s["Status"] for s in described["GameSessions"]] == ["TERMINATED"]
        await server.close()
        await eventually(lambda: not h.process(server.process_id)["Connected"])


async def test_the_cpp_sdk_connect_with_a_trailing_slash_and_no_encoding():
    async with host() as h:
        server = await h.game_server(style="cpp")
        assert server.connect_url().split("?")[0].endswith("/sdk/")
        await server.connect()
        assert (await server.process_ready())["StatusCode"] == 200
        assert h.process(server.process_id)["SdkLanguage"] == "Cpp"
        await server.close()


async def test_a_game_session_goes_only_to_an_idle_active_process():
    async with host() as h:
        busy, waiting, idle = [await h.game_server() for _ in range(3)]
        for server in (busy, waiting, idle):
            await server.connect()
        await busy.process_ready(port=7001)
        await h.client.create_game_session(FleetId=FLEET, MaximumPlayerSessionCount=2)
        assert (await busy.push("CreateGameSession"))["Port"] == 7001
        # `waiting` never sent ProcessReady: it gets nothing, so there is no capacity.
        with pytest.raises(h.client.exceptions.FleetCapacityExceededException):
            await h.client.create_game_session(FleetId=FLEET, MaximumPlayerSessionCount=2)
        await idle.process_ready(port=7003)
        second = await h.client.create_game_session(
            FleetId=FLEET, MaximumPlayerSessionCount=2, Location=LOCATION, IdempotencyToken="t-1"
        )
        assert (await idle.push("CreateGameSession"))["Port"] == 7003
        again = await h.client.create_game_session(
            FleetId=FLEET, MaximumPlayerSessionCount=2, IdempotencyToken="t-1"
        )
        assert again["GameSession"]["GameSessionId"] == second["GameSession"]["GameSessionId"]
        assert waiting.pushes.empty()
        for server in (busy, waiting, idle):
            await server.close()


async def test_refused_upgrades_are_403():
    async with host() as h:
        good = await h.game_server()
        cases = {
            "a token never issued": {"auth_token": "not-a-token-we-issued"},
            "a token for another compute": {"host_id": "host-2"},
            "another fleet": {"fleet_id": "fleet-other"},
            "no process id": {"process_id": ""},
        }
        for what, change in cases.items():
            server = GameServer(h.endpoint, FLEET, "host-1", good.auth_token)
            for name, value in change.items():
                setattr(server, name, value)
            with pytest.raises(InvalidStatus) as caught:
                await server.connect()
            assert refused(caught) == 403, what
        assert h.emulator.state()["processes"] == []


async def test_the_sdk_path_or_the_bare_host_and_404_elsewhere():
    async with host() as h:
        bare = h.endpoint.removesuffix("/sdk")  # GAMELIFT_SDK_WEBSOCKET_URL=ws://host:port
        for style, url in (("go", bare), ("cpp", bare), ("go", bare + "/"), ("go", bare + "/sdk/")):
            server = await h.game_server(style=style)
            await server.connect(url)
            assert (await server.process_ready())["StatusCode"] == 200, (style, url)
            await server.close()
        for path in ("/elsewhere", "/sdk/more", "/sdkx"):
            server = await h.game_server()
            with pytest.raises(InvalidStatus) as caught:
                await server.connect(bare + path)
            assert refused(caught) == 404, path  # not 403: the SDKs report that as a bad token
        assert len(h.emulator.state()["processes"]) == 4


async def test_an_expired_token_is_refused():
    clock = FakeClock()
    async with host(clock=clock) as h:
        server = await h.game_server()
        clock.advance(3601)
        with pytest.raises(InvalidStatus) as caught:
            await server.connect()
        assert refused(caught) == 403


async def test_strict_mode_refuses_a_compute_that_is_no_longer_registered():
    async with host() as h:
        server = await h.game_server()
        await h.client.deregister_compute(FleetId=FLEET, ComputeName="host-1")
        with pytest.raises(InvalidStatus) as caught:
            await server.connect()
        assert refused(caught) == 403


async def test_one_live_socket_per_process_id_unless_reconnecting():
    async with host() as h:
        first = await h.game_server()
        await first.connect()
        await first.process_ready()
        impostor = GameServer(h.endpoint, FLEET, "host-1", await h.token(), first.process_id)
        with pytest.raises(InvalidStatus) as caught:
            await impostor.connect()
        assert refused(caught) == 403
        # A reconnect with the same IdempotencyToken is fine, even before the old one closed.
        await first.connect()
        assert (await first.request("HeartbeatServerProcess", HealthStatus=True))[
            "StatusCode"
        ] == 200
        assert h.process(first.process_id)["Status"] == "ACTIVE"
        await first.close()


async def test_deregistering_a_compute_pushes_terminate_process(clock: FakeClock):
    async with host(clock=clock) as h:
        server = await h.game_server()
        await server.connect()
        await server.process_ready()
        await h.client.deregister_compute(FleetId=FLEET, ComputeName="host-1")
        push = await server.push("TerminateProcess")
        assert push["StatusCode"] == 200
        assert isinstance(push["TerminationTime"], int)
        assert push["TerminationTime"] >= clock.now * 1000
        assert h.process(server.process_id)["Status"] == "TERMINATING"
        await server.close()


async def test_frames_unknown_fields_bad_values_and_unknown_actions():
    async with host() as h:
        server = await h.game_server()
        await server.connect()
        # Unknown fields are ignored; frames may come in any order the rules allow.
        beat = await server.request("HeartbeatServerProcess", HealthStatus=True, Extra={"x": 1})
        assert beat["StatusCode"] == 200
        ready = await server.request("ActivateServerProcess", Port=7777, Unknown=True)
        assert ready["StatusCode"] == 200
        for action, fields, status in (
            ("ActivateServerProcess", {"Port": "7777"}, 400),
            ("HeartbeatServerProcess", {"HealthStatus": "yes"}, 400),
            ("ActivateGameSession", {"GameSessionId": "arn:nothing"}, 404),
            ("GetFleetRoleCredentials", {"RoleArn": "arn:aws:iam::1:role/r"}, 400),
        ):
            reply = await server.request(action, **fields)
            assert (reply["Action"], reply["StatusCode"]) == (action, status)
            assert reply["ErrorMessage"]
        assert server.socket is not None
        await server.socket.send("not json")  # ignored, and the socket stays up
        # A broken or oversized frame whose RequestId can be read is answered, not left to
        # the SDK's 20 s timeout.
        broken = await server.send_raw(
            '{"Action":"HeartbeatServerProcess","RequestId":"r-1",', "r-1"
        )
        assert (broken["Action"], broken["StatusCode"]) == ("HeartbeatServerProcess", 400)
        assert broken["ErrorMessage"]
        big = json.dumps(
            {"RequestId": "r-2", "Action": "ActivateServerProcess", "x": "a" * (1 << 20)}
        )
        oversized = await server.send_raw(big, "r-2")
        assert (oversized["Action"], oversized["StatusCode"]) == ("ActivateServerProcess", 400)
        assert (await server.request("HeartbeatServerProcess", HealthStatus=True))[
            "StatusCode"
        ] == 200
        await server.close()


async def test_lenient_mode_accepts_any_issued_token():
    async with host(strict=False) as h:
        token = await h.token("elsewhere-1")
        server = GameServer(h.endpoint, FLEET, "elsewhere-1", token)
        await server.connect()
        assert (await server.process_ready())["StatusCode"] == 200
        assert h.process(server.process_id)["Location"] == LOCATION
        await server.close()


async def test_processes_and_game_sessions_are_bounded(monkeypatch: pytest.MonkeyPatch):
    from service.emulator import sessions

    monkeypatch.setattr(sessions, "MAX_PROCESSES", 3)
    monkeypatch.setattr(sessions, "MAX_GAME_SESSIONS", 2)
    async with host() as h:
        servers = []
        for port in range(7001, 7006):
            server = await h.game_server()
            await server.connect()
            await server.process_ready(port=port)
            await h.client.create_game_session(FleetId=FLEET, MaximumPlayerSessionCount=2)
            await server.push("CreateGameSession")
            await server.request("TerminateServerProcess")
            await server.close()
            servers.append(server)
            await eventually(lambda s=server: not h.process(s.process_id)["Connected"])
        state = await h.state()
        assert len(state["processes"]) == 3
        assert len(state["game_sessions"]) == 2
        # The newest are kept.
        assert state["processes"][-1]["ProcessId"] == servers[-1].process_id


async def test_tokens_never_reach_the_logs(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    # Another test's uvicorn may have set this process-wide logger to warning.
    caplog.set_level(logging.INFO, logger="uvicorn.error")
    async with host() as h:
        server = await h.game_server()
        await server.connect()
        await server.process_ready()
        bad = GameServer(h.endpoint, FLEET, "host-2", server.auth_token)
        with pytest.raises(InvalidStatus):
            await bad.connect()
        await server.close()
    # The server's side: the emulator's and uvicorn's loggers (botocore and the websockets client
    # log what they send at debug; they are the game server's, not ours).
    ours = [r for r in caplog.records if r.name.startswith(("uvicorn", "service"))]
    lines = [record.getMessage() for record in ours]
    assert any("Authorization=***" in line for line in lines)  # uvicorn's lines, redacted
    for token in h.emulator.issued_tokens:
        assert not [line for line in lines if token in line]


async def test_refresh_waits_for_process_ready_then_repeats_the_same_token(clock: FakeClock):
    # The C++ SDK drops a RefreshConnection before ProcessReady. The refresh is due while the
    # process is still starting up: it must go out at ProcessReady, and again each
    # refresh_repeat with the same token until a socket opens with it.
    async with host(clock=clock, token_lifetime=3600.0, refresh_lead=300.0) as h:
        server = await h.game_server(style="cpp")
        await server.connect()
        clock.advance(3400)  # the refresh is due; the process has not called ProcessReady
        socket = h.emulator.sockets.live[server.process_id]
        looked = socket.refresh_looks
        await eventually(lambda: socket.refresh_looks >= looked + 2, what="the timer looked")
        await server.process_ready()
        first = await server.push("RefreshConnection", timeout=5)
        assert server.dropped == []
        assert first["AuthToken"] != server.auth_token
        clock.advance(60)  # not acted on (a lost push): the same token again
        again = await server.push("RefreshConnection", timeout=5)
        assert again["AuthToken"] == first["AuthToken"]
        # Too close to its own refresh point to hand out again: a new one, and both work.
        clock.advance(3300)
        rotated = await server.push("RefreshConnection", timeout=5)
        assert rotated["AuthToken"] not in (first["AuthToken"], server.auth_token)
        server.auth_token, server.idempotency_token = first["AuthToken"], "refreshed-1"
        await server.connect(first["RefreshConnectionEndpoint"])
        beat = await server.request("HeartbeatServerProcess", HealthStatus=True)
        assert beat["StatusCode"] == 200
        # That old token is itself due for a refresh: the newer one, still outstanding, comes.
        assert (await server.push("RefreshConnection", timeout=5))["AuthToken"] == rotated[
            "AuthToken"
        ]
        server.auth_token, server.idempotency_token = rotated["AuthToken"], "refreshed-2"
        await server.connect(rotated["RefreshConnectionEndpoint"])
        # The new socket's token is fresh: its own refresh is not due for a long while.
        wait = h.emulator.sessions.refresh_wait(server.process_id)
        assert wait is not None and wait > 1000
        await server.close()


async def test_a_process_id_reused_after_a_crash_is_a_new_execution():
    async with host() as h:
        crashed = await h.game_server()
        await crashed.connect()
        await crashed.process_ready(port=7001)
        created = await h.client.create_game_session(FleetId=FLEET, MaximumPlayerSessionCount=2)
        arn = created["GameSession"]["GameSessionId"]
        await crashed.push("CreateGameSession")
        assert (await crashed.request("ActivateGameSession", GameSessionId=arn))[
            "StatusCode"
        ] == 200
        # A dropped socket and the SDK's reconnect (same IdempotencyToken): the same execution.
        await crashed.close()
        await eventually(lambda: not h.process(crashed.process_id)["Connected"])
        await crashed.connect()
        assert h.process(crashed.process_id)["Status"] == "ACTIVE"
        await crashed.close()
        await eventually(lambda: not h.process(crashed.process_id)["Connected"])

        # It crashed; a new execution comes up under the same process id (another SDK, too).
        again = await h.game_server(process_id=crashed.process_id, style="cpp")
        await again.connect()
        process = h.process(again.process_id)
        assert (process["Status"], process["Port"], process["GameSessionId"]) == (
            "INITIALIZING",
            None,
            None,
        )
        assert (process["SdkLanguage"], process["SdkVersion"], process["Connected"]) == (
            "Cpp",
            "5.4.0",
            True,
        )
        described = await h.client.describe_game_sessions(GameSessionId=arn)
        assert described["GameSessions"][0]["Status"] == "TERMINATED"
        # It hosts nothing until its own ProcessReady; then it gets a game session of its own.
        with pytest.raises(h.client.exceptions.FleetCapacityExceededException):
            await h.client.create_game_session(FleetId=FLEET, MaximumPlayerSessionCount=2)
        await again.process_ready(port=7002)
        await h.client.create_game_session(FleetId=FLEET, MaximumPlayerSessionCount=2)
        assert (await again.push("CreateGameSession"))["Port"] == 7002
        await again.close()


async def test_go_5_0_frames_with_their_optional_fields_left_out():
    # Go's encoding/json drops omitempty fields that hold their zero value: an unhealthy
    # heartbeat has no HealthStatus, ProcessReady without tool or log paths has no SdkToolName
    # or SdkToolVersion, and LogPaths (no omitempty) is null.
    async with host() as h:
        server = await h.game_server()
        await server.connect()
        ready = await server.request(
            "ActivateServerProcess", SdkVersion="5.0.0", SdkLanguage="Go", Port=7777, LogPaths=None
        )
        assert ready["StatusCode"] == 200
        assert (
            h.process(server.process_id)["Status"],
            h.process(server.process_id)["LogPaths"],
        ) == (
            "ACTIVE",
            [],
        )
        assert (await server.request("HeartbeatServerProcess", HealthStatus=True))[
            "StatusCode"
        ] == 200
        assert h.process(server.process_id)["Healthy"] is True
        unhealthy = await server.request("HeartbeatServerProcess")
        assert unhealthy["StatusCode"] == 200
        assert h.process(server.process_id)["Healthy"] is False
        await server.close()


async def test_describe_player_sessions_over_the_recorded_ones_with_paging():
    async with host() as h:
        server = await h.game_server()
        await server.connect()
        await server.process_ready(port=7777)
        created = await h.client.create_game_session(FleetId=FLEET, MaximumPlayerSessionCount=8)
        arn = created["GameSession"]["GameSessionId"]
        await server.push("CreateGameSession")
        await server.request("ActivateGameSession", GameSessionId=arn)
        for player in ("psess-1", "psess-2", "psess-3"):
            await server.request("AcceptPlayerSession", GameSessionId=arn, PlayerSessionId=player)

        async def describe(**filters: Any) -> dict[str, Any]:
            reply = await server.request("DescribePlayerSessions", **filters)
            assert reply["Action"] == "DescribePlayerSessions"
            return reply

        first = await describe(GameSessionId=arn, Limit=2)
        assert first["StatusCode"] == 200
        assert [p["PlayerSessionId"] for p in first["PlayerSessions"]] == ["psess-1", "psess-2"]
        one = first["PlayerSessions"][0]
        assert (one["GameSessionId"], one["FleetId"], one["Status"]) == (arn, FLEET, "ACTIVE")
        assert (one["IpAddress"], one["Port"], one["DnsName"]) == (
            "10.0.0.5",
            7777,
            "host-1.example",
        )
        assert isinstance(one["CreationTime"], int)  # epoch milliseconds, Go's int64
        rest = await describe(GameSessionId=arn, Limit=2, NextToken=first["NextToken"])
        assert [p["PlayerSessionId"] for p in rest["PlayerSessions"]] == ["psess-3"]
        assert "NextToken" not in rest
        single = await describe(PlayerSessionId="psess-2", Limit=1, NextToken="7")
        assert [p["PlayerSessionId"] for p in single["PlayerSessions"]] == ["psess-2"]
        active = await describe(GameSessionId=arn, PlayerSessionStatusFilter="ACTIVE")
        assert len(active["PlayerSessions"]) == 3
        for filters in (
            {"GameSessionId": arn, "PlayerSessionStatusFilter": "COMPLETED"},
            {"PlayerId": "player-1"},  # never learnt: no CreatePlayerSession here
            {"GameSessionId": "arn:aws:gamelift:us-west-2::gamesession/other"},
        ):
            found = await describe(**filters)
            assert (found["StatusCode"], found["PlayerSessions"]) == (200, []), filters
        for filters in (
            {},
            {"GameSessionId": "", "PlayerId": ""},  # C++ may send empty strings: none
            {"GameSessionId": arn, "PlayerSessionStatusFilter": "GONE"},
            {"GameSessionId": arn, "NextToken": "x"},
            {"GameSessionId": arn, "Limit": "2"},
        ):
            bad = await describe(**filters)
            assert bad["StatusCode"] == 400 and bad["ErrorMessage"], filters
        await server.request("RemovePlayerSession", GameSessionId=arn, PlayerSessionId="psess-1")
        left = await describe(GameSessionId=arn)
        assert [p["PlayerSessionId"] for p in left["PlayerSessions"]] == ["psess-2", "psess-3"]
        await server.close()


async def test_the_process_bound_never_drops_a_connected_process(monkeypatch: pytest.MonkeyPatch):
    from service.emulator import sessions

    monkeypatch.setattr(sessions, "MAX_PROCESSES", 2)
    async with host() as h:
        first, second, third = [await h.game_server() for _ in range(3)]
        for server in (first, second):
            await server.connect()
        with pytest.raises(InvalidStatus) as caught:
            await third.connect()
        assert refused(caught) == 503  # full of live processes: refuse the new one
        assert [p["Connected"] for p in h.emulator.state()["processes"]] == [True, True]
        await first.close()
        await eventually(lambda: not h.process(first.process_id)["Connected"])
        await third.connect()  # a closed one makes room
        assert [p["ProcessId"] for p in h.emulator.state()["processes"]] == [
            second.process_id,
            third.process_id,
        ]
        assert (await second.request("HeartbeatServerProcess", HealthStatus=True))[
            "StatusCode"
        ] == 200
        for server in (second, third):
            await server.close()
