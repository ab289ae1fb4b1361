"""The wire forms of a token answer, rendered once when a token is cached."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from service.tokens.token import Token

Headers = list[tuple[bytes, bytes]]
NO_STORE = "no-store"
JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True, repr=False)
class RenderedToken:
    json: bytes  # the API's own shape, as GetComputeAuthToken answers it
    text: bytes  # the bare token, for TOKEN=$(curl ...) in launch scripts
    # The hit path's http.response.start messages, shared by every token of the same length;
    # its body message is built per hit (cheaper than holding two dicts per cached token).
    json_start: dict[str, Any]
    text_start: dict[str, Any]

    # The starts are typed as ASGI messages (what send takes), so their values are Any; the
    # headers in them are the Headers response_start built.
    @property
    def json_headers(self) -> Headers:
        return self.json_start["headers"]  # type: ignore[no-any-return]

    @property
    def text_headers(self) -> Headers:
        return self.text_start["headers"]  # type: ignore[no-any-return]

    @property
    def nbytes(self) -> int:
        """The bytes this token's answers hold (the starts are shared): the cache's size bound
        counts them."""
        return len(self.json) + len(self.text)

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


# Ten thousand cached tokens share these: only a token's length and type shape the start of
# its answer, and uvicorn and Starlette only read it (PreRendered copies the headers). Lengths
# are bounded by the API's name limits, so the memo is small.
@functools.lru_cache(maxsize=4096)
def response_start(length: int, content_type: str) -> dict[str, Any]:
    # The order and spelling Starlette's Response gives, so both paths answer byte for byte alike.
    headers = [
        (b"cache-control", NO_STORE.encode()),
        (b"content-length", str(length).encode()),
        (b"content-type", content_type.encode()),
    ]
    return {"type": "http.response.start", "status": 200, "headers": headers}


def render_token(token: Token) -> RenderedToken:
    # A copy: orjson's result keeps the 4 KiB buffer it was written into, per cached token.
    json = memoryview(orjson.dumps(token_body(token))).tobytes()
    text = token.auth_token.encode()
    return RenderedToken(
        json=json,
        text=text,
        json_start=response_start(len(json), JSON_TYPE),
        text_start=response_start(len(text), TEXT_TYPE),
    )
