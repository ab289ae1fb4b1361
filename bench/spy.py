"""Where a hit's time goes: py-spy samples the broker, then the bare app, under the same wrk load.

Each category is CPU microseconds per request (samples / rate / requests served meanwhile), so
the two columns say what the broker spends that the bare app does not.
"""

from __future__ import annotations

import collections
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import wrk
from goals import Bench, fetch_hit, key_path
from procs import PYTHON

SECONDS = 10  # sampled, while wrk runs 3 s before and after
RATE = 200  # samples a second
OUTPUT = Path("/tmp/bench-profile")

# Innermost match wins, so time in guard.check called from Front is the guard's.
CATEGORIES: list[tuple[str, re.Pattern[str]]] = [
    ("kernel: write() on the socket", re.compile(r"^(write|writev|send|sendmsg) \(libc")),
    ("kernel: read() on the socket", re.compile(r"^(read|recv|recvmsg) \(libc")),
    ("kernel: epoll", re.compile(r"^epoll_p?wait \(libc")),
    ("llhttp parsing (C)", re.compile(r"llhttp")),
    ("guard.check", re.compile(r"service/web/guard\.py")),
    ("metrics / recorder", re.compile(r"prometheus_client/|service/ops/")),
    ("cache.peek + TLRU get", re.compile(r"service/tokens/cache\.py|cachetools/")),
    ("token_key + id validation", re.compile(r"token_key \(|service/names\.py")),
    ("wants_text", re.compile(r"service/web/answers\.py")),
    ("bounds: oversized", re.compile(r"service/web/bounds\.py")),
    ("Front.__call__ (own code)", re.compile(r"service/web/front\.py")),
    ("FastAPI/Starlette (should be 0 on hits)", re.compile(r"fastapi/|starlette/")),
    ("the bare app itself", re.compile(r"bench/apps\.py")),
    ("service/web/protocol.py (head bound)", re.compile(r"service/web/protocol\.py")),
    ("uvicorn: send() (headers, transport.write)", re.compile(r"RequestResponseCycle\.send ")),
    ("uvicorn: run_asgi + task", re.compile(r"RequestResponseCycle\.run_asgi |run_asgi ")),
    ("uvicorn: httptools protocol callbacks", re.compile(r"uvicorn/protocols/")),
    ("uvicorn: other", re.compile(r"uvicorn/")),
]
LOOP = "event loop: uvloop (C), no Python frame"


@dataclass
class Profile:
    rps: float
    per_request: dict[str, float]  # category -> CPU µs per request
    leaves: collections.Counter[str]  # innermost Python frame -> samples
    raw: Path


def profile_hit_path(bench: Bench, native: bool = False) -> int:
    spy = shutil.which("py-spy") or str(Path(PYTHON).with_name("py-spy"))
    if not Path(spy).exists() or bench.plan.wrk is None:
        print("--profile needs py-spy (pip install py-spy) and wrk", file=sys.stderr)
        return 2
    _, emulator = bench.procs.emulator()
    broker, url = bench.procs.broker(emulator)
    spec = bench.workdir / "hit.json"
    spec.write_text(json.dumps(fetch_hit(url + key_path(0))))
    bare, bare_url = bench.procs.reference("bare", spec)
    paths = bench.paths_file("one-key", [key_path(0)])
    OUTPUT.mkdir(exist_ok=True)
    suffix = "-native" if native else ""
    profiles = {
        "broker": sample(
            spy, bench, broker.pid, url, paths, OUTPUT / f"broker{suffix}.txt", native
        ),
        "bare": sample(spy, bench, bare.pid, bare_url, paths, OUTPUT / f"bare{suffix}.txt", native),
    }
    print("\n".join(report(profiles)))
    return 0


def sample(
    spy: str, bench: Bench, pid: int, url: str, paths: Path, raw: Path, native: bool
) -> Profile:
    assert bench.plan.wrk is not None
    load = subprocess.Popen(
        [bench.plan.wrk, "-t2", "-c64", f"-d{SECONDS + 6}s", "-s", str(wrk.SCRIPT),
         *(a for h in wrk.HEADERS for a in ("-H", h)), url, "--", str(paths)],
        stdout=subprocess.PIPE, text=True, cwd=bench.workdir,
    )  # fmt: skip
    try:
        time.sleep(3)
        command = [spy, "record", "--pid", str(pid), "--duration", str(SECONDS),
                   "--rate", str(RATE), "--format", "raw", "--output", str(raw)]  # fmt: skip
        subprocess.run(command + (["--native"] if native else []), check=True, timeout=120,
                       capture_output=True)  # fmt: skip
        summary = load.communicate(timeout=60)[0]
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    figures = json.loads(summary.split("WRK_JSON ", 1)[1].splitlines()[0])
    rps = figures["requests"] / (figures["duration_us"] / 1e6)
    served = rps * SECONDS  # requests served while py-spy sampled
    per_request: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        per_request[categorise(frames)] += int(count) / RATE / served * 1e6
        leaves[leaf(frames)] += int(count)
    return Profile(rps, dict(per_request), leaves, raw)


def report(profiles: dict[str, Profile]) -> list[str]:
    broker, bare = profiles["broker"], profiles["bare"]
    lines = [
        f"py-spy at {RATE} Hz for {SECONDS} s each, under wrk -t2 -c64 (py-spy slows both):",
        f"  broker {broker.rps:,.0f} rps ({broker.raw}), bare {bare.rps:,.0f} rps ({bare.raw})",
        "",
        f"{'CPU µs per request, main thread':46} {'broker':>8} {'bare':>8}",
    ]
    names = sorted(
        broker.per_request.keys() | bare.per_request.keys(),
        key=lambda n: -broker.per_request.get(n, 0.0),
    )
    for name in names:
        mine, theirs = broker.per_request.get(name, 0.0), bare.per_request.get(name, 0.0)
        lines.append(f"  {name:44} {mine:8.1f} {theirs:8.1f}")
    total_mine, total_theirs = sum(broker.per_request.values()), sum(bare.per_request.values())
    lines.append(f"  {'total on CPU':44} {total_mine:8.1f} {total_theirs:8.1f}")
    lines += ["", "broker, top innermost Python frames (share of samples):"]
    samples = sum(broker.leaves.values())
    lines += [f"  {100 * c / samples:5.1f}%  {n}" for n, c in broker.leaves.most_common(15)]
    return lines


def categorise(frames: list[str]) -> str:
    # Frames outside the event loop (uvicorn.run, the CLI) are everyone's ancestors: skip them.
    outer = max((i for i, f in enumerate(frames) if f.startswith("Runner.run (")), default=-1)
    for frame in reversed(frames[outer + 1 :]):
        for name, pattern in CATEGORIES:
            if pattern.search(frame):
                return name
    return LOOP


def leaf(frames: list[str]) -> str:
    """The innermost Python frame (native frames name a .c file or a library)."""
    python = [f for f in frames if ".py)" in f or "<frozen" in f]
    return python[-1] if python else frames[-1]
