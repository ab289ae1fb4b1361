"""Benchmark for issue 5: the broker against references measured side by side, in one table.

    python bench/run.py              # the full run (a few minutes); exit 1 if a goal is missed
    python bench/run.py --smoke      # a few seconds, tiny sizes, no thresholds; exit 0
    python bench/run.py --profile    # py-spy on the hit path under wrk load (add --native)

Every server is its own process on loopback; see bench/README.md for what each row measures.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import processes
import spy
import wrk
from goals import Bench, Plan, Row
from procs import BENCH, PYTHON, Procs, child_env

PACKAGES = ("uvicorn", "uvloop", "httptools", "fastapi", "starlette", "aioboto3")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, no thresholds, exit 0")
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run (3)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved wrk rounds (7)")
    parser.add_argument("--goals", default="1,2,3,4,5", help="which goals to run (1,2,3,4,5)")
    parser.add_argument("--wrk", help="the wrk binary (default: wrk on PATH)")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin every server to CPU 0 and wrk to CPU 1 (default: no pinning)",
    )
    parser.add_argument(
        "--broker",
        metavar="COMMAND",
        help="start the broker with COMMAND instead of `python -m service` (to try a change)",
    )
    parser.add_argument("--profile", action="store_true", help="profile the hit path with py-spy")
    parser.add_argument(
        "--native", action="store_true", help="with --profile: C frames too (slower sampling)"
    )
    return parser.parse_args()


def make_plan(args: argparse.Namespace, wrk_binary: str | None) -> Plan:
    wrk_cpus = "1" if args.pin else None
    if args.smoke:
        return Plan(
            duration=1, rounds=1, warmup=False, burst=20, keys=50, startup_trials=1,
            processes=3, upstream_latency=0.2, wrk=wrk_binary, wrk_cpus=wrk_cpus,
        )  # fmt: skip
    return Plan(
        duration=args.duration, rounds=args.rounds, warmup=True, burst=1000, keys=10_000,
        startup_trials=3, processes=50, upstream_latency=0.2, wrk=wrk_binary, wrk_cpus=wrk_cpus,
    )  # fmt: skip


def raise_open_files_limit() -> None:
    # A thousand client sockets here and as many in the broker, which inherits the limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def check_same_settings() -> list[str]:
    """Refuse to compare if the reference apps' uvicorn options drifted from the broker's."""
    out = subprocess.run(
        [PYTHON, str(BENCH / "apps.py"), "check"],
        capture_output=True, text=True, env=child_env(), timeout=60,
    )  # fmt: skip
    if out.returncode != 0:
        sys.exit(f"bench/apps.py SERVER_OPTIONS no longer match the broker's:\n{out.stdout}")
    return [line.removeprefix("note: ") for line in out.stdout.splitlines()]


def header(plan: Plan, args: argparse.Namespace, elapsed: float, load: float) -> list[str]:
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in PACKAGES)
    wrk_line = (
        f"{wrk.version(plan.wrk)}: -t2 -c64 -d{plan.duration}s, {plan.rounds} round(s) "
        "interleaved; values are medians, ratios the median of per-round ratios"
        if plan.wrk
        else "wrk: not found, wrk rows skipped (" + wrk.INSTALL_HINT + ")"
    )
    pinning = "servers on CPU 0, wrk on CPU 1" if args.pin else "none (the scheduler decides)"
    return [
        f"gamelift-token-broker benchmark{' (smoke)' if args.smoke else ''}, goals {args.goals}, "
        f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, took {elapsed:.0f} s",
        f"machine: {os.cpu_count()} cores, {platform.platform()}; pinning: {pinning}; load "
        f"average {load:.1f} at start",
        f"python {platform.python_version()} ({PYTHON}); {versions}",
        "servers: uvicorn, loop uvloop, http httptools, access log off, 1 worker, 1 process each;"
        f" broker: {args.broker or 'python -m service'} (git {git_head()})",
        wrk_line,
    ]


def git_head() -> str:
    out = subprocess.run(
        ["git", "-C", str(BENCH), "describe", "--always", "--dirty"],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    return out.stdout.strip() or "?"


def table(rows: list[Row], *, judged: bool) -> list[str]:
    cells = [["goal", "figure", "broker", "reference", "ratio", "target", "result"]]
    for row in rows:
        if row.skipped or row.ok is None:
            result = "skipped" if row.skipped else "info"
        elif not judged:
            result = "(smoke)"  # tiny sizes: the figures prove the harness works, nothing more
        else:
            result = "pass" if row.ok else "FAIL"
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}"
        cells.append([row.goal, row.figure, row.value, row.reference, ratio, row.target, result])
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    lines = [
        " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in cells
    ]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return lines


def run_goals(bench: Bench, goals: set[str]) -> list[Row]:
    rows = bench.hit_path_and_keys(goals) if goals & {"1", "3"} else []
    if goals & {"2", "4", "5"}:
        _, emulator = bench.procs.emulator()
        rows += bench.cold_burst(emulator) if "2" in goals else []
        rows += processes.startup(bench, emulator) if "4" in goals else []
        rows += processes.many_processes(bench, emulator) if "5" in goals else []
    return sorted(rows, key=lambda row: row.goal)  # stable: each goal's rows keep their order


def main() -> int:
    args = parse_args()
    started, load = time.monotonic(), os.getloadavg()[0]
    # SIGTERM (a CI timeout) unwinds like Ctrl-C, so the finally clauses stop every server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    raise_open_files_limit()
    wrk_binary = wrk.find(args.wrk)
    if wrk_binary is None and not args.smoke:
        sys.exit(f"bench: wrk not found; {wrk.INSTALL_HINT} (or run --smoke to skip wrk rows)")
    plan = make_plan(args, wrk_binary)
    setting_notes = check_same_settings()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        broker = shlex.split(args.broker) if args.broker else None
        with Procs(workdir, server_cpus="0" if args.pin else None, broker_command=broker) as procs:
            bench = Bench(procs, plan, workdir)
            if args.profile:
                return spy.profile_hit_path(bench, native=args.native)
            rows = run_goals(bench, set(args.goals.split(",")))
    elapsed = time.monotonic() - started
    table_lines = table(rows, judged=not args.smoke)
    print("\n".join([*header(plan, args, elapsed, load), *setting_notes, "", *table_lines, ""]))
    print("\n".join(bench.notes))
    if bench.busy > 0.1:
        print(
            f"warning: other work took up to {bench.busy:.0%} of the CPUs during wrk rounds;"
            " the wrk figures are noisy, rerun when the machine is idle"
        )
    if args.smoke:
        return 0
    return 0 if all(row.ok is not False for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
