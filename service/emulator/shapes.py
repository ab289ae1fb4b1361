"""Request shapes of the control plane's actions (from botocore's GameLift model), and checks."""

from __future__ import annotations

import re
from typing import Any

from service.emulator.errors import ApiError, invalid, validation
from service.names import (
    COMPUTE_NAME_MAX,
    COMPUTE_NAME_OR_ARN_RE,
    FLEET_ID_MAX,
    FLEET_ID_OR_ARN_RE,
)

# action -> field -> (JSON type, required). Unknown fields are ignored, as the service does.
SHAPES: dict[str, dict[str, tuple[type, bool]]] = {
    "GetComputeAuthToken": {"FleetId": (str, True), "ComputeName": (str, True)},
    "DescribeCompute": {"FleetId": (str, True), "ComputeName": (str, True)},
    "DeregisterCompute": {"FleetId": (str, True), "ComputeName": (str, True)},
    "RegisterCompute": {
        "FleetId": (str, True),
        "ComputeName": (str, True),
        "CertificatePath": (str, False),
        "DnsName": (str, False),
        "IpAddress": (str, False),
        "Location": (str, False),
    },
    "ListCompute": {
        "FleetId": (str, True),
        "Location": (str, False),
        "ContainerGroupDefinitionName": (str, False),
        "ComputeStatus": (str, False),
        "Limit": (int, False),
        "NextToken": (str, False),
    },
    "CreateGameSession": {
        "FleetId": (str, False),
        "AliasId": (str, False),
        "MaximumPlayerSessionCount": (int, True),
        "Name": (str, False),
        "GameProperties": (list, False),
        "CreatorId": (str, False),
        "GameSessionId": (str, False),
        "IdempotencyToken": (str, False),
        "GameSessionData": (str, False),
        "Location": (str, False),
    },
    "DescribeGameSessions": {
        "FleetId": (str, False),
        "GameSessionId": (str, False),
        "AliasId": (str, False),
        "Location": (str, False),
        "StatusFilter": (str, False),
        "Limit": (int, False),
        "NextToken": (str, False),
    },
}
ACTIONS = frozenset(SHAPES)


def _lower_first(name: str) -> str:
    return name[:1].lower() + name[1:]


def check_shape(action: str, request: Any) -> dict[str, Any]:
    """Types and required members; a JSON type mismatch is a SerializationException, as AWS
    JSON services answer, and a missing member a ValidationException naming it."""
    if not isinstance(request, dict):
        raise ApiError("SerializationException", "Expected a JSON object as the request body")
    for name, (kind, required) in SHAPES[action].items():
        value = request.get(name)
        if value is None:
            if required:
                raise validation(_lower_first(name), "Member must not be null")
            continue
        # bool is an int to Python, never to the model.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            message = f"Unexpected value type for {name}: expected {kind.__name__}"
            raise ApiError("SerializationException", message)
    return request


def pattern(
    request: dict[str, Any], name: str, regex: re.Pattern[str], max_length: int | None = None
) -> str | None:
    """The field if it matches its model pattern (and length), else InvalidRequestException."""
    value = request.get(name)
    if value is None:
        return None
    assert isinstance(value, str)
    if (max_length is not None and len(value) > max_length) or not regex.fullmatch(value):
        raise invalid(f"{name} does not match the expected pattern")
    return value


def fleet_id(request: dict[str, Any], name: str = "FleetId") -> str:
    """FleetIdOrArn as the plain fleet id."""
    value = request.get(name)
    match = FLEET_ID_OR_ARN_RE.fullmatch(value) if isinstance(value, str) else None
    if value is None or match is None or not 0 < len(value) <= FLEET_ID_MAX:
        raise invalid(f"{name} does not match the expected pattern")
    return match.group("id") or value


def compute_name(request: dict[str, Any]) -> str:
    """ComputeNameOrArn as the plain compute name."""
    value = request.get("ComputeName")
    match = COMPUTE_NAME_OR_ARN_RE.fullmatch(value) if isinstance(value, str) else None
    if value is None or match is None or not 0 < len(value) <= COMPUTE_NAME_MAX:
        raise invalid("ComputeName does not match the expected pattern")
    return match.group("id") or value


def limit(request: dict[str, Any]) -> tuple[int, int]:
    """(offset, limit) from NextToken and Limit; our NextToken is the next item's index."""
    count = request.get("Limit")
    if count is not None and count < 1:
        raise invalid("Limit must be at least 1")
    token = request.get("NextToken")
    if token is not None and not token.isdigit():
        raise invalid("NextToken is not valid")
    return int(token or 0), count or 100
