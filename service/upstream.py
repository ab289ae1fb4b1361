"""The upstream: a Token, the TokenSource interface, and the aioboto3 GameLift source.

Every botocore failure is classified here, once, into the error types of service.errors.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import aioboto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from botocore.parsers import ResponseParserError
from botocore.retries.standard import RetryContext, ThrottledRetryableChecker

from service import errors
from service.config import Settings

AUTH_TOKEN_RE = re.compile(r"[a-zA-Z0-9-]{1,64}")
_MESSAGE_MAX = 200


@dataclass(frozen=True, slots=True)
class Token:
    """One GetComputeAuthToken answer, validated. Its repr never shows the secret."""

    fleet_id: str
    fleet_arn: str
    compute_name: str
    compute_arn: str
    auth_token: str = field(repr=False)
    expires_at: float  # epoch seconds; botocore hands back a local-time datetime, so we normalise


class TokenSource(Protocol):
    """Anything that can mint a token for (fleet, compute). The cache implements it too."""

    async def fetch(self, fleet_id: str, compute_name: str) -> Token: ...


# Hook for counting and timing each HTTP attempt (botocore event name, handler).
EventHook = tuple[str, Callable[..., Any]]


def aws_session() -> aioboto3.Session:
    """A session on the standard AWS configuration chain, plus AWS_REGION.

    botocore reads only AWS_DEFAULT_REGION; every other AWS SDK, EKS and ECS use AWS_REGION.
    When it is set it wins, as it does in those SDKs; otherwise botocore's chain decides.
    """
    return aioboto3.Session(region_name=os.environ.get("AWS_REGION") or None)


class GameLiftTokenSource:
    """Calls GetComputeAuthToken through one long-lived aioboto3 client."""

    def __init__(self, client: Any) -> None:
        self._client = client

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        settings: Settings,
        *,
        session: aioboto3.Session | None = None,
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
        config = Config(
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
        async with session.client("gamelift", config=config, endpoint_url=endpoint_url) as client:
            for event, handler in event_hooks or ():
                client.meta.events.register(event, handler)
            yield cls(client)

    async def fetch(self, fleet_id: str, compute_name: str) -> Token:
        try:
            response = await self._client.get_compute_auth_token(
                FleetId=fleet_id, ComputeName=compute_name
            )
        except ClientError as exc:
            raise classify_client_error(exc) from exc
        except (ConnectTimeoutError, ReadTimeoutError) as exc:
            raise errors.UpstreamTimeout("GameLift did not answer in time") from exc
        except (HTTPClientError, BotoConnectionError) as exc:
            raise errors.UpstreamUnavailable("cannot reach GameLift") from exc
        except (NoCredentialsError, CredentialRetrievalError) as exc:
            # Often transient (IMDS or the pod identity agent starting up), so 503, not 502.
            raise errors.UpstreamUnavailable(
                "no AWS credentials available", code="CredentialsUnavailable"
            ) from exc
        except ResponseParserError as exc:
            raise errors.UpstreamBadGateway("GameLift answered something unparseable") from exc
        except BotoCoreError as exc:
            raise errors.UpstreamBadGateway(f"GameLift call failed: {type(exc).__name__}") from exc
        except (ValueError, TypeError, AttributeError, RuntimeError, OverflowError) as exc:
            # botocore's parsers raise these, not ResponseParserError, for a bad timestamp or
            # a body of the wrong JSON type.
            raise errors.UpstreamBadGateway("GameLift answered something unparseable") from exc
        return parse_token(response, fleet_id, compute_name)


_throttle_checker = ThrottledRetryableChecker()


def is_throttling(response: dict[str, Any]) -> bool:
    """botocore's own list of throttling codes, so we agree with its retry logic."""
    context = RetryContext(attempt_number=1, parsed_response=response)
    return bool(_throttle_checker.is_retryable(context))


def classify_client_error(exc: ClientError) -> errors.UpstreamError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code") or "Unknown")
    message = f"GameLift: {code}: {str(error.get('Message') or '')[:_MESSAGE_MAX]}".rstrip(": ")
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    match code:
        case "InvalidRequestException":
            return errors.UpstreamInvalidRequest(message)
        case "UnauthorizedException" | "AccessDeniedException":
            return errors.UpstreamUnauthorized(message, code=code)
        case "NotFoundException":
            return errors.UpstreamNotFound(message)
        case "UnsupportedRegionException":
            return errors.UpstreamBadGateway(message, code=code)
        case "InternalServiceException":
            return errors.UpstreamUnavailable(message, code=code)
    if is_throttling(exc.response):
        return errors.UpstreamThrottled(message, code=code)
    if status >= 500:
        return errors.UpstreamUnavailable(message, code=code)
    # Signature, credential and model mismatches: nothing the caller can fix by asking again.
    return errors.UpstreamBadGateway(message, code=code)


def parse_token(response: dict[str, Any], fleet_id: str, compute_name: str) -> Token:
    """botocore does not raise on a garbage 200 body, so check the answer ourselves."""
    auth_token = response.get("AuthToken")
    expiration = response.get("ExpirationTimestamp")
    if not isinstance(auth_token, str) or not AUTH_TOKEN_RE.fullmatch(auth_token):
        raise errors.UpstreamBadGateway("GameLift answer has no valid AuthToken")
    if not isinstance(expiration, datetime):
        raise errors.UpstreamBadGateway("GameLift answer has no valid ExpirationTimestamp")
    return Token(
        fleet_id=str(response.get("FleetId") or fleet_id),
        fleet_arn=str(response.get("FleetArn") or ""),
        compute_name=str(response.get("ComputeName") or compute_name),
        compute_arn=str(response.get("ComputeArn") or ""),
        auth_token=auth_token,
        # .timestamp() is right whatever tzinfo botocore attached (it attaches tzlocal).
        expires_at=expiration.timestamp(),
    )
