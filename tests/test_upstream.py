"""Classifying botocore outcomes and checking GameLift's answers (no network here)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError

from service import errors
from service.gamelift.classify import classify_client_error, parse_compute, parse_token
from service.tokens.token import Token


def client_error(code: str, status: int = 400) -> ClientError:
    response = {
        "Error": {"Code": code, "Message": "something happened"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "GetComputeAuthToken")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "status", "kind", "http"),
    [
        ("InvalidRequestException", 400, errors.UpstreamInvalidRequest, 400),
        ("UnauthorizedException", 400, errors.UpstreamUnauthorized, 403),
        ("AccessDeniedException", 400, errors.UpstreamUnauthorized, 403),
        ("NotFoundException", 400, errors.UpstreamNotFound, 404),
        ("UnsupportedRegionException", 400, errors.UpstreamBadGateway, 502),
        ("InternalServiceException", 500, errors.UpstreamUnavailable, 503),
        ("ThrottlingException", 400, errors.UpstreamThrottled, 503),
        ("TooManyRequestsException", 429, errors.UpstreamThrottled, 503),
        ("ServiceUnavailable", 503, errors.UpstreamUnavailable, 503),
        ("UnrecognizedClientException", 400, errors.UpstreamBadGateway, 502),
        # RegisterCompute's own: already registered; the fleet not ready yet; too many computes.
        ("ConflictException", 400, errors.UpstreamConflict, 409),
        ("NotReadyException", 400, errors.UpstreamUnavailable, 503),
        # botocore counts it as throttling (some services throttle with it), and so do we:
        # RegisterCompute then backs off and tries again, as botocore's own retries would.
        ("LimitExceededException", 400, errors.UpstreamThrottled, 503),
    ],
)
def test_client_errors_are_classified_once(code: str, status: int, kind: type, http: int) -> None:
    classified = classify_client_error(client_error(code, status))
    assert type(classified) is kind
    assert classified.status == http
    assert code in classified.message


def answer(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "FleetId": "fleet-1",
        "FleetArn": "arn:aws:gamelift:us-west-2:1:fleet/fleet-1",
        "ComputeName": "c",
        "ComputeArn": "arn:aws:gamelift:us-west-2:1:compute/c",
        "AuthToken": "abc-123",
        "ExpirationTimestamp": datetime(2030, 1, 1, tzinfo=UTC),
    }
    return {**base, **overrides}


def test_local_time_expiry_becomes_utc_epoch() -> None:
    local = datetime(2030, 1, 1, 2, 0, tzinfo=timezone(timedelta(hours=2)))
    token = parse_token(answer(ExpirationTimestamp=local), "fleet-1", "c")
    assert token.expires_at == datetime(2030, 1, 1, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    "overrides",
    [
        {"AuthToken": None},
        {"AuthToken": ""},
        {"AuthToken": "has spaces"},
        {"AuthToken": "x" * 65},
        {"ExpirationTimestamp": None},
        {"ExpirationTimestamp": "tomorrow"},
    ],
)
def test_malformed_answers_are_502(overrides: dict[str, object]) -> None:
    with pytest.raises(errors.UpstreamBadGateway) as caught:
        parse_token(answer(**overrides), "fleet-1", "c")
    assert caught.value.status == 502


def test_token_repr_hides_the_secret() -> None:
    token = parse_token(answer(AuthToken="s3cret-value"), "fleet-1", "c")
    assert isinstance(token, Token)
    assert "s3cret-value" not in repr(token) and "s3cret-value" not in str(token)


async def test_standard_aws_environment_reaches_the_emulator(
    emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS_REGION, AWS_ENDPOINT_URL_GAMELIFT and env credentials: no settings of our own."""
    from service.config import Settings
    from service.gamelift.client import GameLiftTokenSource

    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_GAMELIFT", emulator.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-env")
    async with GameLiftTokenSource.open(Settings()) as source:
        token = await source.fetch("fleet-1", "c")
    assert token.auth_token == emulator.issued_tokens[-1]
    assert emulator.calls == 1


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("wss://us-west-2.example/sdk", "wss://us-west-2.example/sdk"),
        (None, None),  # no endpoint: the caller decides (DescribeCompute: a 502 NoSdkEndpoint)
        ("", None),
    ],
)
def test_a_compute_answer_is_read_with_its_endpoint(
    endpoint: str | None, expected: str | None
) -> None:
    compute: dict[str, object] = {"FleetId": "fleet-1", "ComputeName": "c", "IpAddress": "1.2.3.4"}
    if endpoint is not None:
        compute["GameLiftServiceSdkEndpoint"] = endpoint
    record = parse_compute({"Compute": compute}, "fleet-1", "c")
    assert (record.ip_address, record.location, record.endpoint) == ("1.2.3.4", None, expected)


@pytest.mark.parametrize(
    ("answer_", "kind"),
    [
        ({}, errors.UpstreamBadGateway),
        ({"Compute": "nope"}, errors.UpstreamBadGateway),
        (
            {"Compute": {"GameLiftServiceSdkEndpoint": "https://not-a-websocket"}},
            errors.NoSdkEndpoint,
        ),
        ({"Compute": {"GameLiftServiceSdkEndpoint": "wss://x/'; rm -rf ~"}}, errors.NoSdkEndpoint),
    ],
)
def test_an_unusable_compute_answer_is_a_bad_gateway(
    answer_: dict[str, object], kind: type
) -> None:
    with pytest.raises(kind) as caught:
        parse_compute(answer_, "fleet-1", "c")
    assert caught.value.status == 502
