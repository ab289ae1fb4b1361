"""Running the app under uvicorn: the broker's uvicorn settings, the ops listener, draining."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from service.config import Settings
from service.ops.readiness import Readiness
from service.web.connections import Connections, default_max_connections
from service.web.front import Front
from service.web.protocol import protocol_for

# What the ops listener serves; it never answers a token request.
OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class BrokerServer(uvicorn.Server):
    """uvicorn.Server that turns unready the moment a stop signal arrives, keeps listening for
    TOKEN_BROKER_DRAIN_SECONDS, and runs the ops listener beside the token listeners."""

    def __init__(
        self,
        config: uvicorn.Config,
        readiness: Readiness,
        *,
        drain_seconds: float = 0.0,
        ops: tuple[uvicorn.Config, list[socket.socket]] | None = None,
    ) -> None:
        super().__init__(config)
        self._readiness = readiness
        self._drain_seconds = drain_seconds
        self._drain_until: float | None = None
        self._stop_signal: tuple[int, FrameType | None] | None = None
        self._ops = None if ops is None else (OpsServer(ops[0]), ops[1])
        self._ops_task: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit:
            return
        if self._ops is not None:
            server, ops_sockets = self._ops
            self._ops_task = asyncio.create_task(server.serve(ops_sockets), name="ops listener")
            # uvicorn.Server has a flag for this, not an event.
            while not server.started and not self._ops_task.done():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        self._readiness.serving = True

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn runs the lifespan shutdown only after connections drain; readiness must turn
        # before that, so load balancers stop sending while in-flight requests finish.
        self._readiness.drain()
        if self._drain_seconds > 0 and self._stop_signal is None:
            # Keep listening a while: endpoints are removed from Services and load balancers
            # only after the probe sees 503, and callers still sent here must find the port.
            # on_tick ends the drain; a second signal ends it at once.
            self._stop_signal = (sig, frame)
            self._drain_until = time.monotonic() + self._drain_seconds
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._drain_until is not None and time.monotonic() >= self._drain_until:
            self._drain_until = None
            assert self._stop_signal is not None
            super().handle_exit(*self._stop_signal)
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._ops is not None:
            self._ops[0].should_exit = True  # closes with the token listeners, not before
        await super().shutdown(sockets)
        if self._ops_task is not None:
            await self._ops_task


class OpsServer(uvicorn.Server):
    """The ops listener: a second uvicorn server in the same loop, whose stop signal is the
    broker's (uvicorn's handlers restore each other's, so only one server may install them)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def ops_only(app: ASGIApp) -> ASGIApp:
    """The app with only /healthz, /readyz and /metrics; anything else is 404."""

    async def ops(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in OPS_PATHS:
            await app(scope, receive, send)
            return
        if scope["type"] == "http":
            body = b'{"error":{"code":"NotFound","message":"the ops listener serves only '
            body += b'/healthz, /readyz and /metrics"}}'
            headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": 404, "headers": headers})
            await send({"type": "http.response.body", "body": body})

    return ops


def uvicorn_config(
    app: Any, settings: Settings, *, serve_tokens: bool = True, **overrides: Any
) -> uvicorn.Config:
    """uvicorn's settings for the broker, with the hit path in front of the FastAPI app."""
    front = Front(
        app,
        serve_tokens=serve_tokens,
        max_paths=settings.cache_max_entries,
        max_bytes=settings.cache_max_bytes // 4,
    )
    return uvicorn.Config(front, **_options(settings, overrides))


def ops_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The ops listener's settings: the same app (its lifespan runs once, in the broker's
    server), reached only for its probes and metrics, with no access log."""
    overrides = {"lifespan": "off", "access_log": False, **overrides}
    return uvicorn.Config(ops_only(Front(app, serve_tokens=False)), **_options(settings, overrides))


def _options(settings: Settings, overrides: dict[str, Any]) -> dict[str, Any]:
    # Each listener keeps its own registry of connections: its own cap and head timeouts.
    connections = Connections(
        max_connections=settings.max_connections or default_max_connections(),
        head_timeout=settings.head_timeout_seconds,
    )
    options: dict[str, Any] = {
        "lifespan": "on",
        "loop": "uvloop",
        "http": protocol_for(connections),
        # The broker serves no websocket; an Upgrade request is answered as plain HTTP.
        "ws": "none",
        # Our logs.configure() owns the handlers; uvicorn's dictConfig would replace them.
        "log_config": None,
        "access_log": settings.access_log,
        "timeout_graceful_shutdown": settings.shutdown_grace_seconds,
        # We refuse proxied token requests; uvicorn must not rewrite the client from them.
        "proxy_headers": False,
        "server_header": False,
    }
    options.update(overrides)
    return options
