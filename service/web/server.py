"""Running the app under uvicorn: the broker's uvicorn settings, and draining on SIGTERM."""

from __future__ import annotations

from types import FrameType
from typing import Any

import uvicorn

from service.config import Settings
from service.web.app import Lifecycle
from service.web.connections import Connections, default_max_connections
from service.web.front import Front
from service.web.protocol import protocol_for


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
    front = Front(app, serve_tokens=serve_tokens, max_paths=settings.cache_max_entries)
    return uvicorn.Config(front, **options)
