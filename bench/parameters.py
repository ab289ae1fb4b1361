"""Report-only figures for issue 11: the server-parameters call on a hit against the token
route's hit (same broker, interleaved rounds), and registration at start-up (process start to
/readyz 200 with TOKEN_BROKER_REGISTER, against a strict emulator). No thresholds.

    python bench/parameters.py [--rounds 3] [--duration 3] [--starts 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import wrk
from procs import PYTHON, UVICORN_ADDRESS, Procs, aws_env, child_env, wait_ok

FLEET = "fleet-1234"
COMPUTE = "host-1"


def hit_paths(procs: Procs, workdir: Path, rounds: int, duration: int, binary: str) -> None:
    _, emulator = procs.emulator()
    _, broker = procs.broker(emulator, TOKEN_BROKER_PREFETCH=f"{FLEET}/{COMPUTE}")
    paths = {}
    for name, suffix in (("token", "token"), ("server-parameters", "server-parameters")):
        path = workdir / f"{name}.paths"
        path.write_text(f"/fleets/{FLEET}/computes/{COMPUTE}/{suffix}\n")
        paths[name] = path
    # One call each first: the endpoint is described once, then both are hits.
    for path in paths.values():
        wrk.run(binary, broker, path, duration=1, connections=4)
    results: dict[str, list[wrk.WrkResult]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, path in paths.items():
            results[name].append(wrk.run(binary, broker, path, duration=duration))
    sequential(broker, paths)
    print(f"hit path, wrk -t2 -c64, {rounds} interleaved rounds of {duration} s, medians:")
    token_rps = statistics.median(r.rps for r in results["token"])
    for name, runs in results.items():
        rps = statistics.median(r.rps for r in runs)
        p50 = statistics.median(r.p50_ms for r in runs)
        p99 = statistics.median(r.p99_ms for r in runs)
        print(
            f"  {name:18} {rps:9.0f} rps  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms"
            f"  ({rps / token_rps:.2f} of the token route)"
        )


def sequential(broker: str, paths: dict[str, Path], calls: int = 300) -> None:
    """One caller, one keep-alive connection, one call at a time: what a launching game server
    sees. Interleaved call by call, so both routes meet the same load."""
    import http.client

    host, port = broker.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = dict(header.split(": ", 1) for header in wrk.HEADERS)
    targets = {name: path.read_text().strip() for name, path in paths.items()}
    took: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(calls):
        for name, target in targets.items():
            started = time.perf_counter()
            connection.request("GET", target, headers=headers)
            answer = connection.getresponse()
            answer.read()
            took[name].append((time.perf_counter() - started) * 1000)
            assert answer.status == 200, (name, answer.status)
    connection.close()
    print(f"one caller, {calls} calls each, interleaved: median / p99 latency")
    for name, runs in took.items():
        runs.sort()
        print(
            f"  {name:18} {statistics.median(runs):6.2f} ms / {runs[int(len(runs) * 0.99)]:6.2f} ms"
        )


def registration_start(procs: Procs, starts: int) -> None:
    argv = [PYTHON, "-m", "service.emulator", "--port", "0", "--strict", "--fleet", FLEET]
    emulator = procs.server("emulator-strict", argv).wait_for_line(UVICORN_ADDRESS).group(1)
    times: dict[str, list[float]] = {"register": [], "reference": []}
    for index in range(starts):
        # Interleaved: the reference is the same broker with nothing to register or prefetch.
        for kind in times:
            settings = {"TOKEN_BROKER_OPS_PORT": str(18_800 + index)}
            if kind == "register":
                settings |= {
                    "TOKEN_BROKER_REGISTER": f"{FLEET}/start-{index}",
                    "TOKEN_BROKER_REGISTER_IP_ADDRESS": "127.0.0.1",
                    "TOKEN_BROKER_REGISTER_LOCATION": "custom-local",
                    "TOKEN_BROKER_PREFETCH_JITTER_SECONDS": "0",
                }
            started = time.perf_counter()
            child = procs.spawn(
                f"broker-{kind}",
                [PYTHON, "-m", "service", "--port", "0"],
                child_env(**aws_env(emulator), **settings),
            )
            ready = wait_ok(f"http://127.0.0.1:{18_800 + index}/readyz", child, timeout=60)
            times[kind].append(ready - started)
            child.stop()
    print(f"process start to /readyz 200, {starts} starts each, medians (min-max):")
    for kind, label in (("register", "TOKEN_BROKER_REGISTER"), ("reference", "nothing to do")):
        runs = [t * 1000 for t in times[kind]]
        print(f"  {label:22} {statistics.median(runs):6.0f} ms ({min(runs):.0f}-{max(runs):.0f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=3)
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()
    binary = wrk.find()
    if binary is None:
        sys.exit(f"no wrk: {wrk.INSTALL_HINT}")
    with tempfile.TemporaryDirectory() as tmp, Procs(Path(tmp)) as procs:
        hit_paths(procs, Path(tmp), args.rounds, args.duration, binary)
        registration_start(procs, args.starts)


if __name__ == "__main__":
    main()
