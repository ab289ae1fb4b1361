"""The raw ASGI layer in front of FastAPI: request size bounds, and token requests answered.

A token answer needs no routing, validation models or serialisation: it was rendered when the
token was cached. A hit seen before (same raw path, same header set, token still fresh) is a
few dict lookups; any other well-formed token request (a first hit, a miss, a collapsed waiter,
a refusal) passes the same checks as the FastAPI route and gets the same answer. Everything
else (malformed paths, probes, metrics, docs) goes on to FastAPI, which owns the route and its
documentation, and answers every request itself when the front is told not to.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.types import Receive, Scope, Send

from service.names import Key, is_valid_compute_name, is_valid_fleet_id
from service.tokens.cache import Outcome
from service.tokens.entries import CacheEntry
from service.web.answers import (
    STARTED,
    broker_error_response,
    stopped_waiting,
    token_error,
    wants_text,
)
from service.web.bounds import header_bytes, oversized
from service.web.render import RenderedToken

# The hit path remembers request header sets that passed every check; a few kinds of client
# send a few sets. Small sets only, and few of them: callers choose the bytes.
MAX_KNOWN_HEADER_SETS = 256
MAX_KNOWN_HEADER_SET_BYTES = 2048

# A remembered hit tells the cache it was a use at most this often per path, so the TLRU's LRU
# order still ranks keys by use without paying for its lookup (microseconds) on every hit. With
# ten thousand keys each is hit every second or so; tokens live an hour, and eviction only has
# to tell the keys in use from the ones forgotten.
TOUCH_SECONDS = 30.0
# What one remembered path and one verdict cost beyond the characters of the raw path and the
# key's names: the objects, their headers and their dict slots (tracemalloc, as the cache's
# ENTRY_OVERHEAD). A percent-encoded path is up to 4 KiB, so the memos are bounded in bytes
# too: each gets half of the front's share of TOKEN_BROKER_CACHE_MAX_BYTES.
SERVED_OVERHEAD = 270
VERDICT_OVERHEAD = 100
HeaderSet = tuple[tuple[bytes, bytes], ...]
# A verdict of the guard holds for one key and one header set together: a check may depend on
# both (a per-fleet secret, a caller allowed one compute), so neither memo answers for the other.
Verdict = tuple[Key, HeaderSet]
K = TypeVar("K")
V = TypeVar("V")


class Memo(dict[K, V]):
    """A dict bounded by entries and by bytes, emptied when a new entry would not fit, so a
    flood of distinct keys cannot grow it. One already held is only refreshed: emptying then
    would make every path take the checked way again, and each of those would empty it in
    turn. Lookups are the plain dict's."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        super().__init__()
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.nbytes = 0

    def remember(self, key: K, value: V, cost: int) -> None:
        if key not in self:
            if len(self) >= self.max_entries or self.nbytes + cost > self.max_bytes:
                self.clear()
            self.nbytes += cost
        self[key] = value

    def clear(self) -> None:
        super().clear()
        self.nbytes = 0


def token_key(path: str) -> Key | None:
    """(fleet, compute) if `path` is a well-formed token path, else None."""
    if not (path.startswith("/fleets/") and path.endswith("/token")):
        return None
    fleet, sep, compute = path[8:-6].partition("/computes/")
    if sep and is_valid_fleet_id(fleet) and is_valid_compute_name(compute):
        return fleet, compute
    return None


class Served:
    """A raw path that was served a hit: the key it names, and when to next tell the cache."""

    __slots__ = ("key", "touch_at")

    def __init__(self, key: Key, touch_at: float) -> None:
        self.key = key
        self.touch_at = touch_at


