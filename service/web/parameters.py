"""The server-parameters answer: InitSDK's five values as JSON, or as an environment file."""

from __future__ import annotations

import re
import uuid

import orjson

from service import errors
from service.names import SDK_VARIABLES
from service.tokens.token import Token
from service.web.render import JSON_TYPE, TEXT_TYPE, Headers, expiration_iso, response_start

# What may stand inside single quotes in both sh and systemd's EnvironmentFile=: anything but
# the quote itself, and (ours) no control character, no $ (environment.d expands it) and no
# backslash, so no reader can disagree about what the value is. Every value is checked before
# it gets here (patterns in service.names); this is the last line, not the first.
_QUOTABLE = re.compile(r"[^'$\\\x00-\x1f\x7f]+")


def server_parameters(token: Token, websocket_url: str) -> dict[str, str]:
    """The answer's fields; a fresh ProcessId each time, as the SDK refuses a reused one."""
    return {
        "WebSocketUrl": websocket_url,
        "FleetId": token.fleet_id,
        "HostId": token.compute_name,
        "ProcessId": str(uuid.uuid4()),
        "AuthToken": token.auth_token,
        "ExpirationTimestamp": expiration_iso(token.expires_at),
    }


def quoted(value: str) -> str:
    """`value` single-quoted, the one quoting sh and EnvironmentFile= read alike. An empty
    value is refused too: C++ and C# take an empty variable over the code's own value."""
    if _QUOTABLE.fullmatch(value) is None:
        raise errors.UpstreamBadGateway("a server parameter cannot be written safely as text")
    return f"'{value}'"


def as_json(parameters: dict[str, str]) -> tuple[bytes, Headers]:
    body = orjson.dumps(parameters)
    return body, _headers(body, JSON_TYPE)


def as_environment(parameters: dict[str, str]) -> tuple[bytes, Headers]:
    """NAME='value' lines, for `set -a; . FILE`, `eval`, or systemd's EnvironmentFile=."""
    lines = [f"{name}={quoted(parameters[field])}\n" for field, name in SDK_VARIABLES.items()]
    body = "".join(lines).encode()
    return body, _headers(body, TEXT_TYPE)


def _headers(body: bytes, content_type: str) -> Headers:
    # The token route's headers, in the same order and spelling.
    headers: Headers = response_start(len(body), content_type)["headers"]
    return headers
