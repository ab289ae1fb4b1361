"""A local GameLift endpoint speaking AWS JSON 1.1, with tokens and injectable faults."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

AMZ_JSON = "application/x-amz-json-1.1"
TARGET = "GameLift.GetComputeAuthToken"
ACCOUNT = "123456789012"

_FLEET_RE = re.compile(
    r"^[a-z]*fleet-[a-zA-Z0-9\-]+$|^arn:.*:[a-z]*fleet\/[a-z]*fleet-[a-zA-Z0-9\-]+$"
)
_COMPUTE_RE = re.compile(r"^[a-zA-Z0-9\-]+(\/[a-zA-Z0-9\-]+)?$|^arn:.*:compute\/[a-zA-Z0-9\-]+$")

# fault kind -> (HTTP status, AWS error type); the body-level faults are handled apart.
_ERROR_FAULTS = {
    "internal": (500, "InternalServiceException"),
    "throttle": (400, "ThrottlingException"),
    "not_found": (400, "NotFoundException"),
    "unauthorized": (400, "UnauthorizedException"),
    "invalid_request": (400, "InvalidRequestException"),
    "unsupported_region": (400, "UnsupportedRegionException"),
}
FAULTS = frozenset(_ERROR_FAULTS) | {"hang", "garbage", "garbage_json", "expired"}

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
        self._released: asyncio.Event | None = None
        self._call_seen: asyncio.Event | None = None

    @property
    def fault(self) -> str | None:
        return self._fault

    def set_fault(self, kind: str | None, count: int | None = None) -> None:
        """Fault every call (count None) or the next `count` calls; None clears."""
        if kind is not None and kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; one of {sorted(FAULTS)}")
        if count is not None and count < 1:
            raise ValueError("count must be at least 1")
        self._fault, self._fault_remaining = kind, (count if kind else None)

    def release_hangs(self) -> None:
        if self._released is not None:
            self._released.set()
            self._released = None

    async def wait_for_calls(self, n: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while self.calls < n:  # noqa: ASYNC110 - woken by each call, not polling
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
        unknown = set(changes) - {"fault", "count", "latency", "token_lifetime", "reset_calls"}
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        for name in ("latency", "token_lifetime"):
            if name in changes:
                value = changes[name]
                if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                    raise ValueError(f"{name} must be a non-negative number")
        if "fault" in changes or "count" in changes:
            self.set_fault(changes.get("fault", self._fault), changes.get("count"))
        if "latency" in changes:
            self.latency = float(changes["latency"])
        if "token_lifetime" in changes:
            self.token_lifetime = float(changes["token_lifetime"])
        if changes.get("reset_calls"):
            self.calls = 0
            self.call_log.clear()

    @property
    def app(self) -> Emulator:
        return self

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        path, method = scope["path"], scope["method"]
        if path == "/_emulator/healthz":
            await _answer(send, 200, {"status": "ok"}, "application/json")
        elif path == "/_emulator/state" and method == "GET":
            await _answer(send, 200, self.state(), "application/json")
        elif path == "/_emulator/config" and method == "POST":
            try:
                changes = json.loads(body or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("expected a JSON object")
                self.configure(changes)
            except ValueError as exc:
                await _answer(send, 400, {"error": str(exc)}, "application/json")
                return
            await _answer(send, 200, self.state(), "application/json")
        elif path == "/" and method == "POST":
            await self._api(dict(scope["headers"]), body, send)
        else:
            await _answer(send, 404, {"error": "not found"}, "application/json")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.release_hangs()  # let hanging requests end so the server can stop
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _api(self, headers: dict[bytes, bytes], body: bytes, send: Send) -> None:
        if not headers.get(b"authorization"):
            await _error(
                send, 400, "MissingAuthenticationTokenException", "Missing Authentication Token"
            )
            return
        if headers.get(b"x-amz-target", b"").decode() != TARGET:
            await _error(send, 400, "UnknownOperationException", "Unknown operation")
            return
        try:
            request = json.loads(body)
            fleet, compute = request["FleetId"], request["ComputeName"]
            if not isinstance(fleet, str) or not isinstance(compute, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            await _error(send, 400, "SerializationException", "Expected FleetId and ComputeName")
            return
        self.calls += 1
        self.call_log.append((fleet, compute))
        if self._call_seen is not None:
            self._call_seen.set()
            self._call_seen = None
        if self.latency:
            await asyncio.sleep(self.latency)
        fault = self._take_fault()
        if fault == "hang":
            self._released = self._released or asyncio.Event()
            await self._released.wait()
            await _error(send, 500, "InternalServiceException", "Released from a hang")
        elif fault in _ERROR_FAULTS:
            status, kind = _ERROR_FAULTS[fault]
            message = "Rate exceeded" if fault == "throttle" else f"Injected fault: {fault}"
            await _error(send, status, kind, message)
        elif fault == "garbage":
            await _raw(send, 200, b"<html>oops</html>", "text/html")
        elif fault == "garbage_json":
            await _answer(send, 200, {"Unexpected": True}, AMZ_JSON)
        elif not (0 < len(fleet) <= 512 and _FLEET_RE.match(fleet)) or not (
            0 < len(compute) <= 1024 and _COMPUTE_RE.match(compute)
        ):
            await _error(send, 400, "InvalidRequestException", "Invalid FleetId or ComputeName")
        else:
            expires = (
                self.clock() - 60 if fault == "expired" else self.clock() + self.token_lifetime
            )
            await _answer(send, 200, self._token(fleet, compute, expires), AMZ_JSON)

    def _take_fault(self) -> str | None:
        fault = self._fault
        if fault is not None and self._fault_remaining is not None:
            self._fault_remaining -= 1
            if self._fault_remaining <= 0:
                self._fault = self._fault_remaining = None
        return fault

    def _token(self, fleet: str, compute: str, expires: float) -> dict[str, Any]:
        token = str(uuid.uuid4())
        self.issued_tokens.append(token)
        fleet_id = fleet.rsplit("/", 1)[-1]
        compute_name = compute.rsplit("/", 1)[-1] if compute.startswith("arn:") else compute
        arn = f"arn:aws:gamelift:{self.region}:{ACCOUNT}"
        return {
            "FleetId": fleet_id,
            "FleetArn": f"{arn}:fleet/{fleet_id}",
            "ComputeName": compute_name,
            "ComputeArn": f"{arn}:compute/{compute_name}",
            "AuthToken": token,
            "ExpirationTimestamp": expires,
        }


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


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


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(
        prog="python -m service.emulator", description="Run the local GameLift emulator."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--token-lifetime", type=float, default=3600.0, metavar="SECONDS")
    parser.add_argument("--latency", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--fault", choices=sorted(FAULTS))
    args = parser.parse_args(argv)
    emulator = Emulator(token_lifetime=args.token_lifetime, latency=args.latency)
    emulator.set_fault(args.fault)
    uvicorn.run(emulator.app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
