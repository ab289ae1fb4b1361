"""Every Prometheus metric the broker exports, in one registry per app. No label holds a key."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

OUTCOMES = ("hit", "stale", "miss", "collapsed", "error")
# AWS error codes are the result label, but an upstream could invent endless codes: anything
# outside this set is counted as "other", so the label stays bounded.
KNOWN_RESULTS = frozenset(
    {
        "ok",
        "InvalidRequestException",
        "UnauthorizedException",
        "NotFoundException",
        "InternalServiceException",
        "UnsupportedRegionException",
        "ThrottlingException",
        "AccessDeniedException",
        "connection_error",
        "malformed",
        "timeout",
        "http_5xx",
        "http_4xx",
    }
)
_ATTEMPT_STARTED = "token_broker_attempt_started"

# A handler for one of botocore's events (its name, the handler), given to the client by name
# only: this module needs no botocore import.
EventHook = tuple[str, Callable[..., Any]]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # Plain ints, read at scrape time: a Counter's lock and call cost about a tenth of a
        # cache hit, which is all the hit path does. The event loop is the only writer.
        self.requests = dict.fromkeys(OUTCOMES, 0)
        self.registry.register(_RequestCounts(self.requests))
        self.upstream_calls = Counter(
            "token_broker_upstream_calls",
            "HTTP requests sent to GameLift, retries included, by result.",
            ["result"],
            registry=self.registry,
        )
        self.upstream_latency = Histogram(
            "token_broker_upstream_latency_seconds",
            "Time of each HTTP request to GameLift.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.cache_entries = Gauge(
            "token_broker_cache_entries", "Tokens held in the cache.", registry=self.registry
        )
        self.inflight_fetches = Gauge(
            "token_broker_inflight_fetches",
            "Keys being fetched from GameLift right now.",
            registry=self.registry,
        )
        self.token_seconds_remaining = Gauge(
            "token_broker_token_seconds_remaining",
            "Lowest remaining validity over the prefetched keys (0 when one has none).",
            registry=self.registry,
        )

    def watch(
        self,
        entries: Callable[[], float],
        inflight: Callable[[], float],
        remaining: Callable[[], float],
    ) -> None:
        """Gauges read at scrape time, so the hot path never updates them."""
        self.cache_entries.set_function(entries)
        self.inflight_fetches.set_function(inflight)
        self.token_seconds_remaining.set_function(remaining)

    def upstream_hooks(self) -> list[EventHook]:
        """Handlers that see every HTTP attempt botocore makes, so counts match the upstream's."""

        def attempt_started(request: Any, **_: Any) -> None:
            # request-created fires once per attempt; its context is shared with the response.
            request.context[_ATTEMPT_STARTED] = time.perf_counter()

        def attempt_finished(
            context: dict[str, Any],
            parsed_response: dict[str, Any] | None,
            exception: Exception | None,
            **_: Any,
        ) -> None:
            started = context.pop(_ATTEMPT_STARTED, None)
            if started is not None:
                self.upstream_latency.observe(time.perf_counter() - started)
            self.upstream_calls.labels(attempt_result(parsed_response, exception)).inc()

        def call_failed(context: dict[str, Any], **_: Any) -> None:
            # botocore raises some parse failures (a bad timestamp, say) before
            # response-received fires; the attempt was still sent, so it still counts.
            started = context.pop(_ATTEMPT_STARTED, None)
            if started is not None:
                self.upstream_latency.observe(time.perf_counter() - started)
                self.upstream_calls.labels("malformed").inc()

        return [
            ("request-created.gamelift.GetComputeAuthToken", attempt_started),
            ("response-received.gamelift.GetComputeAuthToken", attempt_finished),
            ("after-call-error.gamelift.GetComputeAuthToken", call_failed),
        ]


class _RequestCounts(Collector):
    def __init__(self, counts: dict[str, int]) -> None:
        self._counts = counts

    def describe(self) -> list[Metric]:
        return [self._family()]

    def collect(self) -> list[Metric]:
        family = self._family()
        for outcome, count in self._counts.items():
            family.add_metric([outcome], count)
        return [family]

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily(
            "token_broker_requests", "Token requests by how they were answered.", labels=["outcome"]
        )


def attempt_result(parsed: dict[str, Any] | None, exception: Exception | None) -> str:
    if exception is not None:
        return "timeout" if "Timeout" in type(exception).__name__ else "connection_error"
    parsed = parsed or {}
    code = parsed.get("Error", {}).get("Code")
    status = int(parsed.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    if code is None and status < 400:
        return "ok"
    if code in KNOWN_RESULTS:
        return str(code)
    return "http_5xx" if status >= 500 else "http_4xx"
