"""Running wrk against one server and reading its figures from wrk_paths.lua's summary line."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("wrk_paths.lua")
INSTALL_HINT = "install it with: apt-get update && apt-get install -y wrk"
# What every hit-path request carries: the guard header, and a local Host as a game server sends.
HEADERS = ("Host: localhost", "X-Token-Broker-Request: true")


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int


def find(explicit: str | None = None) -> str | None:
    return shutil.which(explicit or "wrk")


def version(binary: str) -> str:
    # `wrk -v` prints its banner and usage, and exits 1.
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
    return (out.stdout + out.stderr).split(" Copyright")[0].strip()


def run(
    binary: str,
    url: str,
    paths_file: Path,
    *,
    duration: int,
    threads: int = 2,
    connections: int = 64,
    cpus: str | None = None,
) -> WrkResult:
    argv = [
        binary,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "5s",
        "-s",
        str(SCRIPT),
        *(arg for header in HEADERS for arg in ("-H", header)),
        url,
        "--",
        str(paths_file),
    ]
    if cpus:
        argv = ["taskset", "-c", cpus, *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=True)
    line = next((x for x in out.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out.stdout}\n{out.stderr}")
    figures = json.loads(line.removeprefix("WRK_JSON "))
    errors = {
        k: figures[k] for k in ("connect", "read", "write", "status", "timeout") if figures[k]
    }
    if errors:
        # A run with refusals or socket errors measures something else than the hit path.
        raise RuntimeError(f"wrk against {url}: errors {errors} of {figures['requests']} requests")
    return WrkResult(
        rps=figures["requests"] / (figures["duration_us"] / 1e6),
        p50_ms=figures["p50_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        requests=figures["requests"],
    )
