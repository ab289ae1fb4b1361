"""A stand-in for the broker's server-parameters endpoint, on the standard library: it answers
what a test scripts, and records what it was asked, for the launcher's and the shell snippet's
failure modes. (The real broker's endpoint is tested against the real broker.)"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FLEET = "fleet-1234"
COMPUTE = "my-host"
TOKEN = "tok-0123456789abcdef-SECRET"


def parameters(**override: object) -> dict[str, object]:
    """A good answer for (FLEET, COMPUTE), with a fresh ProcessId; fields can be overridden."""
    body: dict[str, object] = {
        "WebSocketUrl": "wss://us-west-2.api.amazongamelift.com",
        "FleetId": FLEET,
        "HostId": COMPUTE,
        "ProcessId": str(uuid.uuid4()),
        "AuthToken": TOKEN,
        "ExpirationTimestamp": "2026-12-02T06:00:00Z",
    }
    body.update(override)
    return body


def text_form(body: dict[str, object]) -> bytes:
    names = {
        "WebSocketUrl": "GAMELIFT_SDK_WEBSOCKET_URL",
        "AuthToken": "GAMELIFT_SDK_AUTH_TOKEN",
        "FleetId": "GAMELIFT_SDK_FLEET_ID",
        "HostId": "GAMELIFT_SDK_HOST_ID",
        "ProcessId": "GAMELIFT_SDK_PROCESS_ID",
    }
    lines = [f"{names[k]}='{body[k]}'\n" for k in names if k in body]
    return "".join(lines).encode()


@dataclass
class Answer:
    status: int = 200
    body: bytes | dict[str, object] | None = None  # None: a good answer, made per request
    headers: dict[str, str] = field(default_factory=dict)


def error(status: int, code: str, message: str, **headers: str) -> Answer:
    body = {"error": {"code": code, "message": message}}
    return Answer(status, json.dumps(body).encode(), headers)


@dataclass
class Asked:
    at: float  # time.monotonic() when the request arrived
    path: str
    headers: dict[str, str]


class StandIn:
    """Answers in order from `script`; the last answer repeats."""

    def __init__(self, *script: Answer) -> None:
        self.script = list(script) or [Answer()]
        self.asked: list[Asked] = []
        self.lock = threading.Lock()

    def next_answer(self, path: str, headers: dict[str, str]) -> Answer:
        with self.lock:
            self.asked.append(Asked(time.monotonic(), path, headers))
            return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                answer = standin.next_answer(self.path, dict(self.headers.items()))
                body = answer.body
                headers = dict(answer.headers)
                if body is None or isinstance(body, dict):
                    fields = parameters() if body is None else body
                    if "text/plain" in self.headers.get("Accept", ""):
                        body, kind = text_form(fields), "text/plain; charset=utf-8"
                    else:
                        body, kind = json.dumps(fields).encode(), "application/json"
                    headers.setdefault("Content-Type", kind)
                else:
                    headers.setdefault("Content-Type", "application/json")
                self.send_response(answer.status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet; and a unix peer has no address to log

        return Handler


class _UnixServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


class Listener:
    """The stand-in on a loopback port. The port is bound at once; until start() it refuses
    connections, as a broker that is still starting does."""

    def __init__(self, standin: StandIn) -> None:
        self.server = ThreadingHTTPServer(
            ("127.0.0.1", 0), standin.handler(), bind_and_activate=False
        )
        self.server.daemon_threads = True
        self.server.server_bind()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self.server.server_activate()
        self.thread.start()

    def close(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
        self.server.server_close()


@contextmanager
def serving_tcp(standin: StandIn, *, listen: bool = True) -> Iterator[Listener]:
    listener = Listener(standin)
    if listen:
        listener.start()
    try:
        yield listener
    finally:
        listener.close()


@contextmanager
def serving_unix(standin: StandIn, path: str) -> Iterator[str]:
    server = _UnixServer(path, standin.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        server.shutdown()
        server.server_close()


def refusing_port() -> int:
    """A loopback port with nothing listening (bound here, so nothing else takes it soon)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
