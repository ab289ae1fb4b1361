"""Running the app under uvicorn: listeners, draining on SIGTERM, and the embedded emulator."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

import uvicorn

from service.app import Lifecycle
from service.config import Settings
from service.front import Front
from service.protocol import BoundedHttpToolsProtocol


class BrokerServer(uvicorn.Server):
    """uvicorn.Server that marks the app as draining the moment a stop signal arrives."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle) -> None:
        super().__init__(config)
        self._lifecycle = lifecycle

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn runs the lifespan shutdown only after connections drain; readiness must turn
        # before that, so load balancers stop sending while in-flight requests finish.
        self._lifecycle.draining = True
        super().handle_exit(sig, frame)


def uvicorn_config(
    app: Any, settings: Settings, *, serve_tokens: bool = True, **overrides: Any
) -> uvicorn.Config:
    """uvicorn's settings for the broker, with the hit path in front of the FastAPI app."""
    options: dict[str, Any] = {
        "lifespan": "on",
        "loop": "uvloop",
        "http": BoundedHttpToolsProtocol,
        # Our logs.configure() owns the handlers; uvicorn's dictConfig would replace them.
        "log_config": None,
        "access_log": settings.access_log,
        "timeout_graceful_shutdown": settings.shutdown_grace_seconds,
        # We refuse proxied token requests; uvicorn must not rewrite the client from them.
        "proxy_headers": False,
        "server_header": False,
    }
    options.update(overrides)
    front = Front(app, serve_tokens=serve_tokens, max_paths=settings.cache_max_entries)
    return uvicorn.Config(front, **options)


def bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only when it
    # sees it, and without that Nagle plus delayed ACKs add 40 ms to every response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    sock.set_inheritable(True)
    return sock


def describe(sock: socket.socket) -> str:
    if sock.family == socket.AF_UNIX:
        return f"unix:{sock.getsockname()}"
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"


def bind_unix(path: str) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)  # a stale socket from a previous run; anything else we leave alone
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Create it 0660 from the start (uvicorn's own uds= makes it 0666): only the owner and the
    # group that game servers run in may connect.
    old_umask = os.umask(0o117)
    try:
        sock.bind(path)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o660)
    return sock


@contextlib.contextmanager
def embedded_emulator(host: str = "127.0.0.1", **emulator_options: Any) -> Iterator[str]:
    """Run the GameLift emulator on a free loopback port in a thread; yield its URL."""
    from service.emulator import Emulator  # only the demo mode pays for importing it

    emulator = Emulator(**emulator_options)
    sock = bind_tcp(host, 0)
    port = sock.getsockname()[1]
    # A thread, not our loop: uvicorn installs signal handlers only in the main thread, so the
    # broker keeps its graceful SIGTERM handling.
    # No log_level: uvicorn would set it on its process-wide loggers, the broker's included.
    config = uvicorn.Config(emulator.app, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the embedded GameLift emulator did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
