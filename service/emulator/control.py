"""The control plane's AWS JSON 1.1 adapter: parse a call, ask the model, render the answer."""

from __future__ import annotations

import asyncio
import json
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Any

from service.emulator import shapes
from service.emulator.errors import ApiError, invalid
from service.emulator.faults import ERROR_FAULTS, SHAPING, Faults
from service.emulator.ratelimit import RateLimits
from service.emulator.records import MAX_CALL_LOG, Compute, GameSession
from service.emulator.sessions import Sessions
from service.emulator.state import Registry
from service.names import (
    COMPUTE_NAME_RE,
    DNS_NAME_RE,
    GAME_SESSION_ARN_RE,
    ID_STRING_RE,
    IP_ADDRESS_RE,
    LOCATION_RE,
    REGISTER_COMPUTE_NAME_MAX,
)

AMZ_JSON = "application/x-amz-json-1.1"
TARGET_PREFIX = "GameLift."
GAME_SESSION_STATUSES = frozenset({"ACTIVE", "ACTIVATING", "TERMINATED", "TERMINATING", "ERROR"})

Receive = Callable[[], Awaitable[dict[str, Any]]]
Answer = tuple[int, bytes, str]  # (HTTP status, body, content type)


class ControlPlane:
    """One AWS JSON call at a time: counted, rate-limited, faulted, delayed, then answered."""

    def __init__(
        self, registry: Registry, sessions: Sessions, faults: Faults, limits: RateLimits
    ) -> None:
        self.registry = registry
        self.sessions = sessions
        self.faults = faults
        self.limits = limits
        self.latency = 0.0
        self.calls = 0  # GetComputeAuthToken calls: what the broker's tests count
        self.call_log: deque[tuple[str, str]] = deque(maxlen=MAX_CALL_LOG)
        self.action_calls: Counter[str] = Counter()  # every action, GetComputeAuthToken too
        # Calls the rate limits answered ThrottlingException, by action (counted in calls too).
        self.action_throttled: Counter[str] = Counter()
        self._call_seen: asyncio.Event | None = None

    async def wait_for_calls(self, n: int) -> None:
        while self.calls < n:
            self._call_seen = self._call_seen or asyncio.Event()
            await self._call_seen.wait()

    def forget_loop(self) -> None:
        self._call_seen = None

    async def handle(
        self, headers: dict[bytes, bytes], body: bytes, receive: Receive, sdk_endpoint: str
    ) -> Answer:
        try:
            return await self._handle(headers, body, receive, sdk_endpoint)
        except ApiError as error:
            return error_answer(error)

    async def _handle(
        self, headers: dict[bytes, bytes], body: bytes, receive: Receive, sdk_endpoint: str
    ) -> Answer:
        # Every AWS client signs, so a missing header means a client that is not one.
        if not headers.get(b"authorization"):
            # AWS answers this one with a 403.
            raise ApiError(
                "MissingAuthenticationTokenException", "Missing Authentication Token", 403
            )
        target = headers.get(b"x-amz-target", b"").decode("latin-1")
        action = target.removeprefix(TARGET_PREFIX)
        if not target.startswith(TARGET_PREFIX) or action not in shapes.ACTIONS:
            raise ApiError("UnknownOperationException", "Unknown operation")
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        request = shapes.check_shape(action, parsed)
        self._count(action, request)
        try:
            self.limits.check(action)
        except ApiError:
            self.action_throttled[action] += 1
            raise
        fault = self.faults.take(action)
        if self.latency:
            await asyncio.sleep(self.latency)
        if fault is not None and fault not in SHAPING:
            return await self._faulted(fault, request, receive)
        if fault == "no_endpoint":
            sdk_endpoint = ""  # rendered without GameLiftServiceSdkEndpoint
        answer = getattr(self, f"_{action}")(request, sdk_endpoint, fault)
        return 200, json.dumps(answer).encode(), AMZ_JSON

    def _count(self, action: str, request: dict[str, Any]) -> None:
        self.action_calls[action] += 1
        if action == "GetComputeAuthToken":
            self.calls += 1
            self.call_log.append((request["FleetId"], request["ComputeName"]))
            if self._call_seen is not None:
                self._call_seen.set()
                self._call_seen = None

    async def _faulted(self, fault: str, request: dict[str, Any], receive: Receive) -> Answer:
        if fault == "hang":
            if not await self.faults.hang(receive):
                return 500, b"", AMZ_JSON  # the client is gone: nobody reads this
            raise ApiError("InternalServiceException", "Released from a hang", 500)
        if fault in ERROR_FAULTS:
            status, code = ERROR_FAULTS[fault]
            message = "Rate exceeded" if fault == "throttle" else f"Injected fault: {fault}"
            raise ApiError(code, message, status)
        if fault == "garbage":
            return 200, b"<html>oops</html>", "text/html"
        if fault == "garbage_json":
            return 200, b'{"Unexpected": true}', AMZ_JSON
        # bad_timestamp: well-formed JSON whose timestamp botocore's parser cannot take; it
        # raises a plain ValueError from deep inside, not a ResponseParserError.
        answer = self._GetComputeAuthToken(request, "", None)
        answer["ExpirationTimestamp"] = "not-a-time"
        return 200, json.dumps(answer).encode(), AMZ_JSON

    # -- the actions: each takes the checked request and returns the answer's JSON ---------

    def _GetComputeAuthToken(self, request: dict[str, Any], _: str, fault: str | None) -> Any:
        fleet, name = shapes.fleet_id(request), shapes.compute_name(request)
        issued = self.registry.token(fleet, name, expired=fault == "expired")
        return {
            "FleetId": fleet,
            "FleetArn": self.registry.arn("fleet", fleet),
            "ComputeName": name,
            "ComputeArn": self.registry.arn("compute", name),
            "AuthToken": issued.value,
            "ExpirationTimestamp": issued.expires,
        }

    def _RegisterCompute(self, request: dict[str, Any], endpoint: str, _: str | None) -> Any:
        fleet = shapes.fleet_id(request)
        name = shapes.pattern(request, "ComputeName", COMPUTE_NAME_RE, REGISTER_COMPUTE_NAME_MAX)
        certificate = request.get("CertificatePath")
        if certificate is not None and not 1 <= len(certificate) <= 1024:
            raise invalid("CertificatePath must be 1 to 1024 characters")
        compute = self.registry.register(
            fleet,
            name or "",
            shapes.pattern(request, "IpAddress", IP_ADDRESS_RE),
            shapes.pattern(request, "DnsName", DNS_NAME_RE),
            shapes.pattern(request, "Location", LOCATION_RE),
            certificate,
        )
        return {"Compute": self._compute(compute, endpoint)}

    def _DescribeCompute(self, request: dict[str, Any], endpoint: str, _: str | None) -> Any:
        compute = self.registry.compute(shapes.fleet_id(request), shapes.compute_name(request))
        return {"Compute": self._compute(compute, endpoint)}

    def _DeregisterCompute(self, request: dict[str, Any], _: str, __: str | None) -> Any:
        fleet, name = shapes.fleet_id(request), shapes.compute_name(request)
        self.registry.deregister(fleet, name)
        # The service gives processes on a deregistered compute a short notice to end.
        self.sessions.end_compute(fleet, name, int(self.registry.clock() * 1000) + 30_000)
        return {}

    def _ListCompute(self, request: dict[str, Any], endpoint: str, _: str | None) -> Any:
        status = request.get("ComputeStatus")
        if status is not None and status not in ("ACTIVE", "IMPAIRED"):
            raise invalid("ComputeStatus must be ACTIVE or IMPAIRED")
        if request.get("ContainerGroupDefinitionName") is not None:
            raise invalid("The emulator has no container fleets")
        location = shapes.pattern(request, "Location", LOCATION_RE)
        computes = self.registry.list(shapes.fleet_id(request), location, status)
        page, next_token = _page(computes, request)
        answer: dict[str, Any] = {"ComputeList": [self._compute(c, endpoint) for c in page]}
        if next_token:
            answer["NextToken"] = next_token
        return answer

    def _CreateGameSession(self, request: dict[str, Any], _: str, __: str | None) -> Any:
        if request.get("FleetId") is None:
            raise invalid("FleetId is required: the emulator has no aliases")
        if request["MaximumPlayerSessionCount"] < 0:
            raise invalid("MaximumPlayerSessionCount must be at least 0")
        properties = _game_properties(request.get("GameProperties") or [])
        for name, most in (("Name", 1024), ("CreatorId", 1024), ("GameSessionData", 262144)):
            value = request.get(name)
            if value is not None and not 1 <= len(value) <= most:
                raise invalid(f"{name} must be 1 to {most} characters")
        session = self.sessions.create_game_session(
            shapes.fleet_id(request),
            shapes.pattern(request, "Location", LOCATION_RE),
            request["MaximumPlayerSessionCount"],
            request.get("Name"),
            properties,
            request.get("CreatorId"),
            shapes.pattern(request, "GameSessionId", ID_STRING_RE),
            shapes.pattern(request, "IdempotencyToken", ID_STRING_RE),
            request.get("GameSessionData"),
        )
        return {"GameSession": self._game_session(session)}

    def _DescribeGameSessions(self, request: dict[str, Any], _: str, __: str | None) -> Any:
        arn = shapes.pattern(request, "GameSessionId", GAME_SESSION_ARN_RE)
        if arn is None and request.get("FleetId") is None:
            raise invalid("One of FleetId or GameSessionId is required")
        status = request.get("StatusFilter")
        if status is not None and status not in GAME_SESSION_STATUSES:
            raise invalid(f"StatusFilter must be one of {sorted(GAME_SESSION_STATUSES)}")
        fleet = shapes.fleet_id(request) if arn is None else None
        location = shapes.pattern(request, "Location", LOCATION_RE)
        found = self.sessions.describe_game_sessions(fleet, arn, location, status)
        page, next_token = _page(found, request)
        answer: dict[str, Any] = {"GameSessions": [self._game_session(s) for s in page]}
        if next_token:
            answer["NextToken"] = next_token
        return answer

    # -- rendering ------------------------------------------------------------------------------

    def _compute(self, compute: Compute, endpoint: str) -> dict[str, Any]:
        rendered: dict[str, Any] = {
            "FleetId": compute.fleet_id,
            "FleetArn": self.registry.arn("fleet", compute.fleet_id),
            "ComputeName": compute.name,
            "ComputeArn": self.registry.arn("compute", compute.name),
            "IpAddress": compute.ip_address,
            "ComputeStatus": compute.status,
            "Location": compute.location,
            "CreationTime": compute.created,
        }
        if endpoint:
            rendered["GameLiftServiceSdkEndpoint"] = endpoint
        if compute.dns_name is not None:
            rendered["DnsName"] = compute.dns_name
        return rendered

    def _game_session(self, session: GameSession) -> dict[str, Any]:
        rendered: dict[str, Any] = {
            "GameSessionId": session.arn,
            "FleetId": session.fleet_id,
            "FleetArn": self.registry.arn("fleet", session.fleet_id),
            "CreationTime": session.created,
            "CurrentPlayerSessionCount": len(session.player_sessions),
            "MaximumPlayerSessionCount": session.maximum_players,
            "Status": session.status,
            "GameProperties": session.game_properties,
            "IpAddress": session.ip_address,
            "Port": session.port,
            "PlayerSessionCreationPolicy": session.policy,
            "Location": session.location,
        }
        optional = {
            "Name": session.name,
            "DnsName": session.dns_name,
            "CreatorId": session.creator_id,
            "GameSessionData": session.data,
            "StatusReason": session.status_reason,
            "TerminationTime": session.terminated,
        }
        rendered.update({k: v for k, v in optional.items() if v is not None})
        return rendered


def _page(items: list[Any], request: dict[str, Any]) -> tuple[list[Any], str | None]:
    offset, count = shapes.limit(request)
    end = offset + count
    return items[offset:end], (str(end) if end < len(items) else None)


def _game_properties(raw: list[Any]) -> list[dict[str, str]]:
    if len(raw) > 16:
        raise invalid("GameProperties holds at most 16 properties")
    properties = []
    for item in raw:
        if not isinstance(item, dict) or not all(
            isinstance(item.get(k), str) for k in ("Key", "Value")
        ):
            raise invalid("Each of GameProperties needs a string Key and Value")
        if len(item["Key"]) > 32 or len(item["Value"]) > 96:
            raise invalid("A game property's Key is at most 32 characters, its Value 96")
        properties.append({"Key": item["Key"], "Value": item["Value"]})
    return properties


def error_answer(error: ApiError) -> Answer:
    body = json.dumps({"__type": error.code, "message": error.message}).encode()
    return error.status, body, AMZ_JSON
