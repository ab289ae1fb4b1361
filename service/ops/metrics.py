"""Every Prometheus metric the broker exports, in one registry per app. No label holds a key."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
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
        "ConflictException",
        "NotReadyException",
        "LimitExceededException",
        "connection_error",
        "malformed",
        "timeout",
        "http_5xx",
        "http_4xx",
    }
)
_ATTEMPT_STARTED = "token_broker_attempt_started"
# The GameLift actions the broker calls, each a value of the upstream metrics' operation label.
# Only GetComputeAuthToken spends the host's call budget (tokens/budget.py); the compute
# actions have limits of their own at GameLift.
OPERATIONS = ("GetComputeAuthToken", "DescribeCompute", "RegisterCompute", "DeregisterCompute")
REGISTRATION_ACTIONS = ("register", "deregister")
REGISTRATION_OUTCOMES = ("ok", "retry", "failed", "timeout", "skipped")

# A handler for one of botocore's events (its name, the handler), given to the client by name
# only: this module needs no botocore import.
EventHook = tuple[str, Callable[..., Any]]


class Metrics:
    def __init__(self, version: str = "") -> None:
        self.registry = CollectorRegistry()
        # prometheus-client's own: process_* (CPU, memory, open fds, start time) and
        # python_info, in this registry rather than the global one, as everything here is.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        Gauge(
            "gamelift_token_broker_build_info",
            "Always 1; the labels say what runs.",
            ["version", "python", "botocore"],
            registry=self.registry,
        ).labels(version, platform.python_version(), _installed("botocore")).set(1)
        # Plain ints, read at scrape time: a Counter's lock and call cost about a tenth of a
        # cache hit, which is all the hit path does. The event loop is the only writer.
        self.requests = dict.fromkeys(OUTCOMES, 0)
        self.registry.register(_RequestCounts(self.requests))
        self.upstream_calls = Counter(
            "token_broker_upstream_calls",
            "HTTP requests sent to GameLift, retries included, by action and result.",
            ["operation", "result"],
            registry=self.registry,
        )
        self.upstream_latency = Histogram(
            "token_broker_upstream_latency_seconds",
            "Time of each HTTP request to GameLift, by action.",
            ["operation"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.registrations = Counter(
            "token_broker_compute_registrations",
            "This host's RegisterCompute at start-up and DeregisterCompute on exit, by outcome.",
            ["action", "outcome"],
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
        self._remaining = _Remaining()
        self.registry.register(self._remaining)

    def watch(
        self,
        entries: Callable[[], float],
        inflight: Callable[[], float],
        remaining: Callable[[], float | None],
    ) -> None:
        """Gauges read at scrape time, so the hot path never updates them."""
        self.cache_entries.set_function(entries)
        self.inflight_fetches.set_function(inflight)
        self._remaining.read = remaining

    def registration(self, action: str, outcome: str) -> None:
        self.registrations.labels(action, outcome).inc()

    def upstream_hooks(self) -> list[EventHook]:
        """Handlers that see every HTTP attempt botocore makes, so counts match the upstream's."""
        hooks: list[EventHook] = []
        for operation in OPERATIONS:
            hooks.extend(self._attempt_hooks(operation))
        return hooks

    def _attempt_hooks(self, operation: str) -> list[EventHook]:
        latency = self.upstream_latency.labels(operation)

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
                latency.observe(time.perf_counter() - started)
            self.upstream_calls.labels(operation, attempt_result(parsed_response, exception)).inc()

        def call_failed(context: dict[str, Any], **_: Any) -> None:
            # botocore raises some parse failures (a bad timestamp, say) before
            # response-received fires; the attempt was still sent, so it still counts.
            started = context.pop(_ATTEMPT_STARTED, None)
            if started is not None:
                latency.observe(time.perf_counter() - started)
                self.upstream_calls.labels(operation, "malformed").inc()

        return [
            (f"request-created.gamelift.{operation}", attempt_started),
            (f"response-received.gamelift.{operation}", attempt_finished),
            (f"after-call-error.gamelift.{operation}", call_failed),
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


class _Remaining(Collector):
    """token_broker_token_seconds_remaining, absent (not NaN) when nothing is prefetched."""

    def __init__(self) -> None:
        self.read: Callable[[], float | None] = lambda: None

    def collect(self) -> list[Metric]:
        value = self.read()
        if value is None:
            return []
        family = GaugeMetricFamily(
            "token_broker_token_seconds_remaining",
            "Lowest remaining validity over the prefetched keys (0 when one has none).",
        )
        family.add_metric([], value)
        return [family]


def _installed(distribution: str) -> str:
    # Read from the package metadata: ops/ imports no botocore to learn its version.
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


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
