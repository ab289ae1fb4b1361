"""The emulator's control plane: GameLift over AWS JSON 1.1, with tokens and injectable faults."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from service.names import (
    COMPUTE_NAME_MAX,
    COMPUTE_NAME_OR_ARN_RE,
    FLEET_ID_MAX,
    FLEET_ID_OR_ARN_RE,
)

AMZ_JSON = "application/x-amz-json-1.1"
TARGET = "GameLift.GetComputeAuthToken"
ACCOUNT = "123456789012"

# botocore checks only types and lengths client-side, so the service is what rejects a bad
# pattern: the model's patterns of FleetIdOrArn and ComputeNameOrArn.
_FLEET_RE = FLEET_ID_OR_ARN_RE
_COMPUTE_RE = COMPUTE_NAME_OR_ARN_RE

# fault kind -> (HTTP status, AWS error type); the faults that shape the body are handled apart.
_ERROR_FAULTS = {
    "internal": (500, "InternalServiceException"),
    "throttle": (400, "ThrottlingException"),
    "not_found": (400, "NotFoundException"),
    "unauthorized": (400, "UnauthorizedException"),
    "invalid_request": (400, "InvalidRequestException"),
    "unsupported_region": (400, "UnsupportedRegionException"),
}
FAULTS = frozenset(_ERROR_FAULTS) | {
    "hang",
    "garbage",
    "garbage_json",
    "bad_timestamp",
    "expired",
}
_SETTINGS = frozenset({"fault", "count", "latency", "token_lifetime", "reset_calls"})

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


class Emulator:
    """GetComputeAuthToken over the real wire protocol; every knob is a plain attribute."""

    def __init__(
        self,
        *,
        token_lifetime: float = 3600.0,
        latency: float = 0.0,
        region: str = "us-west-2",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.token_lifetime = token_lifetime
        self.latency = latency
        self.region = region
        self.clock = clock
        self.calls = 0
        self.call_log: list[tuple[str, str]] = []
        self.issued_tokens: list[str] = []
        self._fault: str | None = None
        self._fault_remaining: int | None = None
        # Created lazily: an asyncio.Event binds to the loop that first waits on it, and the
        # emulator is often built before the loop that serves it exists.
        self._released: asyncio.Event | None = None
        self._call_seen: asyncio.Event | None = None

    @property
    def fault(self) -> str | None:
        return self._fault

    @property
    def app(self) -> Emulator:
        return self

    def set_fault(self, kind: str | None, count: int | None = None) -> None:
        """Fault every call (count None) or only the next `count` calls; kind None clears."""
        if kind is not None and (not isinstance(kind, str) or kind not in FAULTS):
            raise ValueError(f"unknown fault {kind!r}; one of {sorted(FAULTS)}")
        if count is not None and (not isinstance(count, int) or isinstance(count, bool)):
            raise ValueError("count must be an integer or null")
        if count is not None and count < 1:
            raise ValueError("count must be at least 1")
        self._fault, self._fault_remaining = kind, (count if kind else None)

    def release_hangs(self) -> None:
        """Wake every hanging request; each then answers 500 InternalServiceException."""
        if self._released is not None:
            self._released.set()
            self._released = None  # requests that hang from now on wait on a fresh event

    async def wait_for_calls(self, n: int, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Return once `calls >= n`; raise TimeoutError after `timeout` seconds."""
        # The timeout argument is part of the API the tests share, hence the noqa.
        async with asyncio.timeout(timeout):
            while self.calls < n:
                self._call_seen = self._call_seen or asyncio.Event()
                await self._call_seen.wait()

    def state(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "fault": self._fault,
            "fault_remaining": self._fault_remaining,
            "latency": self.latency,
            "token_lifetime": self.token_lifetime,
        }

    def configure(self, changes: dict[str, Any]) -> None:
        """Apply a control-plane change; everything is checked before anything changes."""
        if unknown := set(changes) - _SETTINGS:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        for name in ("latency", "token_lifetime"):
            value = changes.get(name, 0.0)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite, non-negative number")
        if not isinstance(changes.get("reset_calls", False), bool):
            raise ValueError("reset_calls must be a boolean")
        if "fault" in changes or "count" in changes:
            self.set_fault(changes.get("fault", self._fault), changes.get("count"))
        if "latency" in changes:
            self.latency = float(changes["latency"])
        if "token_lifetime" in changes:
            self.token_lifetime = float(changes["token_lifetime"])
        if changes.get("reset_calls"):
            self.calls = 0
            self.call_log.clear()

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        path, method = scope["path"], scope["method"]
        if path == "/" and method == "POST":
            await self._api(dict(scope["headers"]), body, receive, send)
        elif path == "/_emulator/healthz":
            await _answer(send, 200, {"status": "ok"}, "application/json")
        elif path == "/_emulator/state" and method == "GET":
            await _answer(send, 200, self.state(), "application/json")
        elif path == "/_emulator/config" and method == "POST":
            try:
                changes = json.loads(body or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("expected a JSON object")
                self.configure(changes)
            except ValueError as exc:  # JSONDecodeError is a ValueError too
                await _answer(send, 400, {"error": str(exc)}, "application/json")
                return
            await _answer(send, 200, self.state(), "application/json")
        else:
            await _answer(send, 404, {"error": "not found"}, "application/json")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                # uvicorn sends this only after in-flight requests end (or its graceful timeout
                # cancels them), so hangs end by disconnect or release_hangs. Dropping the
                # loop-bound events lets the same emulator be served again on another loop.
                self.release_hangs()
                self._call_seen = None
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _api(
        self, headers: dict[bytes, bytes], body: bytes, receive: Receive, send: Send
    ) -> None:
        # botocore always signs, so a missing header means a client that is not botocore.
        if not headers.get(b"authorization"):
            message = "Missing Authentication Token"
            await _error(send, 400, "MissingAuthenticationTokenException", message)
            return
        if headers.get(b"x-amz-target", b"").decode("latin-1") != TARGET:
            await _error(send, 400, "UnknownOperationException", "Unknown operation")
            return
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        fleet, compute = _field(request, "FleetId"), _field(request, "ComputeName")
        if fleet is None or compute is None:
            message = "Expected a JSON object with string FleetId and ComputeName"
            await _error(send, 400, "SerializationException", message)
            return
        self.calls += 1
        self.call_log.append((fleet, compute))
        if self._call_seen is not None:
            self._call_seen.set()
            self._call_seen = None
        # Taken on arrival, so "the next N calls" means the next N to arrive, whatever latency.
        fault = self._take_fault()
        if self.latency:
            await asyncio.sleep(self.latency)
        fleet_match = _valid(_FLEET_RE, fleet, FLEET_ID_MAX)
        compute_match = _valid(_COMPUTE_RE, compute, COMPUTE_NAME_MAX)
        if fault == "hang":
            if await self._hang(receive):
                await _error(send, 500, "InternalServiceException", "Released from a hang")
        elif fault in _ERROR_FAULTS:
            status, kind = _ERROR_FAULTS[fault]
            message = "Rate exceeded" if fault == "throttle" else f"Injected fault: {fault}"
            await _error(send, status, kind, message)
        elif fault == "garbage":
            await _raw(send, 200, b"<html>oops</html>", "text/html")
        elif fault == "garbage_json":
            await _answer(send, 200, {"Unexpected": True}, AMZ_JSON)
        elif fault == "bad_timestamp":
            # Well-formed JSON whose timestamp botocore's parser cannot take: it raises a plain
            # ValueError from deep inside, not a ResponseParserError.
            answer = self._token(fleet, compute, 0.0)
            answer["ExpirationTimestamp"] = "not-a-time"
            await _answer(send, 200, answer, AMZ_JSON)
        elif fleet_match is None or compute_match is None:
            message = "FleetId or ComputeName does not match the expected pattern"
            await _error(send, 400, "InvalidRequestException", message)
        else:
            now = self.clock()
            expires = now - 60 if fault == "expired" else now + self.token_lifetime
            fleet_id = fleet_match.group("id") or fleet
            compute_name = compute_match.group("id") or compute
            await _answer(send, 200, self._token(fleet_id, compute_name, expires), AMZ_JSON)

    async def _hang(self, receive: Receive) -> bool:
        """Wait for release_hangs (True) or for the client to go away (False)."""
        self._released = self._released or asyncio.Event()
        released = asyncio.ensure_future(self._released.wait())
        # Without this, a client that gave up would leave the request to block server shutdown.
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            done, _ = await asyncio.wait({released, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            released.cancel()
            gone.cancel()
        return released in done

    def _take_fault(self) -> str | None:
        fault = self._fault
        if fault is not None and self._fault_remaining is not None:
            self._fault_remaining -= 1
            if self._fault_remaining <= 0:
                self._fault = self._fault_remaining = None
        return fault

    def _token(self, fleet_id: str, compute_name: str, expires: float) -> dict[str, Any]:
        token = str(uuid.uuid4())
        self.issued_tokens.append(token)
        arn = f"arn:aws:gamelift:{self.region}:{ACCOUNT}"
        return {
            "FleetId": fleet_id,
            "FleetArn": f"{arn}:fleet/{fleet_id}",
            "ComputeName": compute_name,
            "ComputeArn": f"{arn}:compute/{compute_name}",
            "AuthToken": token,
            "ExpirationTimestamp": expires,
        }


def _field(request: Any, name: str) -> str | None:
    value = request.get(name) if isinstance(request, dict) else None
    return value if isinstance(value, str) else None


def _valid(pattern: re.Pattern[str], value: str, max_length: int) -> re.Match[str] | None:
    return pattern.fullmatch(value) if 0 < len(value) <= max_length else None


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _raw(send: Send, status: int, body: bytes, content_type: str) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"x-amzn-requestid", str(uuid.uuid4()).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _answer(send: Send, status: int, payload: dict[str, Any], content_type: str) -> None:
    await _raw(send, status, json.dumps(payload).encode(), content_type)


async def _error(send: Send, status: int, kind: str, message: str) -> None:
    await _answer(send, status, {"__type": kind, "message": message}, AMZ_JSON)
