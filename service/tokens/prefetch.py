"""Prefetch: keeps the configured keys cached at all times, with no request needed."""

from __future__ import annotations

import asyncio
import logging
import random

from service.errors import BrokerError
from service.names import Key
from service.tokens.backoff import RETRY_MIN_SECONDS, backoff_delay
from service.tokens.cache import TokenCache

log = logging.getLogger("service.prefetch")

# Look at least this often: each look touches the key, so a full cache's LRU does not evict
# what we are here to keep.
MAX_NAP_SECONDS = 1.0


class Prefetcher:
    def __init__(
        self,
        cache: TokenCache,
        keys: list[Key],
        *,
        start_jitter: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        self._cache = cache
        self._keys = list(dict.fromkeys(keys))
        # A thousand hosts restarted together must not all ask in the same 100 ms; a lone one
        # waits this much at most.
        self._start_jitter = start_jitter
        self._now = cache.clock  # monotonic, as every entry's times are
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets

    def ready(self) -> bool:
        """True while every prefetched key holds a token that may be served."""
        return all(self._cache.entry(key) is not None for key in self._keys)

    def seconds_remaining(self) -> float | None:
        """Lowest remaining validity over the prefetched keys; None when there are none."""
        if not self._keys:
            return None
        now = self._now()
        remaining = []
        for key in self._keys:
            entry = self._cache.entry(key)
            remaining.append(0.0 if entry is None else max(0.0, entry.expires_at - now))
        return min(remaining)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for key in self._keys:
                group.create_task(self._keep(key), name=f"prefetch {key}")

    async def _keep(self, key: Key) -> None:
        if self._start_jitter > 0:
            await asyncio.sleep(self._rng.uniform(0, self._start_jitter))
        failures = 0
        while True:
            entry = self._cache.entry(key)
            # While a token is held, the entry's retry_at is the one back-off schedule, shared
            # with request-driven refreshes; only with no token does our own count apply.
            if entry is None or self._now() >= max(entry.refresh_at, entry.retry_at):
                try:
                    entry = await self._cache.refresh(key)
                    failures = 0
                except Exception as exc:
                    # The cache logs upstream failures; anything else is a bug, and still must
                    # not end the renewal of this key.
                    if not isinstance(exc, BrokerError):
                        log.error(
                            "prefetch failed",
                            extra={"event": "prefetch", "error": type(exc).__name__},
                        )
                    failures += 1
                    held = self._cache.entry(key)
                    if held is None:
                        await asyncio.sleep(backoff_delay(failures, self._rng))
                    else:
                        await asyncio.sleep(max(held.retry_at - self._now(), RETRY_MIN_SECONDS))
                    continue
            due = max(entry.refresh_at, entry.retry_at) - self._now()
            await asyncio.sleep(min(max(due, 0.05), MAX_NAP_SECONDS))
