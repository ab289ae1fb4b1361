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


# A key with no token that failed is tried again after 0.25-0.5 s, then doubling: a compute
# registered a moment after its game server asked is still served within a second or so.
FAILURE_FIRST_SECONDS = 0.5


def failure_delay(failures: int, ceiling: float, rng: random.Random) -> float:
    """Jittered exponential back-off for a key with no token: the upper bound doubles from
    0.5 s with each failure up to `ceiling`; the delay is drawn from its upper half."""
    upper = min(ceiling, FAILURE_FIRST_SECONDS * 2.0 ** (failures - 1))
    return rng.uniform(upper / 2, upper)
