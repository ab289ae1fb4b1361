"""The broker's command line: parse arguments, load Settings, compose the parts, run uvicorn.

The one place that wires GameLift (or the emulator) to the HTTP layer. `service/__main__.py`
sends `exec` to the launcher before this module, and all it imports, is loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any, NoReturn

from pydantic import ValidationError

from service import __version__
from service.config import Settings, describe_error
from service.gamelift.client import GameLiftTokenSource, aws_session, emulator_session
from service.listen import bind_tcp, bind_unix, describe
from service.ops import logs, startup
from service.ops.metrics import EventHook
from service.ops.notify import Notifier
from service.ops.readiness import Readiness
from service.web.app import cache_policy, create_app
from service.web.guard import SecretFile
from service.web.server import BrokerServer, ops_config, uvicorn_config

PROG = "gamelift-token-broker"
log = logging.getLogger("service")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve Amazon GameLift compute auth tokens to local game servers, cached.",
        epilog=(
            "Settings come from TOKEN_BROKER_* environment variables; see docs/operations.md. "
            f"`{PROG} exec --help`: start a game server with its server parameters."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8787, help="TCP port (default 8787)")
    parser.add_argument("--uds", metavar="PATH", help="also listen on a unix socket (mode 0660)")
    parser.add_argument(
        "--uds-group",
        metavar="GROUP",
        help="group (name or id) to own the unix socket: the group game servers run in",
    )
    parser.add_argument(
        "--no-tcp", action="store_true", help="listen on the unix socket only (needs --uds)"
    )
    parser.add_argument(
        "--emulator",
        action="store_true",
        help="run against a local GameLift emulator instead of AWS (no account needed)",
    )
    parser.add_argument(
        "--openapi", action="store_true", help="print the OpenAPI document and exit"
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be 0-65535, got {args.port}")
    if (args.no_tcp or args.uds_group) and not args.uds:
        parser.error("--no-tcp and --uds-group need --uds PATH")
    return args


def openapi(settings: Settings) -> dict[str, Any]:
    """The app's OpenAPI document; building it opens no upstream."""

    def no_upstream(_hooks: list[EventHook]) -> NoReturn:
        raise AssertionError("the OpenAPI document needs no upstream")

    return create_app(settings, no_upstream).openapi()


def check_identity(settings: Settings) -> None:
    """Exit with one line if the caller identity cannot work: its extra or its JWKS file."""
    try:
        from service.identity.jwks import JwksFile
    except ImportError as exc:
        sys.exit(
            f"{PROG}: TOKEN_BROKER_KUBERNETES_AUDIENCE needs {exc.name}: install"
            " gamelift-token-broker[kubernetes]"
        )
    if settings.kubernetes_jwks_file is not None:
        try:
            JwksFile(settings.kubernetes_jwks_file)
        except ValueError as exc:
            sys.exit(f"{PROG}: invalid setting TOKEN_BROKER_KUBERNETES_JWKS_FILE: {exc}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        sys.exit(f"{PROG}: {describe_error(exc)}")
    if settings.auth_token_file is not None:
        try:  # the settings that need a file read; fail before anything starts
            SecretFile(settings.auth_token_file)
        except ValueError as exc:
            sys.exit(f"{PROG}: invalid setting TOKEN_BROKER_AUTH_TOKEN_FILE: {exc}")
    if settings.kubernetes_audience is not None:
        check_identity(settings)
    if args.openapi:
        print(json.dumps(openapi(settings), indent=2, sort_keys=True))
        return
    logs.configure(settings.log_level)

    with contextlib.ExitStack() as stack:
        session = emulator_session() if args.emulator else aws_session()
        endpoint_url: str | None = None
        if args.emulator:
            # Only the demo mode pays for importing it; the broker reaches it only over HTTP.
            from service.emulator.embedded import embedded_emulator

            endpoint_url = stack.enter_context(embedded_emulator())
        elif session.region_name is None:
            sys.exit(f"{PROG}: no AWS region: set AWS_REGION (or use --emulator to try it out)")

        try:
            sockets = [] if args.no_tcp else [bind_tcp(args.host, args.port)]
            if args.uds:
                sockets.append(bind_unix(args.uds, group=args.uds_group))
            ops_sockets = []
            if settings.ops_port is not None:
                ops_sockets.append(bind_tcp(settings.ops_host, settings.ops_port))
        except OSError as exc:
            sys.exit(f"{PROG}: cannot listen: {exc}")
        readiness = Readiness(Notifier.from_environ())

        @contextlib.asynccontextmanager
        async def upstream(hooks: list[EventHook]) -> AsyncIterator[GameLiftTokenSource]:
            async with GameLiftTokenSource.open(
                settings, session=session, endpoint_url=endpoint_url, event_hooks=hooks
            ) as source:
                facts = source.facts
                if args.emulator:
                    facts = dataclasses.replace(facts, endpoint_source="embedded emulator")
                startup.report(
                    version=__version__,
                    **dataclasses.asdict(facts),
                    # uvicorn names its address only when it binds itself; with --port 0 the
                    # line must.
                    listeners=[describe(sock) for sock in sockets],
                    ops_listener=describe(ops_sockets[0]) if ops_sockets else None,
                    cache=dataclasses.asdict(cache_policy(settings)),
                    prefetch=len(settings.prefetch_keys),
                    readiness=readiness,
                )
                yield source

        app = create_app(settings, upstream, readiness=readiness)
        server = BrokerServer(
            uvicorn_config(app, settings, host=args.host, port=args.port),
            readiness,
            drain_seconds=settings.drain_seconds,
            ops=(ops_config(app, settings), ops_sockets) if ops_sockets else None,
        )
        server.run(sockets=sockets)
        if not server.started:
            sys.exit(3)  # uvicorn has logged why the lifespan failed; exit as uvicorn.run does
