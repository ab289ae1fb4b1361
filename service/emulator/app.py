"""The emulator's ASGI app (control plane, SDK websocket, /_emulator/*) and its facade."""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from service.emulator import redact
from service.emulator.control import AMZ_JSON, ControlPlane
from service.emulator.faults import DEFAULT_ACTION, FAULTS, Faults
from service.emulator.ratelimit import RateLimits
from service.emulator.sdk import SdkSockets, endpoint_of
from service.emulator.sessions import Sessions
from service.emulator.shapes import ACTIONS
from service.emulator.state import Options, Registry

__all__ = ["AMZ_JSON", "FAULTS", "TARGET", "Emulator"]

TARGET = "GameLift.GetComputeAuthToken"
MAX_BODY = 1 << 20  # CreateGameSession's GameSessionData alone may be 256 KiB
_NUMBERS = ("latency", "token_lifetime", "refresh_lead", "refresh_repeat")
_SETTINGS = frozenset(
    {*_NUMBERS, "fault", "count", "action", "reset_calls", "token_reuse", "rate_limits"}
)

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


class Emulator:
    """A local GameLift Anywhere: one state model, the AWS JSON and SDK websocket adapters."""

    def __init__(
        self,
        *,
        token_lifetime: float = 3600.0,
        latency: float = 0.0,
        region: str = "us-west-2",
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        strict: bool = False,
        fleets: list[str] | None = None,
        location: str = "custom-local",
        token_reuse: bool = True,
        refresh_lead: float = 300.0,
        refresh_repeat: float = 60.0,
        rate_limits: Any = None,
    ) -> None:
        self.clock = clock
        self.options = Options(
            strict=strict,
            fleets=list(fleets or []),
            location=location,
            region=region,
            token_lifetime=token_lifetime,
            token_reuse=token_reuse,
            refresh_lead=refresh_lead,
            refresh_repeat=refresh_repeat,
        )
        self.registry = Registry(self.options, clock)
        self.sessions = Sessions(self.registry)
        self.faults = Faults()
        self.limits = RateLimits(monotonic)
        self.limits.apply(rate_limits, ACTIONS)
        self.control = ControlPlane(self.registry, self.sessions, self.faults, self.limits)
        self.control.latency = latency
        self.sockets = SdkSockets(self.sessions)

    # -- the surface the tests and bench/ use ---------------------------------------------------

    @property
    def app(self) -> Emulator:
        return self

    @property
    def calls(self) -> int:
        """GetComputeAuthToken calls (the broker's tests count these); see action_calls."""
        return self.control.calls

    @property
    def action_calls(self) -> dict[str, int]:
        return dict(self.control.action_calls)

    @property
    def throttled(self) -> int:
        """GetComputeAuthToken calls the rate limits refused (they count in `calls` too)."""
        return self.control.action_throttled["GetComputeAuthToken"]

    @property
    def call_log(self) -> list[tuple[str, str]]:
        """(fleet, compute) of each GetComputeAuthToken call, the last 10,000."""
        return list(self.control.call_log)

    @property
    def issued_tokens(self) -> list[str]:
        """Every token minted, oldest first, the last 10,000 (for tests: they are secrets)."""
        return list(self.registry.issued)

    @property
    def latency(self) -> float:
        return self.control.latency

    @latency.setter
    def latency(self, value: float) -> None:
        self.control.latency = value

    @property
    def token_lifetime(self) -> float:
        return self.options.token_lifetime

    @token_lifetime.setter
    def token_lifetime(self, value: float) -> None:
        self.options.token_lifetime = value

    @property
    def region(self) -> str:
        return self.options.region

    @region.setter
    def region(self, value: str) -> None:
        self.options.region = value

    @property
    def fault(self) -> str | None:
        return self.faults.kind

    def set_fault(
        self, kind: str | None, count: int | None = None, action: str = DEFAULT_ACTION
    ) -> None:
        """Fault every call of `action` (count None) or the next `count`; kind None clears."""
        self.faults.set(kind, count, action)

    def release_hangs(self) -> None:
        """Wake every hanging request; each then answers 500 InternalServiceException."""
        self.faults.release()

    async def wait_for_calls(self, n: int, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Return once `calls >= n`; raise TimeoutError after `timeout` seconds."""
        # The timeout argument is part of the API the tests share, hence the noqa.
        async with asyncio.timeout(timeout):
            await self.control.wait_for_calls(n)

    def configure(self, changes: dict[str, Any]) -> None:
        """Apply a /_emulator/config change; everything is checked before anything changes."""
        if unknown := set(changes) - _SETTINGS:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        for name in _NUMBERS:
            value = changes.get(name, 0.0)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite, non-negative number")
        for name in ("reset_calls", "token_reuse"):
            if not isinstance(changes.get(name, False), bool):
                raise ValueError(f"{name} must be a boolean")
        if "rate_limits" in changes:
            RateLimits(self.limits.monotonic).apply(changes["rate_limits"], ACTIONS)  # a dry run
        if {"fault", "count", "action"} & set(changes):
            kind = changes.get("fault", self.faults.kind)
            self.set_fault(kind, changes.get("count"), changes.get("action", DEFAULT_ACTION))
        if "latency" in changes:
            self.latency = float(changes["latency"])
        for name in ("token_lifetime", "refresh_lead", "refresh_repeat"):
            if name in changes:
                setattr(self.options, name, float(changes[name]))
        if "token_reuse" in changes:
            self.options.token_reuse = changes["token_reuse"]
        if "rate_limits" in changes:
            self.limits.apply(changes["rate_limits"], ACTIONS)
        if changes.get("reset_calls"):
            self.control.calls = 0
            self.control.call_log.clear()
            self.control.action_calls.clear()
            self.control.action_throttled.clear()

    def state(self) -> dict[str, Any]:
        """Settings, counters and the whole world, as JSON for tests and for a person."""
        registry, sessions = self.registry, self.sessions
        return {
            "calls": self.calls,
            "fault": self.faults.kind,
            "fault_remaining": self.faults.remaining,
            "fault_action": self.faults.action,
            "latency": self.latency,
            "token_lifetime": self.token_lifetime,
            "token_reuse": self.options.token_reuse,
            "refresh_lead": self.options.refresh_lead,
            "refresh_repeat": self.options.refresh_repeat,
            "strict": self.options.strict,
            "rate_limits": self.limits.describe(),
            "action_calls": self.action_calls,
            "throttled": self.throttled,
            "action_throttled": dict(self.control.action_throttled),
            # GetComputeAuthToken calls per "fleet/compute", over the call log (the last 10,000).
            "calls_by_compute": dict(Counter(f"{f}/{c}" for f, c in self.control.call_log)),
            "fleets": [
                {"FleetId": f.fleet_id, "Locations": sorted(f.locations)}
                for f in registry.fleets.values()
            ],
            "computes": [
                {
                    "FleetId": c.fleet_id,
                    "ComputeName": c.name,
                    "IpAddress": c.ip_address,
                    "DnsName": c.dns_name,
                    "Location": c.location,
                    "ComputeStatus": c.status,
                    "Registered": not c.implicit,
                }
                for c in registry.computes.values()
            ],
            "processes": [p.public() for p in sessions.processes.values()],
            "game_sessions": [
                {
                    "GameSessionId": s.arn,
                    "FleetId": s.fleet_id,
                    "Location": s.location,
                    "ProcessId": s.process_id,
                    "ComputeName": s.compute_name,
                    "Status": s.status,
                    "Port": s.port,
                    "PlayerSessions": list(s.player_sessions),
                    "PlayerSessionCreationPolicy": s.policy,
                }
                for s in sessions.game_sessions.values()
            ],
        }

    # -- ASGI -------------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "websocket":
            await self.sockets.serve(scope, receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _http(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        path, method = scope["path"], scope["method"]
        if body is None:
            await _answer(send, 413, {"error": f"request body over {MAX_BODY} bytes"})
        elif path == "/" and method == "POST":
            endpoint = endpoint_of(scope, scope["scheme"] == "https")
            status, payload, kind = await self.control.handle(
                dict(scope["headers"]), body, receive, endpoint
            )
            await _raw(send, status, payload, kind)
        elif path == "/_emulator/healthz":
            await _answer(send, 200, {"status": "ok"})
        elif path == "/_emulator/state" and method == "GET":
            await _answer(send, 200, self.state())
        elif path == "/_emulator/config" and method == "POST":
            try:
                changes = json.loads(body or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("expected a JSON object")
                self.configure(changes)
            except ValueError as exc:  # JSONDecodeError is a ValueError too
                await _answer(send, 400, {"error": str(exc)})
                return
            await _answer(send, 200, self.state())
        else:
            await _answer(send, 404, {"error": "not found"})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                redact.install()  # before the first socket: uvicorn logs its query string
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                # uvicorn sends this only after in-flight requests end (or its graceful timeout
                # cancels them), so hangs end by disconnect or release_hangs. Dropping the
                # loop-bound events lets the same emulator be served again on another loop.
                self.release_hangs()
                self.control.forget_loop()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _read_body(receive: Receive) -> bytes | None:
    """The request body, or None past MAX_BODY (the rest is read and dropped)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= MAX_BODY:
            chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks) if size <= MAX_BODY else None


async def _raw(send: Send, status: int, body: bytes, content_type: str) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"x-amzn-requestid", str(uuid.uuid4()).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _answer(send: Send, status: int, payload: dict[str, Any]) -> None:
    await _raw(send, status, json.dumps(payload).encode(), "application/json")
