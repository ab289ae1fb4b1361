"""create_app: the FastAPI app; its lifespan opens the upstream, builds the cache and prefetch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI

from service import __version__
from service.config import Settings
from service.ops.metrics import EventHook, Metrics
from service.ops.readiness import Readiness
from service.ops.requests import RequestRecorder
from service.tokens.cache import CachePolicy, TokenCache
from service.tokens.clock import SYSTEM_CLOCKS, Clocks
from service.tokens.prefetch import Prefetcher
from service.tokens.token import TokenSource
from service.web.answers import install_error_handlers
from service.web.guard import RequestGuard
from service.web.openapi import document
from service.web.render import render_token
from service.web.routes import router

log = logging.getLogger("service.app")

# Opens the TokenSource, given the HTTP-attempt hooks that count upstream calls. The CLI passes
# the GameLift client's; the HTTP layer never imports it.
UpstreamFactory = Callable[[list[EventHook]], AbstractAsyncContextManager[TokenSource]]


def cache_policy(settings: Settings) -> CachePolicy:
    return CachePolicy(
        refresh_ahead=settings.refresh_ahead_seconds,
        min_validity=settings.min_validity_seconds,
        max_entries=settings.cache_max_entries,
        max_inflight=settings.max_inflight,
        deadline=settings.upstream_deadline_seconds,
        failure_backoff_max=settings.failure_backoff_max_seconds,
        upstream_rate=settings.upstream_rate,
        upstream_burst=settings.upstream_burst,
        refresh_spread=settings.refresh_spread,
    )


def create_app(
    settings: Settings,
    upstream: UpstreamFactory,
    *,
    clocks: Clocks = SYSTEM_CLOCKS,
    readiness: Readiness | None = None,
) -> FastAPI:
    """Build the app; nothing touches the network until its lifespan starts.

    `upstream` opens the TokenSource: the aioboto3 GameLift client in production, pointed at the
    emulator in tests and demos. `readiness` is shared with the server, which marks it serving
    and draining, and with whoever opens the upstream (no credentials: never ready).
    """
    metrics = Metrics(__version__)
    readiness = readiness or Readiness()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            source = await stack.enter_async_context(upstream(metrics.upstream_hooks()))
            cache = TokenCache(source, cache_policy(settings), clocks=clocks, render=render_token)
            # Registered after the client, so it runs first: background fetches stop before the
            # client they use is closed.
            stack.push_async_callback(cache.close)
            prefetcher = Prefetcher(
                cache, settings.prefetch_keys, start_jitter=settings.prefetch_jitter_seconds
            )
            metrics.watch(
                entries=lambda: len(cache),
                inflight=lambda: cache.inflight,
                remaining=prefetcher.seconds_remaining,
            )
            app.state.cache = cache
            guard: RequestGuard = app.state.guard
            stack.push_async_callback(guard.close)
            await guard.start()
            app.state.prefetcher = prefetcher
            readiness.require(
                lambda: None if prefetcher.ready() else "waiting for prefetched tokens"
            )
            renewing = asyncio.create_task(prefetcher.run(), name="prefetch")
            stack.push_async_callback(_cancel, renewing)
            # "ready" is logged by this task once /readyz would say 200, not here: the server
            # is not even listening yet, and prefetched tokens may still be on their way.
            announcing = asyncio.create_task(readiness.announce(), name="readiness")
            stack.push_async_callback(_cancel, announcing)
            yield

    app = FastAPI(
        title="gamelift-token-broker",
        version=__version__,
        summary="Amazon GameLift compute auth tokens for local game servers, cached.",
        lifespan=lifespan,
        # No interactive docs: FastAPI's pages load unpinned scripts from a CDN into the
        # broker's origin, where they could send the guard header and read tokens. The
        # document itself stays at /openapi.json.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.lifecycle = readiness
    app.state.guard = RequestGuard(settings, wall=clocks.wall, monotonic=clocks.monotonic)
    app.state.metrics = metrics
    app.state.recorder = RequestRecorder(metrics, access_log=settings.access_log)
    # A redirect for a trailing slash would echo the caller's Host header into Location.
    app.router.redirect_slashes = False
    app.include_router(router)
    install_error_handlers(app)
    document(app)
    return app


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
