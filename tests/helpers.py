"""Test helpers: a fake clock, a fake token source, and waiting on conditions with deadlines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from service.tokens.clock import SYSTEM_CLOCKS, Clocks
from service.tokens.token import Token


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], *, timeout: float = 10.0, what: str = ""
) -> None:
    """Wait until condition() holds; fail after `timeout` seconds. Never a bare sleep."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {what or condition}")
        await asyncio.sleep(0.005)


def wait_until(condition: Callable[[], bool], *, timeout: float = 10.0, what: str = "") -> None:
    """eventually() for tests that run no event loop (sockets held open by plain calls)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {what or condition}")
        time.sleep(0.01)


class FakeClock:
    """A wall clock and a monotonic clock that tests move by hand.

    They start far apart, so code that mixes one up with the other fails a test. Calling the
    object reads the wall clock (what the emulator stamps expiries with).
    """

    def __init__(self, now: float = 1_800_000_000.0, mono: float = 5_000.0) -> None:
        self.now = now  # the wall clock, epoch seconds
        self.mono = mono  # the monotonic clock

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    @property
    def clocks(self) -> Clocks:
        return Clocks(monotonic=self.monotonic, wall=self.wall)

    def advance(self, seconds: float) -> None:
        """Time passes: both clocks move."""
        self.now += seconds
        self.mono += seconds

    def step_wall(self, seconds: float) -> None:
        """The system clock is set (an NTP step, a VM resume): only the wall clock moves."""
        self.now += seconds


class SystemClock:
    """The real clocks, in FakeClock's shape, for tests that must wait in real time."""

    clocks = SYSTEM_CLOCKS

    def __call__(self) -> float:
        return time.time()


class FakeSource:
    """A TokenSource that mints numbered tokens, and can be held, failed or slowed."""

    def __init__(self, clock: Callable[[], float], lifetime: float = 3600.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls = 0
        self.error: Exception | None = None
        self.gate: asyncio.Event | None = None  # when set to an unset Event, fetches wait on it
        self.expires_at: float | None = None  # force an expiry (e.g. one already in the past)

    def hold(self) -> asyncio.Event:
        self.gate = asyncio.Event()
        return self.gate

    async def fetch(self, fleet_id: str, compute_name: str) -> Token:
        self.calls += 1
        number = self.calls
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return Token(
            fleet_id=fleet_id,
            fleet_arn=f"arn:aws:gamelift:us-west-2::fleet/{fleet_id}",
            compute_name=compute_name,
            compute_arn=f"arn:aws:gamelift:us-west-2::compute/{compute_name}",
            auth_token=f"token-{number}",
            expires_at=self.expires_at or self.clock() + self.lifetime,
        )


def request_head(target: bytes | str, headers: dict[str, str] | None = None) -> bytes:
    """A GET request's head, byte for byte, with Host: localhost."""
    if isinstance(target, str):
        target = target.encode()
    head = b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\n"
    for name, value in (headers or {}).items():
        head += f"{name}: {value}\r\n".encode()
    return head + b"\r\n"


class RawConnection:
    """One keep-alive HTTP/1.1 connection that sends request targets byte for byte.

    httpx normalises URLs (and is slow with a hundred connections on one loop); load and
    property tests need neither.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.last_headers: list[tuple[bytes, bytes]] = []  # of the last answer, as sent

    @classmethod
    async def open(cls, url: str) -> RawConnection:
        host, _, port = url.removeprefix("http://").rpartition(":")
        reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
        return cls(reader, writer)

    async def get(
        self, target: bytes | str, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        self._writer.write(request_head(target, headers))
        return await self.read_answer()

    def write(self, data: bytes) -> None:
        """Send raw bytes, for example many requests at once (pipelined)."""
        self._writer.write(data)

    async def read_answer(self) -> tuple[int, bytes]:
        """The next answer on the connection: its status and body."""
        status_line = await asyncio.wait_for(self._reader.readline(), timeout=30)
        if not status_line:
            raise ConnectionError("connection closed before an answer")
        length = 0
        self.last_headers = []
        while (line := await self._reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            self.last_headers.append((name.strip().lower(), value.strip()))
            if name.strip().lower() == b"content-length":
                length = int(value)
        return int(status_line.split()[1]), await self._reader.readexactly(length)

    async def close(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()
