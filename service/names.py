"""The GameLift API's ids and patterns, in one home for the broker, its settings and the emulator.

From botocore's GameLift model (FleetIdOrArn, ComputeNameOrArn, ComputeAuthToken). The broker
takes the plain forms only: a path segment is no place for an ARN, and one key spelling per
compute keeps the cache honest. The emulator, as the service does, takes the ARN forms too.
"""

from __future__ import annotations

import re

FLEET_ID_MAX = 512
COMPUTE_NAME_MAX = 1024
FLEET_ID_RE = re.compile(r"[a-z]*fleet-[a-zA-Z0-9-]+")
COMPUTE_NAME_RE = re.compile(r"[a-zA-Z0-9-]+(?:/[a-zA-Z0-9-]+)?")
AUTH_TOKEN_RE = re.compile(r"[a-zA-Z0-9-]{1,64}")

# The model's full patterns, ARN forms included; the named group is the plain id inside an ARN.
FLEET_ID_OR_ARN_RE = re.compile(
    r"[a-z]*fleet-[a-zA-Z0-9\-]+|arn:.*:[a-z]*fleet/(?P<id>[a-z]*fleet-[a-zA-Z0-9\-]+)"
)
COMPUTE_NAME_OR_ARN_RE = re.compile(
    r"[a-zA-Z0-9\-]+(?:/[a-zA-Z0-9\-]+)?|arn:.*:compute/(?P<id>[a-zA-Z0-9\-]+(?:/[a-zA-Z0-9\-]+)?)"
)

Key = tuple[str, str]  # (fleet id, compute name): what one token is for


def is_valid_fleet_id(value: str) -> bool:
    return len(value) <= FLEET_ID_MAX and FLEET_ID_RE.fullmatch(value) is not None


def is_valid_compute_name(value: str) -> bool:
    return len(value) <= COMPUTE_NAME_MAX and COMPUTE_NAME_RE.fullmatch(value) is not None


def parse_key(item: str) -> Key | None:
    """`fleet_id/compute_name` as a key, or None. A compute name may hold one slash itself, so
    only the first slash separates."""
    fleet, sep, compute = item.partition("/")
    if sep and is_valid_fleet_id(fleet) and is_valid_compute_name(compute):
        return fleet, compute
    return None


# RegisterCompute's own shapes (the compute it creates, not one it looks up): ComputeName,
# IpAddress, DnsNameInput and LocationStringModel, with their length bounds.
REGISTER_COMPUTE_NAME_MAX = 128
IP_ADDRESS_RE = re.compile(r"[0-9A-Fa-f:.]{1,128}")
DNS_NAME_RE = re.compile(r"[0-9a-zA-Z_.-]{1,256}")
LOCATION_RE = re.compile(r"[A-Za-z0-9-]{1,64}")
# CreateGameSession's IdStringModel (GameSessionId, IdempotencyToken) and DescribeGameSessions'
# ArnStringModel (a game session id is an ARN).
ID_STRING_RE = re.compile(r"[a-zA-Z0-9-]{1,48}")
GAME_SESSION_ARN_RE = re.compile(r"[a-zA-Z0-9:/-]{1,512}")
# The server SDK's websocket URL (GameLiftServiceSdkEndpoint, or TOKEN_BROKER_SDK_WEBSOCKET_URL):
# ws:// or wss:// and RFC 3986's characters, less the ones that are not literal inside single
# quotes in sh or systemd's EnvironmentFile= (', and $ which environment.d expands) and the
# ones a shell would take apart unquoted. So it can be written single-quoted everywhere.
SDK_ENDPOINT_MAX = 2048
SDK_ENDPOINT_RE = re.compile(r"wss?://[A-Za-z0-9._~:/?#\[\]@!&()*+,;=%-]+")


def is_valid_sdk_endpoint(value: str) -> bool:
    return len(value) <= SDK_ENDPOINT_MAX and SDK_ENDPOINT_RE.fullmatch(value) is not None
