"""Goals 1 to 3, the hit path, the cold burst and many keys, against references in the same run."""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import load
import wrk
from procs import (
    GUARD,
    Child,
    CpuMeter,
    Procs,
    configure_emulator,
    emulator_calls,
    get,
)

FLEET = "fleet-1"


@dataclass(frozen=True)
class Plan:
    duration: int  # seconds per wrk run
    rounds: int  # interleaved wrk rounds; medians are reported
    warmup: bool  # one unmeasured 1 s wrk run per server first
    burst: int  # goal 2: concurrent requests
    keys: int  # goal 3: distinct cached keys
    startup_trials: int  # goal 4
    processes: int  # goal 5: N
    upstream_latency: float  # goals 2 and 5: emulator latency, seconds
    wrk: str | None  # the wrk binary, or None to skip the wrk rows
    wrk_cpus: str | None  # taskset list for wrk when pinning


@dataclass
class Row:
    goal: str
    figure: str
    value: str
    reference: str = ""
    ratio: float | None = None
    target: str = "report"
    ok: bool | None = None  # None: reported, with no threshold (or skipped)
    skipped: bool = False


def key_path(index: int) -> str:
    return f"/fleets/{FLEET}/computes/c-{index:05d}/token"


def median(values: list[float]) -> float:
    return statistics.median(values)


