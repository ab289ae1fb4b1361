"""The reference apps of the hit-path comparison, served exactly as the broker is served.

    python bench/apps.py bare SPEC      # a bare ASGI app sending SPEC's headers and body
    python bench/apps.py fastapi SPEC   # a plain FastAPI route returning SPEC's body as a dict
    python bench/apps.py check          # exit 1 if SERVER_OPTIONS differ from the broker's

SPEC is a JSON file {"headers": [[name, value], ...], "body": "..."}, taken from a broker hit.
The bare app imports nothing but uvicorn, so its start-up time and RSS are a floor, too.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any

import uvicorn

# service.web.server.uvicorn_config's options with default settings; `check` proves they are.
SERVER_OPTIONS: dict[str, Any] = {
    "lifespan": "on",
    "loop": "uvloop",
    "http": "httptools",
    "ws": "none",
    "log_config": None,
    "access_log": False,
    "timeout_graceful_shutdown": 10,
    "proxy_headers": False,
    "server_header": False,
}


def bare_app(headers: list[tuple[bytes, bytes]], body: bytes) -> Any:
    # The leanest an ASGI app can be: messages built once (uvicorn only reads them), no routing.
    start = {"type": "http.response.start", "status": 200, "headers": headers}
    end = {"type": "http.response.body", "body": body}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await send(start)
        await send(end)

    return app


def fastapi_app(body: dict[str, str]) -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    # What a user writes first: the route, the parameters, the dict. No response model, so this
    # is the cheaper kind of plain route (a response model would add validation).
    @app.get("/fleets/{fleet_id}/computes/{compute_name}/token")
    async def token(fleet_id: str, compute_name: str):  # type: ignore[no-untyped-def]
        return body

    @app.get("/")
    async def root():  # type: ignore[no-untyped-def]
        return {"status": "ok"}

    return app


def bind_loopback() -> socket.socket:
    # As service.listen.bind_tcp: proto=IPPROTO_TCP, so accepted connections get TCP_NODELAY.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def serve(app: Any) -> None:
    sock = bind_loopback()
    host, port = sock.getsockname()
    # The same line the broker logs, so the harness finds every server one way.
    print(json.dumps({"event": "listening", "address": f"http://{host}:{port}"}), flush=True)
    uvicorn.Server(uvicorn.Config(app, **SERVER_OPTIONS)).run(sockets=[sock])


def check() -> int:
    """Compare every uvicorn.Config attribute but the app with the broker's own config.

    Prints `note:` for a difference that is the broker's own code (a subclass of uvicorn's
    httptools protocol: its cost is the broker's, so the references keep the stock one), and
    `differs:` for any other, which makes the comparison unfair; then exits 1.
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from service.config import Settings
    from service.web.server import uvicorn_config

    theirs = vars(uvicorn_config(None, Settings()))
    ours = vars(uvicorn.Config(None, **SERVER_OPTIONS))
    unfair = 0
    for name in sorted(theirs.keys() | ours.keys() - {"app"}):
        broker, bench = theirs.get(name), ours.get(name)
        if name == "app" or broker == bench:
            continue
        if name == "http" and isinstance(broker, type) and issubclass(broker, HttpToolsProtocol):
            print(f"note: the broker runs {broker.__module__}.{broker.__qualname__}, a subclass"
                  " of uvicorn's httptools protocol; the references run the stock one")  # fmt: skip
            continue
        print(f"differs: uvicorn option {name}: broker {broker!r}, bench {bench!r}")
        unfair += 1
    return 1 if unfair else 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["check"]:
        return check()
    kind, spec_path = argv
    spec = json.loads(Path(spec_path).read_text())
    body = spec["body"].encode()
    if kind == "bare":
        headers = [(name.encode(), value.encode()) for name, value in spec["headers"]]
        serve(bare_app(headers, body))
    elif kind == "fastapi":
        serve(fastapi_app(json.loads(body)))
    else:
        raise SystemExit(f"unknown app {kind!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
