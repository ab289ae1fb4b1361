"""Memory per key is bounded in bytes (TOKEN_BROKER_CACHE_MAX_BYTES), not only in entries.

The API's names reach 512 + 1,024 characters and a percent-encoded path 4 KiB, so ten thousand
keys may weigh ten times what ordinary ones do. Unit tests check the bounds and the estimate;
one test feeds a real broker the worst case and reads its RSS.
"""

from __future__ import annotations

import asyncio
import random
import re
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator

import pytest

from service.config import Settings
from service.tokens.cache import CachePolicy, TokenCache
from service.tokens.entries import entry_bytes
from service.tokens.recent import TRACE_OVERHEAD, Recent
from service.tokens.token import Token
from service.web.render import render_token
from tests.helpers import FakeClock, FakeSource
from tests.processes import broker_process, clean_env, rss_mib

MIB = 1024 * 1024


def fleet(n: int) -> str:
    """A fleet id of the API's maximum length, 512."""
    return f"fleet-{n:06d}" + "a" * (512 - 12)


def compute(n: int) -> str:
    """A compute name of the API's maximum length, 1,024."""
    return f"c{n:06d}" + "b" * (1024 - 7)


class CopyingSource(FakeSource):
    """Answers with names of its own, as a parsed GetComputeAuthToken answer has: a key's
    strings and its token's are separate objects in the broker."""

    async def fetch(self, fleet_id: str, compute_name: str) -> Token:
        token = await super().fetch("".join(list(fleet_id)), "".join(list(compute_name)))
        return token


def long_cache(clock: FakeClock, **policy: float) -> TokenCache:
    return TokenCache(
        CopyingSource(clock),
        CachePolicy(upstream_rate=1e9, upstream_burst=1e9, refresh_spread=0.0, **policy),
        clocks=clock.clocks,
        render=render_token,
        rng=random.Random(7),
    )


async def test_the_cache_evicts_by_bytes_in_lru_order() -> None:
    clock = FakeClock()
    cache = long_cache(clock, max_entries=10_000, max_bytes=MIB)
    first = await cache.lookup(fleet(0), compute(0))
    size = entry_bytes(first[0])
    assert 8_000 < size < 10_000  # the longest names: about 9 KB each
    fit = MIB // size
    for n in range(1, fit):
        await cache.lookup(fleet(n), compute(n))
    assert len(cache) == fit  # full, by bytes, long before 10,000 entries
    await cache.lookup(fleet(0), compute(0))  # key 0 is now the most recent
    await cache.lookup(fleet(fit), compute(fit))  # one more: evicts the least recent, key 1
    held = set(cache.held)
    assert len(held) == fit
    assert (fleet(0), compute(0)) in held and (fleet(fit), compute(fit)) in held
    assert (fleet(1), compute(1)) not in held and (fleet(2), compute(2)) in held


async def test_short_names_are_still_bounded_by_entries() -> None:
    clock = FakeClock()
    cache = long_cache(clock, max_entries=3, max_bytes=MIB)
    for name in ("a", "b", "c", "d"):
        await cache.lookup("fleet-1", name)
    assert set(cache.held) == {("fleet-1", "b"), ("fleet-1", "c"), ("fleet-1", "d")}


async def test_ten_thousand_ordinary_keys_fit_the_default_budget() -> None:
    # Goal 3's keys (bench/run.py): the byte bound must not evict them.
    clock = FakeClock()
    settings = Settings()
    cache = long_cache(
        clock, max_entries=settings.cache_max_entries, max_bytes=settings.cache_max_bytes
    )
    for n in range(10_000):
        await cache.lookup(f"fleet-{n % 40}", f"host-{n}")
    assert len(cache) == 10_000


async def test_the_estimate_matches_what_an_entry_allocates() -> None:
    # The fixed overheads were measured with tracemalloc; this keeps them honest.
    for long in (False, True):
        clock = FakeClock()
        cache = long_cache(clock, max_entries=100_000, max_bytes=1 << 34)
        keys = [
            (fleet(n), compute(n)) if long else (f"fleet-{n}", f"host-{n}") for n in range(1001)
        ]
        await cache.lookup(*keys[0])
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for key in keys[1:]:
                await cache.lookup(*key)
            measured = (tracemalloc.get_traced_memory()[0] - before) / 1000
        finally:
            tracemalloc.stop()
        estimated = sum(entry_bytes(cache.held[key]) for key in keys[1:]) / 1000
        assert 0.85 < estimated / measured < 1.25, (long, estimated, measured)


