"""Open connections: capped below the file limit, heads due in time, half-sent heads in budget.

Anyone who can reach the port can open sockets and say nothing, or send a head a byte at a time;
the guard header and the caller secret only apply to a request that has arrived. So every
connection is tracked from its first moment: one waiting for a request head (new, between
requests, or part way through one) must finish it within the head timeout; past the cap the
connection that has waited longest is closed to make room; and the bytes of heads still arriving
have one budget for the whole broker, spent by the oldest unfinished heads first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from service.config import RESERVED_FILES, file_limit

log = logging.getLogger("service.connections")

# An idle connection costs ~5 KiB; past a few thousand they only serve an attacker.
MAX_DEFAULT_CONNECTIONS = 4096
# Bytes of unfinished request heads held at once, across all connections. A real client's head
# (a few hundred bytes) arrives in one read and never counts here; 4,000 sockets each part way
# through a 23 KiB head would otherwise hold 90 MiB of a 192 MiB pod; 8 MiB is 350 of them.
HALF_SENT_HEADS_BUDGET = 8 * 1024 * 1024


class Closable(Protocol):
    def close_connection(self) -> None: ...


def default_max_connections() -> int:
    return max(16, min(MAX_DEFAULT_CONNECTIONS, file_limit() - RESERVED_FILES))


class Connections:
    def __init__(
        self,
        *,
        max_connections: int,
        head_timeout: float,
        head_budget: int = HALF_SENT_HEADS_BUDGET,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_connections = max_connections
        self.head_timeout = head_timeout
        self._head_budget = head_budget
        self._clock = clock
        self._open = 0
        # Connections with no request in flight -> when they began waiting for a head. Dicts keep
        # insertion order, and a connection is re-inserted when it waits again: oldest first.
        self._waiting: dict[Closable, float] = {}
        # Connections part way through a head -> its bytes so far, the oldest head first.
        self._heads: dict[Closable, int] = {}
        self._head_bytes = 0
        self._sweep: asyncio.TimerHandle | None = None
        self.closed_idle = 0  # counts, for tests and logs
        self.closed_late = 0
        self.closed_over_budget = 0

    def __len__(self) -> int:
        return self._open

    def opened(self, connection: Closable) -> None:
        """A new connection: it waits for its first head from now. Past the cap, make room."""
        self._open += 1
        if self._open > self.max_connections:
            # The longest waiting connection goes: a flood of silent sockets pushes out only
            # its own oldest members, and a caller that just connected gets its answer.
            oldest = next(iter(self._waiting), None)
            if oldest is not None:
                self._drop(oldest)
                self.closed_idle += 1
                oldest.close_connection()
            else:  # every connection is in a request: the new one is the one to refuse
                connection.close_connection()
                return
        self._waiting[connection] = self._clock()
        if self._sweep is None:
            self._schedule()

    def heading(self, connection: Closable, received: int) -> None:
        """`connection` holds `received` bytes of a head not yet complete."""
        before = self._heads.pop(connection, 0)
        self._heads[connection] = received
        self._head_bytes += received - before
        while self._head_bytes > self._head_budget and self._heads:
            oldest = next(iter(self._heads))
            self._drop(oldest)
            self.closed_over_budget += 1
            oldest.close_connection()

    def busy(self, connection: Closable) -> None:
        """A head is complete: the connection is in a request, and no longer on the clock."""
        self._waiting.pop(connection, None)
        if self._heads:  # most heads arrive in one read and were never counted here
            self._head_bytes -= self._heads.pop(connection, 0)

    def idle(self, connection: Closable) -> None:
        """Every request answered: the connection waits for its next head from now."""
        self._waiting[connection] = self._clock()
        if self._sweep is None:
            self._schedule()

    def closed(self, connection: Closable) -> None:
        self._open -= 1
        self._drop(connection)

    def _drop(self, connection: Closable) -> None:
        self._waiting.pop(connection, None)
        self._head_bytes -= self._heads.pop(connection, 0)

    def _schedule(self) -> None:
        # One timer for all connections, not one each; a quarter of the timeout (at most 1 s)
        # late at worst.
        interval = min(1.0, self.head_timeout / 4)
        self._sweep = asyncio.get_running_loop().call_later(interval, self._close_late)

    def _close_late(self) -> None:
        self._sweep = None
        deadline = self._clock() - self.head_timeout
        late = []
        for connection, since in self._waiting.items():
            if since > deadline:
                break  # the rest began waiting later still
            late.append(connection)
        for connection in late:
            self._drop(connection)
            connection.close_connection()
        if late:
            self.closed_late += len(late)
            log.info(
                "closed connections that sent no complete request head in time",
                extra={"event": "head_timeout", "count": len(late)},
            )
        if self._waiting:
            self._schedule()
