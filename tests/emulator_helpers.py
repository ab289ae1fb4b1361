"""Helpers for the emulator's tests: a real server per emulator, and a game server that speaks
the SDK's websocket frame by frame as ../shared/reference/SDK5.md describes it."""

from __future__ import annotations

import asyncio
import json
import ssl
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode, urlsplit

import uvicorn
from websockets.asyncio.client import ClientConnection, connect

from service.emulator import Emulator
from tests.conftest import run_server

FLEET = "fleet-1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d"
LOCATION = "custom-local"


@asynccontextmanager
async def serving(emulator: Emulator, **config: Any) -> AsyncIterator[str]:
    """The emulator under a real uvicorn on a free loopback port; yields its http(s) URL."""
    options = {"log_config": None, "access_log": False, "lifespan": "on", **config}
    server_config = uvicorn.Config(emulator.app, **options)
    server_config.timeout_graceful_shutdown = 1
    async with run_server(uvicorn.Server(server_config)) as url:
        if "ssl_certfile" in config:
            url = url.replace("http://", "https://")
        yield url


class GameServer:
    """One game server process: InitSDK's connect, its requests, and the pushes it receives.

    Connects like the Go SDK 5.6.0 (sorted, URL-encoded parameters) or like the C++ SDK
    (a trailing slash, nothing encoded). Never pings, never sends a close frame. Like the C++
    SDK 5.4.0 (`if (!m_processReady) return;`), the "cpp" style drops a RefreshConnection that
    comes before its ProcessReady succeeded (into `dropped`, for the tests to see).
    """

    def __init__(
        self,
        websocket_url: str,
        fleet_id: str,
        host_id: str,
        auth_token: str,
        process_id: str | None = None,
        style: str = "go",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.websocket_url = websocket_url
        self.fleet_id = fleet_id
        self.host_id = host_id
        self.auth_token = auth_token
        self.process_id = process_id or str(uuid.uuid4())
        self.idempotency_token = str(uuid.uuid4())
        self.style = style
        self.ssl_context = ssl_context
        self.socket: ClientConnection | None = None
        self.pushes: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._readers: list[asyncio.Task[None]] = []
        self.ready = False  # its ProcessReady succeeded
        self.dropped: list[dict[str, Any]] = []

    def connect_url(self, url: str | None = None) -> str:
        parts = urlsplit(url or self.websocket_url)  # any query on the URL is dropped
        params = {
            "Authorization": self.auth_token,
            "ComputeId": self.host_id,
            "FleetId": self.fleet_id,
            "IdempotencyToken": self.idempotency_token,
            "pID": self.process_id,
            "sdkLanguage": "Go" if self.style == "go" else "Cpp",
            "sdkVersion": "5.6.0" if self.style == "go" else "5.4.0",
        }
        if self.style == "go":
            return (
                f"{parts.scheme}://{parts.netloc}{parts.path}?{urlencode(sorted(params.items()))}"
            )
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/?{query}"

    async def connect(self, url: str | None = None) -> ClientConnection:
        """Open a socket (raises websockets' InvalidStatus on a refused upgrade)."""
        socket = await connect(
            self.connect_url(url),
            user_agent_header="gamelift-go-sdk/1.0",
            compression=None,
            ping_interval=None,
            open_timeout=10,
            ssl=self.ssl_context,
        )
        self.socket = socket
        self._readers.append(asyncio.create_task(self._read(socket)))
        return socket

    async def _read(self, socket: ClientConnection) -> None:
        async for text in socket:
            frame = json.loads(text)
            waiter = self._waiting.pop(frame.get("RequestId") or "", None)
            if waiter is not None and not waiter.done():
                # Here, not in process_ready: a push right behind the reply must see it.
                if frame.get("Action") == "ActivateServerProcess":
                    self.ready = self.ready or frame.get("StatusCode") == 200
                waiter.set_result(frame)
            elif frame.get("StatusCode") != 200:
                continue  # the SDK drops a push with no StatusCode
            elif self.style == "cpp" and not self.ready and frame["Action"] == "RefreshConnection":
                self.dropped.append(frame)
            else:
                self.pushes.put_nowait(frame)

    async def request(self, action: str, timeout: float = 20.0, **fields: Any) -> dict[str, Any]:
        """Send a request and wait for its reply, as the SDK does (6 s for ProcessReady)."""
        assert self.socket is not None
        request_id = str(uuid.uuid4())
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = waiter
        await self.socket.send(json.dumps({"Action": action, "RequestId": request_id, **fields}))
        return await asyncio.wait_for(waiter, timeout)

    async def send_raw(self, text: str, request_id: str, timeout: float = 20.0) -> dict[str, Any]:
        """Send any text as a frame and wait for the reply that carries `request_id`."""
        assert self.socket is not None
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = waiter
        await self.socket.send(text)
        return await asyncio.wait_for(waiter, timeout)

    async def process_ready(self, port: int = 7777, log_paths: list[str] | None = None) -> Any:
        reply = await self.request(
            "ActivateServerProcess",
            timeout=6.0,
            SdkVersion="5.6.0",
            SdkLanguage="Go",
            SdkToolName="",
            SdkToolVersion="",
            Port=port,
            LogPaths=log_paths or ["/local/game/logs"],
        )
        await self.request("HeartbeatServerProcess", HealthStatus=True)  # the first, at once
        return reply

    async def push(self, action: str, timeout: float = 20.0) -> dict[str, Any]:
        """The next push of that action (other pushes before it are dropped)."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.pushes.get()
                if frame.get("Action") == action:
                    return frame

    async def close(self) -> None:
        for task in self._readers:
            task.cancel()
        if self.socket is not None:
            await self.socket.close()
