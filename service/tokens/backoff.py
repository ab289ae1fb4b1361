"""The one back-off schedule for failed refreshes, shared by requests and prefetch."""

from __future__ import annotations

import random

# Never sooner than 1 s, never later than 30 s.
RETRY_MIN_SECONDS = 1.0
RETRY_MAX_SECONDS = 30.0


def backoff_delay(failures: int, rng: random.Random) -> float:
    """Jittered exponential back-off: 1-2 s after the first failure, doubling, capped at 30 s."""
    ceiling = min(RETRY_MAX_SECONDS, 2.0**failures)
    return max(RETRY_MIN_SECONDS, rng.uniform(ceiling / 2, ceiling))
