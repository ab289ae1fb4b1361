"""create_app: the FastAPI app; its lifespan opens the upstream, builds the cache and prefetch,
and registers this host's compute when told to."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI

from service import __version__, errors
from service.computes.directory import ComputeDirectory, Registration
from service.computes.endpoints import EndpointCache
from service.computes.registration import Registrar
from service.config import Settings
from service.ops.metrics import EventHook, Metrics
from service.ops.readiness import Readiness
from service.ops.requests import RequestRecorder
from service.tokens.cache import CachePolicy, TokenCache
from service.tokens.clock import SYSTEM_CLOCKS, Clocks
from service.tokens.prefetch import Prefetcher
from service.tokens.token import TokenSource
from service.web.answers import install_error_handlers
from service.web.docs import install_docs
from service.web.guard import RequestGuard
from service.web.openapi import document
from service.web.render import render_token
from service.web.routes import router

log = logging.getLogger("service.app")

# Opens the TokenSource, given the HTTP-attempt hooks that count upstream calls. The CLI passes
# the GameLift client's; the HTTP layer never imports it. When the source is a ComputeDirectory
# too (the GameLift client is), it also finds websocket URLs and registers this host.
UpstreamFactory = Callable[[list[EventHook]], AbstractAsyncContextManager[TokenSource]]


def cache_policy(settings: Settings) -> CachePolicy:
    return CachePolicy(
        refresh_ahead=settings.refresh_ahead_seconds,
        min_validity=settings.min_validity_seconds,
        max_entries=settings.cache_max_entries,
        max_bytes=settings.cache_max_bytes,
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
            directory = source if isinstance(source, ComputeDirectory) else None
            endpoints = EndpointCache(
                directory,
                ttl=settings.sdk_endpoint_ttl_seconds,
                clock=clocks.monotonic,
                configured=settings.sdk_websocket_url,
                deadline=settings.upstream_deadline_seconds,
                max_entries=settings.cache_max_entries,
            )
            app.state.cache = cache
            guard: RequestGuard = app.state.guard
            stack.push_async_callback(guard.close)
            await guard.start()
            app.state.prefetcher = prefetcher
            app.state.endpoints = endpoints
            readiness.require(
                lambda: None if prefetcher.ready() else "waiting for prefetched tokens"
            )
            renewing = asyncio.create_task(prefetcher.run(), name="prefetch")
            stack.push_async_callback(_cancel, renewing)
            registration = _registration(settings)
            if registration is not None:
                if directory is None:
                    raise errors.NoComputeDirectory("TOKEN_BROKER_REGISTER needs GameLift")
                registrar = Registrar(directory, registration, record=metrics.registration)
                app.state.registrar = registrar
                own = Prefetcher(
                    cache, [registrar.key], start_jitter=settings.prefetch_jitter_seconds
                )
                readiness.require(
                    lambda: (
                        registrar.reason()
                        or (None if own.ready() else "waiting for the registered compute's token")
                    )
                )
                if settings.deregister_on_exit:
                    # Runs after uvicorn has drained the requests in flight (the lifespan ends
                    # last), and before the client closes.
                    stack.push_async_callback(registrar.deregister)
                # Not awaited here: the listeners open (and /healthz answers) while it registers.
                registering = asyncio.create_task(
                    _register(registrar, endpoints, own), name="register"
                )
                stack.push_async_callback(_cancel, registering)
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
        # Not FastAPI's interactive docs: its pages load unpinned scripts from a CDN into the
        # broker's origin, where they could send the guard header and read tokens. The
        # document stays at /openapi.json; TOKEN_BROKER_DOCS serves web/docs.py's page.
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
    if settings.docs:
        install_docs(app)
    install_error_handlers(app)
    document(app)
    return app


def _registration(settings: Settings) -> Registration | None:
    key = settings.register_key
    if key is None:
        return None
    return Registration(
        fleet_id=key[0],
        compute_name=key[1],
        ip_address=settings.register_ip_address,
        dns_name=settings.register_dns_name,
        location=settings.register_location,
        certificate_path=settings.register_certificate_path,
    )


async def _register(registrar: Registrar, endpoints: EndpointCache, own: Prefetcher) -> None:
    """Register, hand the answer's websocket URL to the endpoints, then keep the key's token."""
    compute = await registrar.run()
    if compute is None:
        return  # refused for good: logged, and /readyz says why
    if compute.endpoint is not None:
        endpoints.pin(registrar.key, compute.endpoint)
    await own.run()


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
