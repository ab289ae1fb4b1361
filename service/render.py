"""The wire forms of a token answer, rendered once when a token is cached."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from service.upstream import Token

Headers = list[tuple[bytes, bytes]]
NO_STORE = "no-store"
JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True, repr=False)
class RenderedToken:
    json: bytes  # the API's own shape, as GetComputeAuthToken answers it
    text: bytes  # the bare token, for TOKEN=$(curl ...) in launch scripts
    json_headers: Headers
    text_headers: Headers
    # The ASGI messages themselves, for the hit path: uvicorn only reads them, so one pair
    # serves every hit on this token.
    json_messages: tuple[dict[str, Any], dict[str, Any]]
    text_messages: tuple[dict[str, Any], dict[str, Any]]

    def __repr__(self) -> str:
        return "RenderedToken(<secret>)"  # every field holds the token


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


# Ten thousand cached tokens share these: only a token's length and type shape its headers,
# and uvicorn and Starlette only read them (PreRendered copies the list).
@functools.cache
def response_headers(length: int, content_type: str) -> Headers:
    # The order and spelling Starlette's Response gives, so both paths answer byte for byte alike.
    return [
        (b"cache-control", NO_STORE.encode()),
        (b"content-length", str(length).encode()),
        (b"content-type", content_type.encode()),
    ]


@functools.cache
def response_start(length: int, content_type: str) -> dict[str, Any]:
    headers = response_headers(length, content_type)
    return {"type": "http.response.start", "status": 200, "headers": headers}


def asgi_messages(body: bytes, content_type: str) -> tuple[dict[str, Any], dict[str, Any]]:
    start = response_start(len(body), content_type)
    return start, {"type": "http.response.body", "body": body}


def render_token(token: Token) -> RenderedToken:
    # A copy: orjson's result keeps the 4 KiB buffer it was written into, per cached token.
    json = memoryview(orjson.dumps(token_body(token))).tobytes()
    text = token.auth_token.encode()
    return RenderedToken(
        json=json,
        text=text,
        json_headers=response_headers(len(json), JSON_TYPE),
        text_headers=response_headers(len(text), TEXT_TYPE),
        json_messages=asgi_messages(json, JSON_TYPE),
        text_messages=asgi_messages(text, TEXT_TYPE),
    )
