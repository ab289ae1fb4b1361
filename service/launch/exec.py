"""`gamelift-token-broker exec`: get the server parameters from the broker, then become COMMAND.

Fails closed: unless every value came back well formed, COMMAND never starts, and the one line
on stderr says why. The token travels only in COMMAND's environment, never on a command line.
"""

from __future__ import annotations

import argparse
import os
import sys

from service import names
from service.launch import client, params

PROG = "gamelift-token-broker exec"
# Exit codes, from sysexits.h where one fits, so a supervisor can tell the causes apart.
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: the broker stayed down or 503 until --timeout
EXIT_BAD_ANSWER = 76  # EX_PROTOCOL: a 200 that is not the five values
EXIT_REFUSED = 77  # EX_NOPERM: 400, 401, 403, 404, 502
EXIT_NOT_FOUND = 127  # COMMAND not found, as a shell says it
EXIT_CANNOT_RUN = 126  # COMMAND found but not executable
DEFAULT_TIMEOUT = 60.0


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=f"{PROG} --fleet-id F --compute-name C [--url URL | --uds PATH]"
        " [--auth-token-file FILE] [--timeout SECONDS] -- COMMAND [ARGS...]",
        description="Ask a running broker for the server parameters of a compute, then run "
        "COMMAND in this process with GAMELIFT_SDK_WEBSOCKET_URL, _AUTH_TOKEN, _FLEET_ID, "
        "_HOST_ID and _PROCESS_ID set, for InitSDK() to read. COMMAND never starts without "
        "all five.",
    )
    parser.add_argument("--fleet-id", required=True)
    parser.add_argument("--compute-name", required=True, help="the compute (GameLift HostId)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--url", help=f"the broker's URL (default {client.DEFAULT_URL})")
    where.add_argument("--uds", metavar="PATH", help="the broker's unix socket instead")
    parser.add_argument(
        "--auth-token-file",
        metavar="FILE",
        help="file holding the broker's caller secret (sent as Authorization: Bearer)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to retry an unavailable broker (default {DEFAULT_TIMEOUT:g})",
    )
    # COMMAND's own options must not be taken for ours: everything after `--` is COMMAND.
    if "--" not in argv:
        options, command = argv, []
    else:
        split = argv.index("--")
        options, command = argv[:split], argv[split + 1 :]
    args = parser.parse_args(options)
    if not command:
        parser.error("no COMMAND: put it after --")
    if not names.is_valid_fleet_id(args.fleet_id):
        parser.error(f"--fleet-id {args.fleet_id!r} is not a fleet id (fleet-...)")
    if not names.is_valid_compute_name(args.compute_name):
        parser.error(f"--compute-name {args.compute_name!r} is not a GameLift compute name")
    if not 0 <= args.timeout < float("inf"):
        parser.error(f"--timeout must be 0 or more seconds, got {args.timeout:g}")
    return args, command


def main(argv: list[str]) -> int:
    """Never returns when COMMAND starts; otherwise the exit code, with one line said."""
    args, command = parse_args(argv)
    try:
        broker = client.Broker(args.url, args.uds, args.auth_token_file)
    except ValueError as exc:
        return _fail(EXIT_USAGE, str(exc))
    path = client.server_parameters_path(args.fleet_id, args.compute_name)
    try:
        answer = client.fetch(broker, path, timeout=args.timeout)
        variables = params.environment(answer, args.fleet_id, args.compute_name)
    except client.Unavailable as exc:
        return _fail(EXIT_UNAVAILABLE, str(exc))
    except client.Refused as exc:
        return _fail(EXIT_REFUSED, str(exc))
    except client.LaunchError as exc:  # BadAnswer, or an unreadable secret file
        return _fail(EXIT_BAD_ANSWER if isinstance(exc, client.BadAnswer) else EXIT_USAGE, str(exc))
    env = dict(os.environ)
    env.update(variables)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        # No shell, on purpose: COMMAND's words reach it exactly as given.
        os.execvpe(command[0], command, env)  # noqa: S606
    except FileNotFoundError:
        return _fail(EXIT_NOT_FOUND, f"COMMAND not found: {command[0]}")
    except OSError as exc:
        return _fail(EXIT_CANNOT_RUN, f"cannot run {command[0]}: {exc.strerror or exc}")


def _fail(code: int, message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code
