"""The wire forms of a token answer, rendered once when a token is cached."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from service.upstream import Token


@dataclass(frozen=True, slots=True)
class RenderedToken:
    json: bytes  # the API's own shape, as GetComputeAuthToken answers it
    text: bytes  # the bare token, for TOKEN=$(curl ...) in launch scripts


def expiration_iso(expires_at: float) -> str:
    # Whole seconds, rounded down: never claim a token lives longer than it does.
    moment = datetime.fromtimestamp(int(expires_at), UTC)
    return moment.isoformat().replace("+00:00", "Z")


def token_body(token: Token) -> dict[str, str]:
    return {
        "FleetId": token.fleet_id,
        "FleetArn": token.fleet_arn,
        "ComputeName": token.compute_name,
        "ComputeArn": token.compute_arn,
        "AuthToken": token.auth_token,
        "ExpirationTimestamp": expiration_iso(token.expires_at),
    }


def render_token(token: Token) -> RenderedToken:
    return RenderedToken(json=orjson.dumps(token_body(token)), text=token.auth_token.encode())
