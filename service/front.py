"""The raw ASGI layer in front of FastAPI: request size bounds, and cache hits served as bytes.

A hit needs no routing, validation models or serialisation: the token's answer was rendered
when it was cached. Everything that is not a plain hit (misses, refresh windows, refusals,
probes, metrics, docs) goes on to FastAPI, which owns the route and its documentation.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from itertools import chain
from typing import Any

from service import errors
from service.config import is_valid_compute_name, is_valid_fleet_id
from service.render import RenderedToken
from service.routes import STARTED, error_response, wants_text

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# A token path is at most ~1.6 KiB (512 + 1024 + the fixed parts); real clients send a few
# hundred bytes of headers. Anything far larger is abuse, refused before it costs more.
MAX_PATH_BYTES = 4096
MAX_HEADER_BYTES = 16384
MAX_HEADER_COUNT = 64
MAX_KNOWN_PATHS = 4096


def token_key(path: str) -> tuple[str, str] | None:
    """(fleet, compute) if `path` is a well-formed token path, else None."""
    if not (path.startswith("/fleets/") and path.endswith("/token")):
        return None
    fleet, sep, compute = path[8:-6].partition("/computes/")
    if sep and is_valid_fleet_id(fleet) and is_valid_compute_name(compute):
        return fleet, compute
    return None


class Front:
    def __init__(self, app: Any, *, serve_hits: bool = True) -> None:
        self.app = app  # the FastAPI app; its state holds the cache once the lifespan has run
        self._serve_hits = serve_hits
        # Paths already parsed and validated, so a hit skips the two regexes. Only valid
        # paths go in, and it is emptied when full, so a flood of paths cannot grow it.
        self._keys: dict[str, tuple[str, str]] = {}
        self._cache: Any = None  # bound from app.state on the first hit, once the lifespan ran

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[STARTED] = started = time.perf_counter()
        refusal = _oversized(scope)
        if refusal is not None:
            self.app.state.recorder.refused(
                "", "", refusal, started, count=scope["path"].startswith("/fleets/")
            )
            response = error_response(refusal.status, refusal.code, refusal.message)
            await response(scope, receive, send)
            return
        if self._serve_hits and scope["method"] == "GET":
            # The hit path, inline: one coroutine less per request is measurable here.
            path = scope["path"]
            known = self._keys.get(path)
            key = known or token_key(path)
            if key is not None:
                if self._cache is None:
                    state = self.app.state
                    self._cache, self._guard, self._recorder = (
                        state.cache,
                        state.guard,
                        state.recorder,
                    )
                entry = self._cache.peek(key)
                if entry is not None and self._allowed(scope["headers"], key[0]):
                    rendered: RenderedToken = entry.rendered
                    start, body = rendered.json_messages
                    for name, value in scope["headers"]:
                        if name == b"accept":
                            if wants_text(value.decode("latin-1")):
                                start, body = rendered.text_messages
                            break
                    await send(start)
                    await send(body)
                    self._recorder.served(key[0], key[1], "hit", started)
                    if known is None:
                        # Remembered only once served: refused or unknown paths cost nothing.
                        if len(self._keys) >= MAX_KNOWN_PATHS:
                            self._keys.clear()
                        self._keys[path] = key
                    return
        await self.app(scope, receive, send)

    def _allowed(self, headers: list[tuple[bytes, bytes]], fleet_id: str) -> bool:
        try:
            self._guard.check(headers, fleet_id)
        except errors.BrokerError:
            return False  # FastAPI refuses it, with the same check, logged and counted there
        return True


def _oversized(scope: Scope) -> errors.BrokerError | None:
    if len(scope.get("raw_path") or scope["path"]) + len(scope["query_string"]) > MAX_PATH_BYTES:
        return errors.URITooLong(f"request URI over {MAX_PATH_BYTES} bytes")
    headers = scope["headers"]
    if len(headers) > MAX_HEADER_COUNT:
        return errors.HeadersTooLarge(f"over {MAX_HEADER_COUNT} request headers")
    if sum(map(len, chain.from_iterable(headers))) > MAX_HEADER_BYTES:
        return errors.HeadersTooLarge(f"request headers over {MAX_HEADER_BYTES} bytes")
    return None
