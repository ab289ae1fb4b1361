"""Where a hit's time goes: py-spy samples the broker under wrk load, grouped by who pays."""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import wrk
from goals import Bench, fetch_hit, key_path
from procs import PYTHON

SECONDS = 10  # sampled; wrk runs 3 s longer on each side
RATE = 200  # samples a second
OUTPUT = Path("/tmp/bench-profile")

# Innermost match wins, so time in guard.check called from Front is the guard's.
CATEGORIES: list[tuple[str, re.Pattern[str]]] = [
    ("guard.check", re.compile(r"service/guard\.py")),
    ("metrics: counter inc", re.compile(r"prometheus_client/")),
    ("RequestRecorder.served (own code)", re.compile(r"service/observe\.py")),
    ("cache.peek + TLRU get", re.compile(r"service/cache\.py|cachetools/")),
    ("token_key + id validation", re.compile(r"token_key \(|service/config\.py")),
    ("wants_text", re.compile(r"service/routes\.py")),
    ("Front.__call__/_serve_hit (own code)", re.compile(r"service/front\.py")),
    ("FastAPI/Starlette (not a hit?)", re.compile(r"fastapi/|starlette/")),
    ("uvicorn: send() (headers, write)", re.compile(r"RequestResponseCycle\.send ")),
    ("uvicorn: run_asgi + task", re.compile(r"RequestResponseCycle\.run_asgi |run_asgi ")),
    ("uvicorn: httptools protocol", re.compile(r"uvicorn/protocols/")),
    ("uvicorn: other", re.compile(r"uvicorn/")),
]
NATIVE_CATEGORIES: list[tuple[str, re.Pattern[str]]] = [
    ("kernel: write() on the socket", re.compile(r"^(write|writev|send|sendmsg) \(libc")),
    ("kernel: read() on the socket", re.compile(r"^(read|recv|recvmsg) \(libc")),
    ("kernel: epoll", re.compile(r"^epoll_p?wait \(libc")),
    ("llhttp parsing", re.compile(r"llhttp")),
]
# Inclusive shares of these, whatever they call.
INCLUSIVE = [
    "HttpToolsProtocol.data_received",
    "HttpToolsProtocol.on_headers_complete",
    "RequestResponseCycle.run_asgi",
    "ProxyHeadersMiddleware.__call__",
    "Front.__call__",
    "Front._serve_hit",
    "RequestGuard.check",
    "RequestRecorder.served",
    "TokenCache.peek",
    "token_key",
    "_oversized",
    "RequestResponseCycle.send",
]


def profile_hit_path(bench: Bench, native: bool = False) -> int:
    spy = shutil.which("py-spy") or str(Path(PYTHON).with_name("py-spy"))
    if not Path(spy).exists() or bench.plan.wrk is None:
        print("profile needs py-spy (pip install py-spy) and wrk", file=sys.stderr)
        return 2
    _, emulator = bench.procs.emulator()
    broker, url = bench.procs.broker(emulator)
    fetch_hit(url + key_path(0))
    paths = bench.paths_file("one-key", [key_path(0)])
    OUTPUT.mkdir(exist_ok=True)
    raw = OUTPUT / f"hit-path{'-native' if native else ''}.txt"
    load = subprocess.Popen(
        [bench.plan.wrk, "-t2", "-c64", f"-d{SECONDS + 6}s", "-s", str(wrk.SCRIPT),
         *(a for h in wrk.HEADERS for a in ("-H", h)), url, "--", str(paths)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(3)
        command = [spy, "record", "--pid", str(broker.pid), "--duration", str(SECONDS),
                   "--rate", str(RATE), "--format", "raw", "--output", str(raw)]  # fmt: skip
        subprocess.run(command + (["--native"] if native else []), check=True, timeout=120,
                       capture_output=True)  # fmt: skip
        summary = load.communicate(timeout=60)[0]
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    rps = re.search(r"Requests/sec:\s+(\S+)", summary)
    print(f"wrk during the profile: {rps.group(1) if rps else '?'} rps (py-spy slows it)")
    print(f"raw stacks: {raw}")
    print("\n".join(report(raw, native)))
    return 0


def report(raw: Path, native: bool) -> list[str]:
    stacks: list[tuple[list[str], int]] = []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        stacks.append((frames, int(count)))
    total = sum(count for _, count in stacks)
    possible = SECONDS * RATE
    lines = [f"{total} samples with the main thread on CPU, of {possible} taken "
             f"({100 * total / possible:.0f}% busy)", "", "self time by who pays:"]  # fmt: skip
    categories = (NATIVE_CATEGORIES if native else []) + CATEGORIES
    by_category: collections.Counter[str] = collections.Counter()
    by_leaf: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        by_category[categorise(frames, categories)] += count
        by_leaf[leaf(frames)] += count
        names = {f.split(" (")[0] for f in frames}
        for name in INCLUSIVE:
            if name in names:
                inclusive[name] += count
    for name, count in by_category.most_common():
        lines.append(f"  {100 * count / total:5.1f}%  {name}")
    lines += ["", "inclusive (the function and all it calls):"]
    lines += [f"  {100 * inclusive[n] / total:5.1f}%  {n}" for n in INCLUSIVE]
    lines += ["", "top self frames:"]
    lines += [f"  {100 * c / total:5.1f}%  {name}" for name, c in by_leaf.most_common(15)]
    return lines


def categorise(frames: list[str], categories: list[tuple[str, re.Pattern[str]]]) -> str:
    for frame in reversed(frames):
        for name, pattern in categories:
            if pattern.search(frame):
                return name
    return "event loop: uvloop/C, no Python frame above Runner.run"


def leaf(frames: list[str]) -> str:
    """The innermost Python frame (native frames have no .py file)."""
    python = [f for f in frames if ".py)" in f or "<frozen" in f]
    return python[-1] if python else frames[-1]
