"""The FastAPI routes: the token endpoint (documented here, mostly answered by the front)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from service import errors
from service.names import is_valid_compute_name, is_valid_fleet_id
from service.web.answers import PreRendered, started_at, stopped_waiting, wants_text
from service.web.render import RenderedToken

TOKEN_PATH = "/fleets/{fleet_id}/computes/{compute_name:path}/token"  # noqa: S105 - a route, not a password


class TokenResponse(BaseModel):
    """The GetComputeAuthToken answer, with ExpirationTimestamp as ISO 8601 UTC."""

    FleetId: str
    FleetArn: str
    ComputeName: str
    ComputeArn: str
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
    state.recorder.served(fleet_id, compute_name, outcome, started_at(request), request.scope)
    rendered: RenderedToken = entry.rendered
    if wants_text(request.headers.get("accept", "")):
        return PreRendered(rendered.text, rendered.text_headers)
    return PreRendered(rendered.json, rendered.json_headers)


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
