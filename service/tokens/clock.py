"""The two clocks the cache reads: monotonic for every window, the wall once per answer."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Clocks:
    # Every window, deadline and back-off: an NTP step or a VM resume moves the wall clock,
    # never this one.
    monotonic: Callable[[], float] = time.monotonic
    # Read once per answer, to turn GameLift's ExpirationTimestamp into a remaining lifetime.
    wall: Callable[[], float] = time.time


SYSTEM_CLOCKS = Clocks()
