"""EndpointCache: each compute's websocket URL, from settings, registration or DescribeCompute."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from cachetools import TTLCache

from service import errors
from service.computes.directory import ComputeDirectory
from service.names import Key


class EndpointCache:
    """The WebSocketUrl for (fleet, compute), in order: the configured URL, the URL this
    host's own registration returned, DescribeCompute's GameLiftServiceSdkEndpoint.

    DescribeCompute answers are kept for `ttl` seconds on the monotonic `clock`, one call per
    key at a time: concurrent callers share it, and its error is never kept.
    """

    def __init__(
        self,
        directory: ComputeDirectory | None,
        *,
        ttl: float,
        clock: Callable[[], float],
        configured: str | None = None,
        deadline: float = 10.0,
        max_entries: int = 10_000,
    ) -> None:
        self._directory = directory
        self._configured = configured
        self._deadline = deadline
        # key -> URL, dropped `ttl` after DescribeCompute gave it.
        self._described: TTLCache[Key, str] = TTLCache(max_entries, ttl, timer=clock)
        # The registration's answer: it never expires, as the registration does not.
        self._registered: dict[Key, str] = {}
        self._inflight: dict[Key, asyncio.Task[str]] = {}

    def pin(self, key: Key, endpoint: str) -> None:
        """The URL this host's RegisterCompute returned for `key`."""
        self._registered[key] = endpoint

    async def get(self, fleet_id: str, compute_name: str) -> str:
        if self._configured is not None:
            return self._configured
        key = (fleet_id, compute_name)
        found = self._registered.get(key) or self._described.get(key)
        if found is not None:
            return found
        if self._directory is None:
            raise errors.NoComputeDirectory(
                "this broker cannot look up the websocket URL; set TOKEN_BROKER_SDK_WEBSOCKET_URL"
            )
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(
                self._describe(self._directory, key), name=f"describe {key}"
            )
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._done(key, done))
        # shield: one caller giving up must not cancel the call the others wait on.
        return await asyncio.shield(task)

    async def _describe(self, directory: ComputeDirectory, key: Key) -> str:
        try:
            async with asyncio.timeout(self._deadline):
                record = await directory.describe(*key)
        except TimeoutError:
            message = "GameLift did not answer DescribeCompute in time"
            raise errors.UpstreamTimeout(message) from None
        if record.endpoint is None:
            raise errors.NoSdkEndpoint(
                f"GameLift gives no GameLiftServiceSdkEndpoint for compute {key[1][:128]}"
            )
        self._described[key] = record.endpoint
        return record.endpoint

    def _done(self, key: Key, task: asyncio.Task[str]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # its waiters may all be gone; the error is theirs, not the loop's
