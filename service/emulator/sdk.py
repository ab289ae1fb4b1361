"""The server SDK's websocket adapter: connect checks, request frames, replies and pushes.

Follows ../shared/reference/SDK5.md: the token is the `Authorization` query parameter, a refused
upgrade is an HTTP 403, frames are compact JSON text, replies echo Action and RequestId, and
every push carries `StatusCode: 200`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from service.emulator.errors import ApiError, invalid
from service.emulator.records import GameSession
from service.emulator.sessions import Sessions

SDK_PATH = "/sdk"
# The endpoint we hand out, and the bare host (GAMELIFT_SDK_WEBSOCKET_URL=ws://host:port, to
# which C++ adds a "/"); other paths are a 404, never a 403 the SDKs report as a bad token.
SDK_PATHS = frozenset({"", "/", SDK_PATH, SDK_PATH + "/"})
CONNECT_PARAMETERS = ("pID", "ComputeId", "FleetId", "IdempotencyToken", "Authorization")
MAX_QUEUED_FRAMES = 256  # a client that stops reading loses its socket, not our memory
MAX_FRAME = 1 << 20
REFRESH_POLL = 1.0  # the refresh timer looks again this often: the clock may be stepped
# ApiError codes as the SDKs' status codes (they map 400, 401, 403, 404, 409, 429 and 5xx).
_STATUS = {"NotFoundException": 404, "ConflictException": 409, "Forbidden": 403}

log = logging.getLogger("service.emulator.sdk")

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


@dataclass
class Connection:
    process_id: str
    generation: int
    endpoint: str  # the URL this socket came in on: RefreshConnection sends the process back
    queue: asyncio.Queue[dict[str, Any] | None] = field(
        default_factory=lambda: asyncio.Queue(MAX_QUEUED_FRAMES)
    )
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # ProcessReady: look again now
    refresh_looks: int = 0  # how often the refresh timer has looked (tests wait on it)


def parse_query(raw: bytes) -> dict[str, str]:
    """The connect parameters. The C++ SDK does not URL-encode, so split by hand and unquote
    (never unquote_plus: a raw '+' is a '+')."""
    params: dict[str, str] = {}
    for part in raw.decode("latin-1").split("&"):
        name, _, value = part.partition("=")
        if name:
            params.setdefault(unquote(name), unquote(value))
    return params


def endpoint_of(scope: dict[str, Any], secure: bool) -> str:
    """Our own websocket URL as the caller reached us (its Host header), for answers and pushes."""
    host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
    if not host:
        server = scope.get("server") or ("127.0.0.1", 0)
        host = f"[{server[0]}]:{server[1]}" if ":" in str(server[0]) else f"{server[0]}:{server[1]}"
    return f"{'wss' if secure else 'ws'}://{host}{SDK_PATH}"


class SdkSockets:
    """Every live socket by process id; the state model pushes through `push`."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions
        self.live: dict[str, Connection] = {}
        sessions.push = self.push

    def push(self, process_id: str, action: str, fields: dict[str, Any]) -> bool:
        connection = self.live.get(process_id)
        if connection is None:
            return False
        frame = {"Action": action, "RequestId": str(uuid.uuid4()), **fields, "StatusCode": 200}
        try:
            connection.queue.put_nowait(frame)
        except asyncio.QueueFull:
            return False
        return True

    async def serve(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        params = parse_query(scope.get("query_string", b""))
        try:
            if scope["path"] not in SDK_PATHS:
                raise ApiError("NotFound", f"no websocket at this path; use {SDK_PATH}", 404)
            if missing := [p for p in CONNECT_PARAMETERS if not params.get(p)]:
                raise ApiError("Forbidden", f"missing connect parameters: {missing}", 403)
            process = self.sessions.connect(
                params["pID"],
                params["FleetId"],
                params["ComputeId"],
                params["Authorization"],
                params["IdempotencyToken"],
                params.get("sdkLanguage", ""),
                params.get("sdkVersion", ""),
            )
        except ApiError as refused:
            # The process id is no secret; the token never appears here.
            log.info("refused an SDK connect", extra={"reason": refused.message})
            await _deny(scope, send, refused)
            return
        connection = Connection(
            process.process_id, process.generation, endpoint_of(scope, scope["scheme"] == "wss")
        )
        self.live[process.process_id] = connection  # a refreshed reconnect replaces the old one
        await send({"type": "websocket.accept"})
        writer = asyncio.create_task(self._write(connection, send))
        refresher = asyncio.create_task(self._refresh(connection))
        try:
            await self._read(connection, receive)
        finally:
            refresher.cancel()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            self.sessions.disconnect(connection.process_id, connection.generation)
            if self.live.get(connection.process_id) is connection:
                del self.live[connection.process_id]

    async def _read(self, connection: Connection, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                continue  # the SDKs send only text frames; anything else is not a request
            frame: Any = None
            if len(text) <= MAX_FRAME:
                with contextlib.suppress(ValueError):
                    frame = json.loads(text)
            if isinstance(frame, dict):
                reply = self.reply(connection.process_id, frame)
            elif (unreadable := _unreadable(text)) is not None:
                reply = unreadable  # the SDK waits for this RequestId: tell it, do not time out
            else:
                continue

            if reply["Action"] == "ActivateServerProcess" and reply["StatusCode"] == 200:
                connection.wake.set()  # a refresh already due goes out now
            try:
                connection.queue.put_nowait(reply)
            except asyncio.QueueFull:
                return  # it is not reading its replies: uvicorn closes the socket

    async def _write(self, connection: Connection, send: Send) -> None:
        while (frame := await connection.queue.get()) is not None:
            text = json.dumps(frame, separators=(",", ":"))
            await send({"type": "websocket.send", "text": text})
        await send({"type": "websocket.close", "code": 1000})

    async def _refresh(self, connection: Connection) -> None:
        """RefreshConnection once the process is ACTIVE and its token's refresh is due, then
        again every refresh_repeat with the same token until a socket opens with it (that
        socket replaces this one, and has its own timer)."""
        while self.live.get(connection.process_id) is connection:
            wait = self.sessions.refresh_wait(connection.process_id)
            connection.refresh_looks += 1
            if wait is not None and wait <= 0:
                token = self.sessions.refresh(connection.process_id)
                if token is None:
                    return
                fields = {"RefreshConnectionEndpoint": connection.endpoint, "AuthToken": token}
                self.push(connection.process_id, "RefreshConnection", fields)
                continue
            connection.wake.clear()
            with contextlib.suppress(TimeoutError):
                timeout = REFRESH_POLL if wait is None else min(wait, REFRESH_POLL)
                await asyncio.wait_for(connection.wake.wait(), timeout)

    def reply(self, process_id: str, frame: dict[str, Any]) -> dict[str, Any]:
        action, request_id = frame.get("Action"), frame.get("RequestId")
        envelope = {"Action": action, "RequestId": request_id}
        try:
            handler = _HANDLERS.get(action) if isinstance(action, str) else None
            if handler is None:
                raise invalid(f"the emulator does not support the action {action!r}")
            return {**envelope, **handler(self.sessions, process_id, frame), "StatusCode": 200}
        except ApiError as error:
            status = _STATUS.get(error.code, error.status)
            return {**envelope, "StatusCode": status, "ErrorMessage": error.message}


async def _deny(scope: dict[str, Any], send: Send, refused: ApiError) -> None:
    """Refuse the upgrade with the error's HTTP status (uvicorn's denial response extension);
    a server without it turns a close before accept into a 403."""
    if "websocket.http.response" not in (scope.get("extensions") or {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    body = refused.message.encode()
    # No Content-Length of ours: uvicorn's websockets implementations add their own, and two
    # make the client refuse the answer.
    headers = [(b"content-type", b"text/plain")]
    start = {"type": "websocket.http.response.start", "status": refused.status}
    await send({**start, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})


_FIELD = r'"{}"\s*:\s*("(?:[^"\\]|\\.){{1,256}}")'


def _unreadable(text: str) -> dict[str, Any] | None:
    """A 400 for a frame that is too big or not a JSON object, if its RequestId can be read
    from its start; None if it cannot (nobody to answer)."""
    head, found = text[:4096], {}
    for name in ("Action", "RequestId"):
        if match := re.search(_FIELD.format(name), head):
            with contextlib.suppress(ValueError):
                found[name] = json.loads(match.group(1))
    if not found.get("RequestId"):
        return None
    why = f"frame over {MAX_FRAME} characters" if len(text) > MAX_FRAME else "not a JSON object"
    return {
        "Action": found.get("Action"),
        "RequestId": found["RequestId"],
        "StatusCode": 400,
        "ErrorMessage": f"the emulator could not read this request: {why}",
    }


def _text(frame: dict[str, Any], name: str) -> str:
    value = frame.get(name)
    if not isinstance(value, str) or not value:
        raise invalid(f"{name} must be a non-empty string")
    return value


def _activate(sessions: Sessions, process_id: str, frame: dict[str, Any]) -> dict[str, Any]:
    port, log_paths = frame.get("Port"), frame.get("LogPaths") or []
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise invalid("Port must be an integer from 1 to 65535")
    if not isinstance(log_paths, list) or not all(isinstance(p, str) for p in log_paths):
        raise invalid("LogPaths must be a list of strings")
    sessions.activate(process_id, port, log_paths[:100])
    return {}


def _heartbeat(sessions: Sessions, process_id: str, frame: dict[str, Any]) -> dict[str, Any]:
    # Go 5.0.x declares `HealthStatus bool json:",omitempty"`: an unhealthy beat has no field.
    healthy = frame.get("HealthStatus", False)
    if not isinstance(healthy, bool):
        raise invalid("HealthStatus must be a boolean")
    sessions.heartbeat(process_id, healthy)
    return {}


def _activate_game_session(
    sessions: Sessions, process_id: str, frame: dict[str, Any]
) -> dict[str, Any]:
    sessions.activate_game_session(process_id, _text(frame, "GameSessionId"))
    return {}


def _terminate(sessions: Sessions, process_id: str, frame: dict[str, Any]) -> dict[str, Any]:
    sessions.terminate(process_id)
    return {}


def _player(add: bool) -> Callable[[Sessions, str, dict[str, Any]], dict[str, Any]]:
    def handle(sessions: Sessions, process_id: str, frame: dict[str, Any]) -> dict[str, Any]:
        arn, player = _text(frame, "GameSessionId"), _text(frame, "PlayerSessionId")
        sessions.player_session(process_id, arn, player, add)
        return {}

    return handle


def _optional_text(frame: dict[str, Any], name: str) -> str | None:
    """A filter the SDK may leave out (Go: omitempty) or send empty (C++): both mean none."""
    value = frame.get(name)
    if value is not None and not isinstance(value, str):
        raise invalid(f"{name} must be a string")
    return value or None


def _describe_player_sessions(
    sessions: Sessions, process_id: str, frame: dict[str, Any]
) -> dict[str, Any]:
    player_session_id = _optional_text(frame, "PlayerSessionId")
    found = sessions.describe_player_sessions(
        process_id,
        _optional_text(frame, "GameSessionId"),
        player_session_id,
        _optional_text(frame, "PlayerId"),
        _optional_text(frame, "PlayerSessionStatusFilter"),
    )
    limit, token = frame.get("Limit") or 50, _optional_text(frame, "NextToken") or "0"
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise invalid("Limit must be a positive integer")
    if not token.isdigit():
        raise invalid("NextToken is not valid")
    start = 0 if player_session_id else int(token)  # both are ignored for one player session
    end = len(found) if player_session_id else start + limit
    answer: dict[str, Any] = {
        "PlayerSessions": [_player_session(s, p) for s, p in found[start:end]],
    }
    if end < len(found):
        answer["NextToken"] = str(end)
    return answer


def _player_session(session: GameSession, player_session_id: str) -> dict[str, Any]:
    rendered: dict[str, Any] = {
        "PlayerSessionId": player_session_id,
        "GameSessionId": session.arn,
        "FleetId": session.fleet_id,
        "IpAddress": session.ip_address,
        "Port": session.port,
        "CreationTime": int(session.player_sessions[player_session_id] * 1000),  # Go: int64 ms
        "Status": "ACTIVE",
    }
    if session.dns_name is not None:
        rendered["DnsName"] = session.dns_name
    return rendered


def _policy(sessions: Sessions, process_id: str, frame: dict[str, Any]) -> dict[str, Any]:
    arn, policy = _text(frame, "GameSessionId"), _text(frame, "PlayerSessionPolicy")
    sessions.set_policy(process_id, arn, policy)
    return {}


_HANDLERS: dict[str, Callable[[Sessions, str, dict[str, Any]], dict[str, Any]]] = {
    "ActivateServerProcess": _activate,
    "HeartbeatServerProcess": _heartbeat,
    "ActivateGameSession": _activate_game_session,
    "TerminateServerProcess": _terminate,
    "AcceptPlayerSession": _player(add=True),
    "RemovePlayerSession": _player(add=False),
    "UpdatePlayerSessionCreationPolicy": _policy,
    "DescribePlayerSessions": _describe_player_sessions,
}
