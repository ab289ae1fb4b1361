"""`python -m service.emulator`: the local GameLift emulator on its own."""

from __future__ import annotations

import argparse

import uvicorn

from service.emulator.app import FAULTS, Emulator


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m service.emulator", description="Run the local GameLift emulator."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--token-lifetime", type=float, default=3600.0, metavar="SECONDS")
    parser.add_argument("--latency", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--fault", choices=sorted(FAULTS))
    parser.add_argument("--region", default="us-west-2")
    args = parser.parse_args(argv)
    emulator = Emulator(
        token_lifetime=args.token_lifetime, latency=args.latency, region=args.region
    )
    emulator.set_fault(args.fault)
    uvicorn.run(emulator.app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
