"""`python -m service.emulator`: the local GameLift Anywhere emulator on its own."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import uvicorn

from service.emulator.app import Emulator
from service.emulator.faults import FAULTS
from service.emulator.ratelimit import AWS_LIMITS
from service.emulator.shapes import ACTIONS
from service.emulator.tls import TlsUnavailable, self_signed

PROG = "python -m service.emulator"


def _rate(text: str) -> tuple[str, float, float]:
    """ACTION=BURST/RATE, e.g. GetComputeAuthToken=2/1."""
    action, _, figures = text.partition("=")
    burst, _, rate = figures.partition("/")
    try:
        if action not in ACTIONS:
            raise ValueError
        return action, float(burst), float(rate)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected ACTION=BURST/RATE with ACTION one of {sorted(ACTIONS)}, got {text!r}"
        ) from None


def parser() -> argparse.ArgumentParser:
    aws = ", ".join(f"{a} {b:g}/{r:g}" for a, (b, r) in AWS_LIMITS.items())
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Run a local GameLift Anywhere: the control plane (AWS JSON 1.1) and the "
        "server SDK's websocket on one port, with /_emulator/state and /_emulator/config.",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    p.add_argument(
        "--port",
        type=int,
        default=8790,
        help="port to listen on, 0 for any free one (default: %(default)s)",
    )
    p.add_argument(
        "--region", default="us-west-2", help="region shown in ARNs (default: %(default)s)"
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="only --fleet fleets exist, and a compute only between its RegisterCompute and "
        "DeregisterCompute (default: lenient, where any well-formed fleet and compute exist "
        "on first use)",
    )
    p.add_argument(
        "--fleet",
        action="append",
        default=[],
        metavar="FLEET_ID",
        help="an Anywhere fleet that exists in strict mode (repeatable; default: none)",
    )
    p.add_argument(
        "--location",
        default="custom-local",
        help="each fleet's custom location (default: %(default)s)",
    )
    p.add_argument(
        "--token-lifetime",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="auth token lifetime (default: %(default)s)",
    )
    p.add_argument(
        "--no-token-reuse",
        dest="token_reuse",
        action="store_false",
        help="mint a new token on every GetComputeAuthToken (default: as GameLift, the same "
        "token until fewer than 15 minutes remain)",
    )
    p.add_argument(
        "--refresh-lead",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="push RefreshConnection this long before a socket's token expires (or halfway "
        "through a token shorter than twice this; default: %(default)s)",
    )
    p.add_argument(
        "--refresh-repeat",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="push the same RefreshConnection again this often until the process reconnects "
        "with its token (default: %(default)s)",
    )
    p.add_argument(
        "--rate-limits",
        choices=["off", "aws"],
        default="off",
        help=f"per-account token buckets, burst/rate per second; aws: {aws} (default: %(default)s)",
    )
    p.add_argument(
        "--rate-limit",
        action="append",
        default=[],
        type=_rate,
        metavar="ACTION=BURST/RATE",
        help="one action's bucket, applied after --rate-limits (repeatable; default: none)",
    )
    p.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="delay before each control-plane answer (default: %(default)s)",
    )
    p.add_argument(
        "--fault", choices=sorted(FAULTS), help="fault every --fault-action call (default: none)"
    )
    p.add_argument(
        "--fault-action",
        choices=sorted(ACTIONS),
        default="GetComputeAuthToken",
        metavar="ACTION",
        help="the action --fault applies to, one of %(choices)s (default: %(default)s)",
    )
    p.add_argument(
        "--fault-count",
        type=int,
        metavar="N",
        help="fault only the next N calls (with --fault; default: every call)",
    )
    p.add_argument(
        "--tls",
        action="store_true",
        help="serve the API and the websocket over TLS with a self-signed certificate made at "
        "start-up, and print its path (needs the [tls] extra; default: plain HTTP and ws://)",
    )
    p.add_argument(
        "--tls-dir",
        type=Path,
        metavar="DIR",
        help="where --tls writes cert.pem and key.pem (default: a new temporary directory)",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.strict and not args.fleet:
        sys.exit(f"{PROG}: --strict needs at least one --fleet FLEET_ID")
    emulator = Emulator(
        token_lifetime=args.token_lifetime,
        latency=args.latency,
        region=args.region,
        strict=args.strict,
        fleets=args.fleet,
        location=args.location,
        token_reuse=args.token_reuse,
        refresh_lead=args.refresh_lead,
        refresh_repeat=args.refresh_repeat,
        rate_limits=args.rate_limits,
    )
    try:
        for action, burst, rate in args.rate_limit:
            emulator.limits.set(action, burst, rate)
        emulator.set_fault(args.fault, args.fault_count, args.fault_action)
    except ValueError as exc:
        sys.exit(f"{PROG}: {exc}")
    ssl: dict[str, Any] = {}
    if args.tls:
        directory = args.tls_dir or Path(tempfile.mkdtemp(prefix="gamelift-emulator-"))
        try:
            cert, key = self_signed(directory, [args.host])
        except TlsUnavailable as exc:
            sys.exit(f"{PROG}: {exc}")
        print(f"TLS certificate: {cert}", file=sys.stderr, flush=True)
        ssl = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    uvicorn.run(emulator.app, host=args.host, port=args.port, log_level="info", **ssl)


if __name__ == "__main__":
    main()
