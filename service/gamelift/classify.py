"""Every botocore failure and every GameLift answer classified once, into service.errors types."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

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

# A private module of botocore's (its standard retry mode); pyproject.toml bounds the version.
from botocore.retries.standard import RetryContext, ThrottledRetryableChecker

from service import errors
from service.computes.directory import ComputeRecord
from service.names import AUTH_TOKEN_RE, is_valid_sdk_endpoint
from service.tokens.token import Token

_MESSAGE_MAX = 200
_throttle_checker = ThrottledRetryableChecker()


def classify(exc: Exception) -> errors.UpstreamError | None:
    """What a failed GameLift call means for the caller; None for what is not botocore's."""
    if isinstance(exc, ClientError):
        return classify_client_error(exc)
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
        return errors.UpstreamTimeout("GameLift did not answer in time")
    if isinstance(exc, HTTPClientError | BotoConnectionError):
        # EndpointConnectionError is a ConnectionError, not an HTTPClientError.
        return errors.UpstreamUnavailable("cannot reach GameLift")
    if isinstance(exc, NoCredentialsError | CredentialRetrievalError):
        # Often transient (IMDS or the pod identity agent starting up), so 503, not 502.
        return errors.UpstreamUnavailable(
            "no AWS credentials available", code="CredentialsUnavailable"
        )
    if isinstance(exc, ResponseParserError):
        return errors.UpstreamBadGateway("GameLift answered something unparseable")
    if isinstance(exc, BotoCoreError):
        return errors.UpstreamBadGateway(f"GameLift call failed: {type(exc).__name__}")
    if isinstance(exc, ValueError | TypeError | AttributeError | RuntimeError | OverflowError):
        # botocore's parsers raise these, not ResponseParserError, for a bad timestamp or a
        # body of the wrong JSON type.
        return errors.UpstreamBadGateway("GameLift answered something unparseable")
    return None


def is_throttling(response: dict[str, Any]) -> bool:
    """botocore's own list of throttling codes, so we agree with its retry logic."""
    context = RetryContext(attempt_number=1, parsed_response=response)
    return bool(_throttle_checker.is_retryable(context))


def classify_client_error(exc: ClientError) -> errors.UpstreamError:
    error: dict[str, Any] = dict(exc.response.get("Error") or {})
    code = str(error.get("Code") or "Unknown")
    message = f"GameLift: {code}: {str(error.get('Message') or '')[:_MESSAGE_MAX]}".rstrip(": ")
    metadata: dict[str, Any] = dict(exc.response.get("ResponseMetadata") or {})
    status = int(metadata.get("HTTPStatusCode") or 0)
    match code:
        case "InvalidRequestException":
            return errors.UpstreamInvalidRequest(message)
        case "UnauthorizedException" | "AccessDeniedException":
            return errors.UpstreamUnauthorized(message, code=code)
        case "NotFoundException":
            return errors.UpstreamNotFound(message)
        case "UnsupportedRegionException":
            return errors.UpstreamBadGateway(message, code=code)
        case "InternalServiceException" | "NotReadyException":
            # NotReady (RegisterCompute): the fleet is still being made; it will be.
            return errors.UpstreamUnavailable(message, code=code)
        case "ConflictException":
            return errors.UpstreamConflict(message)
    if is_throttling(dict(exc.response)):
        return errors.UpstreamThrottled(message, code=code)
    if status >= 500:
        return errors.UpstreamUnavailable(message, code=code)
    # Signature, credential and model mismatches: nothing the caller can fix by asking again.
    return errors.UpstreamBadGateway(message, code=code)


def parse_token(answer: Mapping[str, object], fleet_id: str, compute_name: str) -> Token:
    """botocore does not raise on a garbage 200 body, so check the answer ourselves."""
    # The stubs type the answer GameLift's model promises; botocore's parser does not enforce it
    # (a key can be missing, a value of another JSON type), so every field is read as unchecked.
    auth_token = answer.get("AuthToken")
    expiration = answer.get("ExpirationTimestamp")
    if not isinstance(auth_token, str) or not AUTH_TOKEN_RE.fullmatch(auth_token):
        raise errors.UpstreamBadGateway("GameLift answer has no valid AuthToken")
    if not isinstance(expiration, datetime):
        raise errors.UpstreamBadGateway("GameLift answer has no valid ExpirationTimestamp")
    return Token(
        fleet_id=str(answer.get("FleetId") or fleet_id),
        fleet_arn=str(answer.get("FleetArn") or ""),
        compute_name=str(answer.get("ComputeName") or compute_name),
        compute_arn=str(answer.get("ComputeArn") or ""),
        auth_token=auth_token,
        # .timestamp() is right whatever tzinfo botocore attached (it attaches tzlocal).
        expires_at=expiration.timestamp(),
    )


def parse_compute(
    response: Mapping[str, object], fleet_id: str, compute_name: str
) -> ComputeRecord:
    """RegisterCompute's or DescribeCompute's Compute, checked as parse_token checks a token.

    A missing endpoint is None (the caller says what that means); one that is there but not a
    ws:// or wss:// URL we can hand on safely is GameLift answering something unusable.
    """
    compute = response.get("Compute")
    if not isinstance(compute, Mapping):
        raise errors.UpstreamBadGateway("GameLift answer has no Compute")

    def text(name: str) -> str | None:
        value = compute.get(name)
        return value if isinstance(value, str) and value else None

    endpoint = text("GameLiftServiceSdkEndpoint")
    if endpoint is not None and not is_valid_sdk_endpoint(endpoint):
        raise errors.NoSdkEndpoint("GameLift's GameLiftServiceSdkEndpoint is not a ws(s):// URL")
    return ComputeRecord(
        fleet_id=text("FleetId") or fleet_id,
        compute_name=text("ComputeName") or compute_name,
        ip_address=text("IpAddress"),
        dns_name=text("DnsName"),
        location=text("Location"),
        status=text("ComputeStatus"),
        endpoint=endpoint,
    )
