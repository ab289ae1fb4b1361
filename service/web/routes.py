"""The FastAPI routes: the token endpoint (documented here, mostly answered by the front), the
server parameters, and the probes."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from service import errors
from service.names import is_valid_compute_name, is_valid_fleet_id
from service.tokens.cache import Outcome
from service.tokens.entries import CacheEntry
from service.web.answers import PreRendered, started_at, stopped_waiting, wants_text
from service.web.parameters import as_environment, as_json, server_parameters
from service.web.render import RenderedToken

TOKEN_PATH = "/fleets/{fleet_id}/computes/{compute_name:path}/token"  # noqa: S105 - a route, not a password
PARAMETERS_PATH = "/fleets/{fleet_id}/computes/{compute_name:path}/server-parameters"


class TokenResponse(BaseModel):
    """The GetComputeAuthToken answer, with ExpirationTimestamp as ISO 8601 UTC."""

    FleetId: str
    FleetArn: str
    ComputeName: str
    ComputeArn: str
    AuthToken: str
    ExpirationTimestamp: str


class ServerParameters(BaseModel):
    """What InitSDK needs, with the token's ExpirationTimestamp as ISO 8601 UTC."""

    WebSocketUrl: str
    FleetId: str
    HostId: str
    ProcessId: str
    AuthToken: str
    ExpirationTimestamp: str


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class Status(BaseModel):
    status: str


_ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "Invalid fleet id or compute name, or GameLift said InvalidRequest",
        401: "Missing or wrong caller secret, or a missing, invalid or expired ServiceAccount"
        " token",
        403: "Refused by a request check (a pod asking for another compute, a fleet not"
        " allowed), or GameLift said Unauthorized",
        404: "GameLift does not know the fleet or compute",
        502: "GameLift answered something unusable, or UnsupportedRegion",
        503: "GameLift is failing, throttling or unreachable; see Retry-After",
    }.items()
}

router = APIRouter()


@router.get(
    TOKEN_PATH,
    operation_id="getToken",
    response_model=TokenResponse,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **_ERROR_RESPONSES,
    },
    summary="Get the compute auth token for (fleet, compute)",
    description=(
        "Served from the cache when a valid token is held; otherwise one upstream "
        "GetComputeAuthToken call is shared by every concurrent caller of the same key. "
        "Send `Accept: text/plain` for the bare token."
    ),
)
async def get_token(request: Request, fleet_id: str, compute_name: str) -> Response:
    entry, outcome = await _token_entry(request, fleet_id, compute_name)
    request.app.state.recorder.served(
        fleet_id, compute_name, outcome, started_at(request), request.scope
    )
    rendered: RenderedToken = entry.rendered
    if wants_text(request.headers.get("accept", "")):
        return PreRendered(rendered.text, rendered.text_headers)
    return PreRendered(rendered.json, rendered.json_headers)


@router.get(
    PARAMETERS_PATH,
    operation_id="getServerParameters",
    response_model=ServerParameters,
    responses={
        200: {
            "content": {
                "text/plain": {
                    "schema": {"type": "string"},
                    "example": "GAMELIFT_SDK_WEBSOCKET_URL='wss://...'\n...",
                }
            }
        },
        **_ERROR_RESPONSES,
    },
    summary="Get everything InitSDK needs for (fleet, compute), with a fresh ProcessId",
    description=(
        "The token as the token route gives it (same cache, same checks), the websocket URL "
        "(TOKEN_BROKER_SDK_WEBSOCKET_URL, else this host's registration, else DescribeCompute, "
        "cached), the host id (the compute name) and a new random ProcessId on every call. "
        "Send `Accept: text/plain` for GAMELIFT_SDK_*='...' lines, for `set -a; . FILE` or "
        "systemd's EnvironmentFile=."
    ),
)
async def get_server_parameters(request: Request, fleet_id: str, compute_name: str) -> Response:
    # The token first: a compute GameLift does not know fails there, within the cache's
    # back-off, before DescribeCompute is asked about it.
    entry, outcome = await _token_entry(request, fleet_id, compute_name)
    try:
        websocket_url = await request.app.state.endpoints.get(fleet_id, compute_name)
    except asyncio.CancelledError:
        raise stopped_waiting() from None
    # Counted once the whole answer is known, so a failure is an error, not a hit and an error.
    request.app.state.recorder.served(
        fleet_id, compute_name, outcome, started_at(request), request.scope
    )
    parameters = server_parameters(entry.token, websocket_url)
    if wants_text(request.headers.get("accept", "")):
        return PreRendered(*as_environment(parameters))
    return PreRendered(*as_json(parameters))


async def _token_entry(
    request: Request, fleet_id: str, compute_name: str
) -> tuple[CacheEntry, Outcome]:
    """The request checks, then the key's cache entry and how it was found (the caller counts
    the request once its answer is known)."""
    # Who may ask comes before what is asked: a refused caller learns nothing about the path.
    state = request.app.state
    state.guard.check_peer(request.scope.get("client"))
    await state.guard.check(request.scope["headers"], (fleet_id, compute_name))
    # The path converter takes any compute name so that one with a slash reaches us at all
    # (uvicorn decodes %2F before routing); the API's own patterns are enforced here instead.
    if not is_valid_fleet_id(fleet_id):
        raise errors.BadRequest("fleet_id must match ^[a-z]*fleet-[a-zA-Z0-9-]+$ (512 max)")
    if not is_valid_compute_name(compute_name):
        raise errors.BadRequest(
            "compute_name must match ^[a-zA-Z0-9-]+(/[a-zA-Z0-9-]+)?$ (1024 max)"
        )
    try:
        entry, outcome = await state.cache.lookup(fleet_id, compute_name)
    except asyncio.CancelledError:  # the shutdown grace ran out while we waited
        raise stopped_waiting() from None
    return entry, outcome


@router.get("/healthz", response_model=Status, summary="Liveness; never calls GameLift")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Status,
    responses={
        503: {
            "model": Status,
            "description": "Shutting down, no AWS credentials, or a prefetched token not held",
        }
    },
    summary="Readiness: 200 while serving with credentials and every prefetched key held",
)
async def readyz(request: Request) -> Response:
    reason = request.app.state.lifecycle.reason()
    if reason is not None:
        return JSONResponse({"status": reason}, status_code=503)
    return JSONResponse({"status": "ready"})


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    summary="Prometheus metrics, text format; never calls GameLift",
)
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