class Front:
    def __init__(
        self,
        app: Any,
        *,
        serve_tokens: bool = True,
        max_paths: int = 10_000,
        max_bytes: int = 10 * 1024 * 1024,
    ) -> None:
        self.app = app  # the FastAPI app; its state holds the cache once the lifespan has run
        # False leaves every request to FastAPI: the tests run both ways and compare.
        self._serve_tokens = serve_tokens
        # Two memos make a repeated hit a few dict lookups; the first request of each kind takes
        # the checked path, which fills them. Raw paths that were served a hit: a path in here
        # is well formed and within the size bound. The entry itself comes from the cache each
        # time, so a replaced or evicted one is never served.
        max_paths = max(max_paths, MAX_KNOWN_HEADER_SETS)  # each memo, and half the bytes each
        self._served: Memo[bytes, Served] = Memo(max_paths, max_bytes // 2)
        # (key, header set) that passed the size bounds and the guard -> (wants text, epoch,
        # until): the verdict stands while the guard's epoch is the same object, and until
        # that time on the cache's clock (when a caller's identity token expires; else inf).
        self._passed: Memo[Verdict, tuple[bool, object, float]] = Memo(max_paths, max_bytes // 2)
        # One copy of each remembered header set, shared by the verdicts of every key it asked
        # for: ten thousand keys asked for by one client hold one set, not ten thousand.
        self._header_sets: dict[HeaderSet, HeaderSet] = {}
        # Bound from app.state on the first token request, once the lifespan has run.
        self._cache: Any = None
        self._guard: Any = None
        self._recorder: Any = None
        self._held: dict[Key, CacheEntry] = {}
        self._peers: set[str] = set()
        self._clock: Callable[[], float] = time.monotonic
        self._epoch: Callable[[], object] | None = None
        self._counts: dict[str, int] = {}
        self._remember = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The hit path, inline: one coroutine or call less per request is measurable here.
        if scope["type"] == "http":
            # raw_path is optional in ASGI: a None key is a miss, and cheaper than a branch here.
            served = self._served.get(scope.get("raw_path"))  # type: ignore[arg-type]
            if served is not None and scope["method"] == "GET" and not scope["query_string"]:
                key = served.key
                passed = self._passed.get((key, tuple(scope["headers"])))
                entry = self._held.get(key)
                now = self._clock()
                client = scope.get("client")
                if (
                    passed is not None
                    and entry is not None
                    and now < entry.refresh_at
                    # The peer is not in the header set: checked here, on every hit.
                    and (client is None or client[0] in self._peers)
                    # With a caller secret, a verdict holds only while that secret does.
                    and (self._epoch is None or passed[1] is self._epoch())
                    # With a caller identity, only while its token is valid.
                    and now < passed[2]
                ):
                    if now >= served.touch_at:
                        self._cache.peek(key)  # a use, in the TLRU's LRU order
                        served.touch_at = now + TOUCH_SECONDS
                    rendered = entry.rendered
                    if passed[0]:
                        await send(rendered.text_start)
                        await send({"type": "http.response.body", "body": rendered.text})
                    else:
                        await send(rendered.json_start)
                        await send({"type": "http.response.body", "body": rendered.json})
                    self._counts["hit"] += 1
                    return
        await self._checked(scope, receive, send)

    async def _checked(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Every request the memos do not answer: bounds, checks, then a hit or FastAPI."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[STARTED] = started = time.perf_counter()
        refusal = oversized(scope)
        if refusal is not None:
            self.app.state.recorder.refused(
                "", "", refusal, started, count=scope["path"].startswith("/fleets/"), scope=scope
            )
            await broker_error_response(refusal)(scope, receive, send)
            return
        if self._serve_tokens and scope["method"] == "GET":
            key = token_key(scope["path"])
            if key is not None:
                await self._token(scope, receive, send, key, started)
                return
        await self.app(scope, receive, send)

    async def _token(
        self, scope: Scope, receive: Receive, send: Send, key: Key, started: float
    ) -> None:
        """A well-formed token request, answered as the FastAPI route answers it.

        Misses and collapsed waiters come here too: a thousand game servers asking for a new
        key at once must not each pay for routing while the one upstream call waits its turn
        on the loop.
        """
        if self._cache is None:
            self._bind(self.app.state)
        headers = scope["headers"]
        entry = self._cache.peek(key)
        outcome = Outcome.HIT
        # Taken before the check, so a secret rotated in between voids the verdict.
        epoch = self._guard.epoch() if entry is not None else None
        try:
            self._guard.check_peer(scope.get("client"))
            valid_for = await self._guard.check(headers, key)
            until = self._clock() + valid_for
            if entry is None:
                entry, outcome = await self._cache.lookup(*key)
        except Exception as exc:  # mapped to its answer in one place, for the route too
            await token_error(self._recorder, key, exc, started, scope)(scope, receive, send)
            return
        except asyncio.CancelledError:  # the shutdown grace ran out while we waited
            error = stopped_waiting()
            await token_error(self._recorder, key, error, started, scope)(scope, receive, send)
            return
        rendered: RenderedToken = entry.rendered
        text = _wants_text(headers)
        await send(rendered.text_start if text else rendered.json_start)
        await send({"type": "http.response.body", "body": rendered.text if text else rendered.json})
        self._recorder.served(key[0], key[1], outcome, started, scope)
        if outcome is Outcome.HIT and self._remember:
            self._remember_hit(scope, key, text, epoch, until)

    def _bind(self, state: Any) -> None:
        self._cache, self._guard, self._recorder = state.cache, state.guard, state.recorder
        self._held = self._cache.held
        self._peers = self._guard.allowed_peer_hosts
        self._clock = self._cache.clock
        self._epoch = self._guard.epoch if self._guard.rotates else None
        self._counts = self._recorder.counts
        # Memo hits are counted, not logged; with a line per request they take the checked path.
        self._remember = not self._recorder.logs_every_request

    def _remember_hit(
        self, scope: Scope, key: Key, text: bool, epoch: object, until: float
    ) -> None:
        raw_path = scope.get("raw_path")
        if raw_path is None or scope["query_string"]:
            return
        names = len(key[0]) + len(key[1])
        served = Served(key, self._clock() + TOUCH_SECONDS)
        self._served.remember(raw_path, served, SERVED_OVERHEAD + len(raw_path) + names)
        headers = tuple(scope["headers"])
        if header_bytes(headers) > MAX_KNOWN_HEADER_SET_BYTES:
            return
        shared = self._header_sets.get(headers)
        if shared is None:
            if len(self._header_sets) >= MAX_KNOWN_HEADER_SETS:
                # Verdicts hold their sets: both go, so neither can grow past its bound.
                self._header_sets.clear()
                self._passed.clear()
            shared = self._header_sets[headers] = headers
        # The names count too: a verdict keeps its key alive after the path memo is emptied.
        self._passed.remember((key, shared), (text, epoch, until), VERDICT_OVERHEAD + names)


def _wants_text(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"accept":
            return wants_text(value.decode("latin-1"))
    return False
