"""The aioboto3 GameLift client, on the standard AWS configuration chain, as a TokenSource and
a ComputeDirectory."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from aioboto3 import Session
from aiobotocore.config import AioConfig

from service.computes.directory import ComputeRecord, Registration
from service.config import Settings
from service.gamelift.classify import classify, parse_compute, parse_token
from service.ops.metrics import EventHook
from service.tokens.token import Token

if TYPE_CHECKING:
    from types_aiobotocore_gamelift import GameLiftClient


def aws_session() -> Session:
    """A session on the standard AWS configuration chain, plus AWS_REGION.

    botocore reads only AWS_DEFAULT_REGION; every other AWS SDK, EKS and ECS use AWS_REGION.
    When it is set it wins, as it does in those SDKs; otherwise botocore's chain decides.
    """
    return Session(region_name=os.environ.get("AWS_REGION") or None)


def emulator_session() -> Session:
    """A session for the emulator: any credentials satisfy it, and these let a machine with no
    AWS ones sign."""
    return Session(
        aws_access_key_id="emulator",
        aws_secret_access_key="emulator",  # noqa: S106 - not a secret: the emulator takes any
        region_name="us-west-2",
    )


@dataclass(frozen=True)
class UpstreamFacts:
    """What the client was made with, for the start-up report; never a secret."""

    region: str
    endpoint: str
    # Where the endpoint came from: "default", "explicit", or the variable that set it.
    endpoint_source: str
    # botocore's name for the credential provider that answered ("env", "iam-role",
    # "custom-process", ...), or None when none did.
    credentials: str | None


class GameLiftTokenSource:
    """Calls GetComputeAuthToken (TokenSource), and DescribeCompute, RegisterCompute and
    DeregisterCompute (ComputeDirectory), through one long-lived aioboto3 client."""

    def __init__(self, client: GameLiftClient, facts: UpstreamFacts) -> None:
        self._client = client
        self.facts = facts

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        settings: Settings,
        *,
        session: Session | None = None,
        endpoint_url: str | None = None,
        event_hooks: list[EventHook] | None = None,
    ) -> AsyncIterator[GameLiftTokenSource]:
        # Region, credentials and AWS_ENDPOINT_URL_GAMELIFT all come from botocore's own chain.
        session = session or aws_session()
        # botocore logs whole response bodies at DEBUG, and ours hold tokens. Whatever level the
        # operator picks, botocore's loggers stop at INFO.
        for name in ("botocore", "aiobotocore"):
            logger = logging.getLogger(name)
            if logger.level < logging.INFO:  # NOTSET is 0: it would inherit the root's level
                logger.setLevel(logging.INFO)
        # AioConfig, not botocore's Config: aiobotocore turns a Config into an AioConfig with the
        # same defaults anyway, and its stubs (rightly) accept only the AioConfig.
        config = AioConfig(
            # botocore's default is "legacy" (5 attempts, no jitter); "standard" backs off with
            # jitter and shares a retry quota across all calls of this client. In a Config,
            # "max_attempts" counts retries after the first; "total_max_attempts" counts all.
            retries={"mode": "standard", "total_max_attempts": settings.upstream_max_attempts},
            connect_timeout=settings.upstream_connect_timeout_seconds,
            read_timeout=settings.upstream_read_timeout_seconds,
            # One connection per in-flight key at most; more would only queue at AWS anyway.
            max_pool_connections=min(settings.max_inflight, 100),
            user_agent_extra="gamelift-token-broker",
        )
        # Resolved here, at start-up, by botocore's own chain; the session keeps what it found,
        # so the client below signs with the same credentials without looking again.
        # aioboto3's get_credentials hands back aiobotocore's coroutine, though its stubs say
        # it returns the credentials themselves.
        pending = cast("Awaitable[Any]", session.get_credentials())
        credentials = await pending
        async with session.client("gamelift", config=config, endpoint_url=endpoint_url) as client:
            for event, handler in event_hooks or ():
                client.meta.events.register(event, handler)
            facts = UpstreamFacts(
                region=client.meta.region_name,
                endpoint=client.meta.endpoint_url,
                endpoint_source=_endpoint_source(endpoint_url),
                credentials=None if credentials is None else credentials.method,
            )
            yield cls(client, facts)

    async def fetch(self, fleet_id: str, compute_name: str) -> Token:
        response = await _classified(
            self._client.get_compute_auth_token, FleetId=fleet_id, ComputeName=compute_name
        )
        return parse_token(response, fleet_id, compute_name)

    async def describe(self, fleet_id: str, compute_name: str) -> ComputeRecord:
        response = await _classified(
            self._client.describe_compute, FleetId=fleet_id, ComputeName=compute_name
        )
        return parse_compute(response, fleet_id, compute_name)

    async def register(self, registration: Registration) -> ComputeRecord:
        optional = {
            "IpAddress": registration.ip_address,
            "DnsName": registration.dns_name,
            "Location": registration.location,
            "CertificatePath": registration.certificate_path,
        }
        response = await _classified(
            self._client.register_compute,
            FleetId=registration.fleet_id,
            ComputeName=registration.compute_name,
            **{name: value for name, value in optional.items() if value is not None},
        )
        return parse_compute(response, registration.fleet_id, registration.compute_name)

    async def deregister(self, fleet_id: str, compute_name: str) -> None:
        await _classified(
            self._client.deregister_compute, FleetId=fleet_id, ComputeName=compute_name
        )


async def _classified(call: Callable[..., Awaitable[Any]], **params: str) -> Mapping[str, Any]:
    """The call's answer; a botocore failure raised as its service.errors type."""
    try:
        response: Mapping[str, Any] = await call(**params)
    except Exception as exc:
        error = classify(exc)
        if error is None:
            raise
        raise error from exc
    return response


def _endpoint_source(explicit: str | None) -> str:
    if explicit is not None:
        return "explicit"
    # The same precedence as botocore's configured-endpoint lookup; a services section in the
    # shared config file is the one source it has that no variable names.
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() != "true":
        for name in ("AWS_ENDPOINT_URL_GAMELIFT", "AWS_ENDPOINT_URL"):
            if os.environ.get(name):
                return name
    return "default"