class Bench:
    def __init__(self, procs: Procs, plan: Plan, workdir: Path) -> None:
        self.procs = procs
        self.plan = plan
        self.workdir = workdir
        self.notes: list[str] = []
        self.spec: Path | None = None  # the broker's hit answer, for the reference apps
        self.busy = 0.0  # the largest CPU share others took during a set of wrk rounds

    # --- wrk, interleaved -------------------------------------------------------------------

    def progress(self, message: str) -> None:
        # stderr, so stdout is the table alone.
        print(f"bench: {message}", file=sys.stderr, flush=True)

    def paths_file(self, name: str, paths: list[str]) -> Path:
        path = self.workdir / f"{name}.paths"
        path.write_text("\n".join(paths) + "\n")
        return path

    def wrk_rounds(self, targets: dict[str, tuple[str, Path]]) -> dict[str, list[wrk.WrkResult]]:
        """Run wrk on each target in turn, `rounds` times over (a, b, c, a, b, c, ...)."""
        assert self.plan.wrk is not None
        run = {"duration": self.plan.duration, "cpus": self.plan.wrk_cpus}
        if self.plan.warmup:
            for url, paths in targets.values():
                wrk.run(self.plan.wrk, url, paths, **{**run, "duration": 1})
        results: dict[str, list[wrk.WrkResult]] = {name: [] for name in targets}
        meter = CpuMeter(self.procs)
        for round_ in range(self.plan.rounds):
            for name, (url, paths) in targets.items():
                self.progress(f"wrk {name}, round {round_ + 1} of {self.plan.rounds}")
                results[name].append(wrk.run(self.plan.wrk, url, paths, **run))
        for name, runs in results.items():
            rps = ", ".join(f"{r.rps:,.0f}" for r in runs)
            p99 = ", ".join(f"{r.p99_ms:.1f}" for r in runs)
            self.notes.append(f"wrk rounds, {name}: rps {rps}; p99 ms {p99}")
        others, stolen = meter.others()
        self.busy = max(self.busy, others + stolen)
        self.notes.append(
            f"  meanwhile, other processes used {others:.0%} of the CPUs;"
            f" the host stole {stolen:.0%}"
        )
        return results

    def paired(
        self, runs: dict[str, list[wrk.WrkResult]], mine: str, reference: str, figure: str
    ) -> float:
        """The median of the per-round ratios. Runs of one round are seconds apart, so a slow
        spell of this shared host hits both sides of a pair: steadier than a ratio of medians."""
        ratios = [
            getattr(a, figure) / getattr(b, figure)
            for a, b in zip(runs[mine], runs[reference], strict=True)
        ]
        self.notes.append(
            f"  {mine} / {reference}, {figure} per round: " + ", ".join(f"{r:.2f}" for r in ratios)
        )
        return median(ratios)

    def skipped_wrk_rows(self, goal: str, figures: list[str]) -> list[Row]:
        return [Row(goal, f, "-", target="wrk missing", skipped=True) for f in figures]

    # --- goals 1 and 3: the hit path, against references, and with many keys -----------------

    def hit_path_and_keys(self, goals: set[str]) -> list[Row]:
        """Goals 1 and 3 share a broker: goal 3's one-key figure is goal 1's broker, warmed."""
        _, emulator = self.procs.emulator()
        broker, url = self.procs.broker(emulator)
        self.spec = self.workdir / "hit.json"
        self.spec.write_text(json.dumps(fetch_hit(url + key_path(0))))
        one_key = self.paths_file("one-key", [key_path(0)])
        rows = self.hit_path(url, one_key) if "1" in goals else []
        if "3" in goals:
            rows += self.many_keys(broker, url, emulator, one_key)
        return rows

    def hit_path(self, broker_url: str, one_key: Path) -> list[Row]:
        figures = ["hit throughput vs bare ASGI", "hit throughput vs plain FastAPI", "hit p99"]
        if self.plan.wrk is None:
            return self.skipped_wrk_rows("1", figures)
        assert self.spec is not None
        bare, bare_url = self.procs.reference("bare", self.spec)
        fastapi, fastapi_url = self.procs.reference("fastapi", self.spec)
        if fetch_hit(bare_url + key_path(0)) != json.loads(self.spec.read_text()):
            raise RuntimeError("the bare app does not answer what the broker answers")
        try:
            runs = self.wrk_rounds(
                {
                    "bare ASGI": (bare_url, one_key),
                    "plain FastAPI": (fastapi_url, one_key),
                    "broker hit": (broker_url, one_key),
                }
            )
        finally:
            bare.stop()
            fastapi.stop()
        rps = {name: median([r.rps for r in rs]) for name, rs in runs.items()}
        p99 = {name: median([r.p99_ms for r in rs]) for name, rs in runs.items()}
        broker_rps, broker_p99 = rps["broker hit"], p99["broker hit"]
        vs_bare = self.paired(runs, "broker hit", "bare ASGI", "rps")
        vs_fastapi = self.paired(runs, "broker hit", "plain FastAPI", "rps")
        p99_ratio = self.paired(runs, "broker hit", "bare ASGI", "p99_ms")
        return [
            Row("1", figures[0], f"{broker_rps:,.0f} rps", f"{rps['bare ASGI']:,.0f} rps",
                vs_bare, ">= 0.80", vs_bare >= 0.8),
            Row("1", figures[1], f"{broker_rps:,.0f} rps", f"{rps['plain FastAPI']:,.0f} rps",
                vs_fastapi, ">= 3.0", vs_fastapi >= 3.0),
            Row("1", figures[2] + " vs bare ASGI", f"{broker_p99:.2f} ms",
                f"{p99['bare ASGI']:.2f} ms", p99_ratio, "<= 2.0", p99_ratio <= 2.0),
            Row("1", "(plain FastAPI p99)", f"{p99['plain FastAPI']:.2f} ms"),
        ]  # fmt: skip

    def many_keys(self, broker: Child, url: str, emulator: str, one_key: Path) -> list[Row]:
        keys = self.plan.keys
        calls_before = emulator_calls(emulator)
        time.sleep(0.5)
        rss_before = broker.rss_mb()
        # Key 0 is cached already; the others are misses, each one upstream call.
        paths = [key_path(i) for i in range(1, keys)]
        host, port = host_port(url)
        self.progress(f"goal 3: filling {keys:,} keys")
        statuses = asyncio.run(load.fill(host, port, paths, connections=32, time_limit=300))
        if statuses != {200: keys - 1}:
            raise RuntimeError(f"filling {keys} keys: statuses {dict(statuses)}")
        entries = cache_entries(url)
        time.sleep(0.5)
        rss_after = broker.rss_mb()
        added = rss_after - rss_before
        budget = 25.0  # MB, for 10,000 keys
        self.notes.append(
            f"goal 3: {entries} keys cached per /metrics; {emulator_calls(emulator) - calls_before}"
            f" upstream calls to fill them; RSS {rss_before:.1f} -> {rss_after:.1f} MB"
        )
        rows = [
            Row("3", f"RSS added by {keys:,} keys", f"{added:.1f} MB",
                f"{rss_before:.1f} MB before", None, f"<= {budget:g} MB", added <= budget),
        ]  # fmt: skip
        figure = f"hit throughput, {keys:,} keys vs 1"
        if self.plan.wrk is None:
            return rows + self.skipped_wrk_rows("3", [figure])
        many = self.paths_file("many-keys", [key_path(i) for i in range(keys)])
        calls_before = emulator_calls(emulator)
        runs = self.wrk_rounds({"one key": (url, one_key), f"{keys:,} keys": (url, many)})
        refetched = emulator_calls(emulator) - calls_before
        if refetched:
            self.notes.append(
                f"goal 3: {refetched} upstream calls during the wrk runs (expected 0)"
            )
        one = median([r.rps for r in runs["one key"]])
        spread = median([r.rps for r in runs[f"{keys:,} keys"]])
        ratio = self.paired(runs, f"{keys:,} keys", "one key", "rps")
        return [
            *rows,
            Row("3", figure, f"{spread:,.0f} rps", f"{one:,.0f} rps", ratio, ">= 0.90",
                ratio >= 0.9),
        ]  # fmt: skip

    # --- goal 2: a cold burst on one key ------------------------------------------------------

    def cold_burst(self, emulator: str) -> list[Row]:
        latency = self.plan.upstream_latency
        _, url = self.procs.broker(emulator)
        # One other key first: the burst measures a new key on a running broker, not the
        # client's first-ever call (connection set-up, endpoint resolution).
        status, _ = get(url + "/fleets/fleet-1/computes/warm-up/token", GUARD)
        assert status == 200, status
        configure_emulator(emulator, latency=latency, reset_calls=True)
        host, port = host_port(url)
        path = "/fleets/fleet-1/computes/cold-burst/token"
        n = self.plan.burst
        self.progress(f"goal 2: {n:,} requests at once for one uncached key")
        results = asyncio.run(load.burst(host, port, path, n, time_limit=60))
        calls = emulator_calls(emulator)
        ok = sum(1 for status, _ in results if status == 200)
        seconds = [s for _, s in results]
        p50, p99 = load.percentile(seconds, 50) * 1000, load.percentile(seconds, 99) * 1000
        limit = latency * 1000 + 100
        self.notes.append(
            f"goal 2: latency ms p50 {p50:.0f}, p99 {p99:.0f}, max {max(seconds) * 1000:.0f}"
        )
        return [
            Row("2", f"cold burst ({n:,} at once): upstream calls", str(calls), "", None, "= 1",
                calls == 1),
            Row("2", "cold burst: answered 200", f"{ok:,}/{n:,}", "", None, "all", ok == n),
            Row("2", "cold burst p99", f"{p99:.0f} ms", f"upstream {latency * 1000:.0f} ms",
                p99 / (latency * 1000), f"<= {limit:.0f} ms", p99 <= limit),
        ]  # fmt: skip


# --- small helpers ----------------------------------------------------------------------------


def host_port(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def fetch_hit(url: str) -> dict[str, object]:
    """The broker's answer to a token request: its headers (bar date) and body, byte for byte."""
    request = urllib.request.Request(url, headers=GUARD)
    with urllib.request.urlopen(request, timeout=10) as answer:
        body = answer.read().decode()
        # Not date (uvicorn adds its own) nor connection: urllib asks for close, and uvicorn says
        # so in its answer; a bare app replaying that would close every keep-alive connection.
        added_by_uvicorn = {"date", "connection", "server"}
        headers = [
            [n.lower(), v] for n, v in answer.getheaders() if n.lower() not in added_by_uvicorn
        ]
    return {"headers": headers, "body": body}


def cache_entries(url: str) -> int:
    text = get(f"{url}/metrics")[1].decode()
    match = re.search(r"^token_broker_cache_entries (\S+)$", text, re.MULTILINE)
    return int(float(match.group(1))) if match else -1