def test_the_record_of_recent_keys_is_bounded_by_bytes() -> None:
    clock = FakeClock()
    recent = Recent(max_keys=10_000, max_bytes=MIB)
    entry = asyncio.run(long_cache(clock).lookup(fleet(0), compute(0)))[0]
    for n in range(1_000):
        recent.keep_evicted((fleet(n), compute(n)), entry)
    assert recent.nbytes <= MIB
    assert len(recent) == MIB // (entry_bytes(entry) + TRACE_OVERHEAD + 1536)
    # The oldest went first; a taken entry gives its bytes back.
    assert recent.get((fleet(0), compute(0))) is None
    newest = recent.get((fleet(999), compute(999)))
    assert newest is not None
    before = recent.nbytes
    assert recent.take_evicted(newest) is entry
    assert recent.nbytes == before - entry_bytes(entry)


# --- the worst case, in a real broker's RSS -------------------------------------------------

# What the default budget lets the worst case add: the entries (40 MiB), the record of recent
# keys (10) and the memos (10), and allocator slack. docs/reference.md states it.
WORST_CASE_ADDED_MIB = 75


def percent_encoded(n: int, spelling: int) -> str:
    """Key n's path with as many characters percent-encoded as fit the 4 KiB target bound;
    which of the fleet id's characters stay plain depends on `spelling`."""
    name = compute(n)
    encode = "".join(f"%{ord(c):02X}" for c in name)
    room = (4096 - len(f"/fleets/{fleet(n)}/computes/{encode}/token")) // 2
    plain, rest = fleet(n)[:spelling], fleet(n)[spelling:]
    head = "".join(f"%{ord(c):02X}" for c in rest[:room])
    return f"/fleets/{plain}{head}{rest[room:]}/computes/{encode}/token"


async def fill(port: int, paths: list[str], connections: int = 16) -> dict[int, int]:
    """Ask for every path once over keep-alive connections; count the statuses."""
    todo = iter(paths)
    statuses: dict[int, int] = {}

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for path in todo:
                writer.write(
                    f"GET {path} HTTP/1.1\r\nHost: localhost\r\n"
                    "X-Token-Broker-Request: true\r\n\r\n".encode()
                )
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = re.search(rb"(?i)content-length: (\d+)", head)
                assert length is not None
                await reader.readexactly(int(length.group(1)))
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    async with asyncio.timeout(240):
        await asyncio.gather(*(worker() for _ in range(connections)))
    return statuses


def emulator_url(proc: subprocess.Popen[str]) -> str:
    assert proc.stderr is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if match := re.search(r"(http://127\.0\.0\.1:\d+)", line):
            # Its access log goes on: drained, so the pipe never blocks it.
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return match.group(1)
    raise AssertionError("the emulator did not say where it listens")


@pytest.fixture
def emulator_process() -> Iterator[str]:
    """The emulator in a process of its own, so the broker's RSS is the broker's alone."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.emulator", "--port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        yield emulator_url(proc)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()


@pytest.mark.timeout(300)
def test_ten_thousand_longest_keys_stay_within_the_stated_worst_case(
    emulator_process: str,
) -> None:
    aws = {
        "AWS_ENDPOINT_URL_GAMELIFT": emulator_process,
        "AWS_REGION": "us-west-2",
        "AWS_DEFAULT_REGION": "us-west-2",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
    }
    # The host's call budget lifted: 10,000 fetches at 5 a second would take half an hour.
    budget = {"TOKEN_BROKER_UPSTREAM_RATE": "1000000", "TOKEN_BROKER_UPSTREAM_BURST": "1000000"}
    with broker_process("--port", "0", **aws, **budget) as broker:
        port = int(broker.url().rsplit(":", 1)[1])
        broker.wait_for_line('"event": "ready"')
        before = rss_mib(broker.proc.pid)
        keys = 10_000
        plain = [f"/fleets/{fleet(n)}/computes/{compute(n)}/token" for n in range(keys)]
        assert asyncio.run(fill(port, plain)) == {200: keys}
        # The same keys spelt percent-encoded, up to 4 KiB a path, three ways each: every
        # spelling is a new path for the hit path's memo. The most recent keys, which the cache
        # still holds, so each is a hit, and the memo is what grows.
        encoded = [percent_encoded(n, s) for s in range(3) for n in range(keys - 3_000, keys)]
        assert all(len(path) <= 4096 for path in encoded)
        assert asyncio.run(fill(port, encoded)) == {200: len(encoded)}
        added = rss_mib(broker.proc.pid, "VmHWM") - before
    assert added <= WORST_CASE_ADDED_MIB, f"RSS {before:.0f} MiB + {added:.0f} MiB"
