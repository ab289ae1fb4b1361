"""Goals 4 and 5 measure whole processes: the broker's start-up and memory, and N game servers."""

from __future__ import annotations

import json
import time
from pathlib import Path

from goals import FLEET, Bench, Row, median
from procs import (
    BROKER_ADDRESS,
    PYTHON,
    Procs,
    aws_env,
    child_env,
    configure_emulator,
    emulator_calls,
    wait_ok,
)

# A game server's launch script, with the broker: one GET, as the README's examples do.
VIA_BROKER = """
import json, sys, urllib.request
request = urllib.request.Request(sys.argv[1], headers={"X-Token-Broker-Request": "true"})
with urllib.request.urlopen(request, timeout=60) as answer:
    assert json.load(answer)["AuthToken"]
"""

# The same game server without the broker: its own aioboto3 session, client and call.
DIRECT = """
import asyncio, sys, aioboto3
async def main():
    async with aioboto3.Session().client("gamelift") as gamelift:
        answer = await gamelift.get_compute_auth_token(FleetId=sys.argv[1], ComputeName=sys.argv[2])
    assert answer["AuthToken"]
asyncio.run(main())
"""


def startup(bench: Bench, emulator: str) -> list[Row]:
    """Goal 4: spawn to the first 200 on /readyz, and RSS a second later; the bare app as floor."""
    # What the bare app answers does not matter here.
    spec = bench.workdir / "startup.json"
    spec.write_text(json.dumps({"headers": [["content-length", "2"]], "body": "{}"}))
    times: dict[str, list[float]] = {"broker": [], "bare": []}
    rss: dict[str, list[float]] = {"broker": [], "bare": []}
    env = child_env(**aws_env(emulator))
    argv = {
        "broker": ([*bench.procs.broker_command, "--port", "0"], "/readyz", env),
        "bare": ([PYTHON, str(Path(__file__).with_name("apps.py")), "bare", str(spec)],
                 "/", None),
    }  # fmt: skip
    bench.progress(f"goal 4: {bench.plan.startup_trials} start-up trials")
    for _ in range(bench.plan.startup_trials):
        for name, (command, probe, child_environment) in argv.items():
            started = time.perf_counter()
            child = bench.procs.server(name, command, child_environment)
            try:
                url = child.wait_for_line(BROKER_ADDRESS).group(1)
                ready = wait_ok(url + probe, child, timeout=30)
                times[name].append(ready - started)
                time.sleep(1.0)  # idle: no request since the first 200
                rss[name].append(child.rss_mb())
            finally:
                child.stop()
    start, start_ref = median(times["broker"]), median(times["bare"])
    idle, idle_ref = median(rss["broker"]), median(rss["bare"])
    bench.notes.append(
        "goal 4: start-up s "
        + ", ".join(f"{t:.2f}" for t in times["broker"])
        + "; bare ASGI "
        + ", ".join(f"{t:.2f}" for t in times["bare"])
    )
    return [
        Row("4", "start-up to first 200 on /readyz", f"{start:.2f} s",
            f"bare ASGI {start_ref:.2f} s", start / start_ref, "<= 2 s", start <= 2.0),
        Row("4", "idle RSS after start-up", f"{idle:.1f} MB", f"bare ASGI {idle_ref:.1f} MB",
            idle / idle_ref, "<= 90 MB", idle <= 90.0),
    ]  # fmt: skip


def many_processes(bench: Bench, emulator: str) -> list[Row]:
    """Goal 5: N game servers started at once, asking the broker, then each calling GameLift."""
    n = bench.plan.processes
    bench.progress(f"goal 5: {n} game servers via the broker, then {n} calling GameLift directly")
    _, url = bench.procs.broker(emulator)  # fresh: the key is not cached yet
    token_url = f"{url}/fleets/{FLEET}/computes/host-1/token"
    configure_emulator(emulator, latency=bench.plan.upstream_latency, reset_calls=True)
    via_broker = run_all(bench.procs, n, [PYTHON, "-c", VIA_BROKER, token_url], child_env())
    broker_calls = emulator_calls(emulator)
    configure_emulator(emulator, reset_calls=True)
    direct_env = child_env(**aws_env(emulator))
    direct = run_all(bench.procs, n, [PYTHON, "-c", DIRECT, FLEET, "host-1"], direct_env)
    direct_calls = emulator_calls(emulator)
    return [
        Row("5", f"{n} game servers: wall time", f"{via_broker:.2f} s",
            f"direct aioboto3 {direct:.2f} s", via_broker / direct),
        Row("5", f"{n} game servers: upstream calls", str(broker_calls),
            f"direct aioboto3 {direct_calls}", broker_calls / max(direct_calls, 1)),
    ]  # fmt: skip


def run_all(procs: Procs, n: int, argv: list[str], env: dict[str, str]) -> float:
    """Start n copies at once; the wall time until the last exits. All must succeed."""
    started = time.perf_counter()
    children = [procs.spawn("game-server", argv, env) for _ in range(n)]
    deadline = started + 300
    for child in children:
        child.popen.wait(max(0.0, deadline - time.perf_counter()))
    wall = time.perf_counter() - started
    failed = [c for c in children if c.popen.returncode != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} of {n} game servers failed:\n{failed[0].tail()}")
    return wall
