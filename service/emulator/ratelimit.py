"""Per-account token buckets, one per action, with GameLift's published figures."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.emulator.errors import ApiError

# GameLift's "API limits" page: (burst, requests per second) per account.
AWS_LIMITS: dict[str, tuple[float, float]] = {
    "GetComputeAuthToken": (10, 5),
    "RegisterCompute": (20, 20),
    "DeregisterCompute": (20, 20),
    "DescribeCompute": (30, 30),
    "ListCompute": (30, 30),
}


@dataclass
class Bucket:
    burst: float
    rate: float  # tokens added per second
    level: float
    at: float  # monotonic time of `level`

    def take(self, now: float) -> bool:
        self.level = min(self.burst, self.level + (now - self.at) * self.rate)
        self.at = now
        if self.level >= 1:
            self.level -= 1
            return True
        return False


class RateLimits:
    """Off by default; `aws` sets the published figures; each action can be set on its own."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self.monotonic = monotonic
        self.buckets: dict[str, Bucket] = {}

    def set(self, action: str, burst: float, rate: float) -> None:
        for name, value in (("burst", burst), ("rate", rate)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{action} {name} must be a number")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{action} {name} must be a finite, non-negative number")
        if burst < 1:
            raise ValueError(f"{action} burst must be at least 1")
        self.buckets[action] = Bucket(float(burst), float(rate), float(burst), self.monotonic())

    def use_aws(self) -> None:
        self.buckets.clear()
        for action, (burst, rate) in AWS_LIMITS.items():
            self.set(action, burst, rate)

    def clear(self) -> None:
        self.buckets.clear()

    def check(self, action: str) -> None:
        bucket = self.buckets.get(action)
        if bucket is not None and not bucket.take(self.monotonic()):
            raise ApiError("ThrottlingException", "Rate exceeded", 400)

    def apply(self, value: Any, known: frozenset[str]) -> None:
        """A config value: "aws", "off"/None, or {action: {"burst": n, "rate": n}}; all checked
        before any changes."""
        if value is None or value == "off":
            self.clear()
        elif value == "aws":
            self.use_aws()
        elif isinstance(value, dict):
            staged: list[tuple[str, float, float]] = []
            for action, limit in value.items():
                if action not in known:
                    raise ValueError(f"rate_limits: unknown action {action!r}")
                if not isinstance(limit, dict) or set(limit) != {"burst", "rate"}:
                    raise ValueError(f"rate_limits.{action} must be {{'burst': n, 'rate': n}}")
                probe = RateLimits(self.monotonic)
                probe.set(action, limit["burst"], limit["rate"])  # raises on bad numbers
                staged.append((action, limit["burst"], limit["rate"]))
            for action, burst, rate in staged:
                self.set(action, burst, rate)
        else:
            raise ValueError('rate_limits must be "aws", "off", null or an object of actions')

    def describe(self) -> dict[str, dict[str, float]]:
        return {a: {"burst": b.burst, "rate": b.rate} for a, b in sorted(self.buckets.items())}
