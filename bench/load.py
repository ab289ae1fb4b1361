"""Raw HTTP/1.1 over asyncio, for the loads wrk cannot make: a simultaneous burst, filling keys."""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Iterable


def request_bytes(path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: localhost\r\nX-Token-Broker-Request: true\r\n\r\n"
    ).encode()


class Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time.

    A protocol rather than streams: the answer is timed in data_received, as soon as its last
    byte is in, so the harness's own scheduling after that does not count as server latency.
    """

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._pending: asyncio.Future[tuple[int, float]] | None = None
        self._sent_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._pending is not None and not self._pending.done():
            self._pending.set_exception(ConnectionError("connection closed before the answer"))

    def send(self, raw: bytes) -> asyncio.Future[tuple[int, float]]:
        """Write one request; the future gives (status, seconds until the answer was in)."""
        assert self._transport is not None
        self._pending = asyncio.get_running_loop().create_future()
        self._sent_at = time.perf_counter()
        self._transport.write(raw)
        return self._pending

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        head_end = self._buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        lines = self._buffer[:head_end].decode("latin-1").split("\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        end = head_end + 4 + length
        if len(self._buffer) < end:
            return
        del self._buffer[:end]
        if self._pending is not None and not self._pending.done():
            status = int(lines[0].split()[1])
            self._pending.set_result((status, time.perf_counter() - self._sent_at))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def connect(host: str, port: int) -> Connection:
    _, connection = await asyncio.get_running_loop().create_connection(Connection, host, port)
    return connection


async def burst(
    host: str, port: int, path: str, n: int, time_limit: float
) -> list[tuple[int, float]]:
    """Open n connections, then send one request on each at once: [(status, seconds)]."""
    connections: list[Connection] = []
    try:
        async with asyncio.timeout(time_limit):
            for start in range(0, n, 100):  # in batches, so the listen backlog never overflows
                batch = min(100, n - start)
                connections += await asyncio.gather(*(connect(host, port) for _ in range(batch)))
            # Let the server accept them all: the clock measures answers, not accept().
            await asyncio.sleep(0.5)
            raw = request_bytes(path)
            answers = [connection.send(raw) for connection in connections]
            results = await asyncio.gather(*answers, return_exceptions=True)
    finally:
        for connection in connections:
            connection.close()
    return [(0, math.inf) if isinstance(r, BaseException) else r for r in results]


async def fill(
    host: str, port: int, paths: Iterable[str], connections: int, time_limit: float
) -> collections.Counter[int]:
    """Request every path once over `connections` keep-alive connections; count the statuses."""
    todo = iter(paths)  # shared: each path is taken by exactly one worker
    statuses: collections.Counter[int] = collections.Counter()

    async def worker() -> None:
        connection = await connect(host, port)
        try:
            for path in todo:
                status, _ = await connection.send(request_bytes(path))
                statuses[status] += 1
        finally:
            connection.close()

    async with asyncio.timeout(time_limit):
        await asyncio.gather(*(worker() for _ in range(connections)))
    return statuses


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, q in 0-100."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]
