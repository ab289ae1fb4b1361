"""HTTP routes: the token endpoint and the probes, plus the one place errors become responses."""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import errors
from service.config import is_valid_compute_name, is_valid_fleet_id
from service.observe import RequestRecorder
from service.render import NO_STORE, RenderedToken

log = logging.getLogger("service.routes")

TOKEN_PATH = "/fleets/{fleet_id}/computes/{compute_name:path}/token"  # noqa: S105 - a route, not a password
STARTED = "token_broker.started"  # set by the front layer when the request arrived


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
        401: "Missing or wrong caller secret",
        403: "Refused by a request check, or GameLift said Unauthorized",
        404: "GameLift does not know the fleet or compute",
        502: "GameLift answered something unusable, or UnsupportedRegion",
        503: "GameLift is failing, throttling or unreachable; see Retry-After",
    }.items()
}

router = APIRouter()


@router.get(
    TOKEN_PATH,
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
    state.guard.check(request.scope["headers"], fleet_id)
    # The path converter takes any compute name so that one with a slash reaches us at all
    # (uvicorn decodes %2F before routing); the API's own patterns are enforced here instead.
    if not is_valid_fleet_id(fleet_id):
        raise errors.BadRequest("fleet_id must match ^[a-z]*fleet-[a-zA-Z0-9-]+$ (512 max)")
    if not is_valid_compute_name(compute_name):
        raise errors.BadRequest(
            "compute_name must match ^[a-zA-Z0-9-]+(/[a-zA-Z0-9-]+)?$ (1024 max)"
        )
    entry, outcome = await state.cache.lookup(fleet_id, compute_name)
    state.recorder.served(fleet_id, compute_name, outcome, started_at(request))
    rendered: RenderedToken = entry.rendered
    if wants_text(request.headers.get("accept", "")):
        return PreRendered(rendered.text, rendered.text_headers)
    return PreRendered(rendered.json, rendered.json_headers)


class PreRendered(Response):
    """A 200 whose body and headers were rendered when the token was cached."""

    def __init__(self, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status_code = 200
        self.body = body
        self.background = None
        self.raw_headers = list(headers)


def wants_text(accept: str) -> bool:
    return "text/plain" in accept and "application/json" not in accept


def started_at(request: Request) -> float:
    return request.scope.get(STARTED) or time.perf_counter()


@router.get("/healthz", response_model=Status, summary="Liveness; never calls GameLift")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Status,
    responses={503: {"model": Status, "description": "Shutting down, or a prefetch not held"}},
    summary="Readiness: 200 while serving with every prefetched key held, else 503",
)
async def readyz(request: Request) -> Response:
    state = request.app.state
    if state.lifecycle.draining:
        return JSONResponse({"status": "shutting down"}, status_code=503)
    if not state.prefetcher.ready():
        return JSONResponse({"status": "waiting for prefetched tokens"}, status_code=503)
    return JSONResponse({"status": "ready"})


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    summary="Prometheus metrics, text format; never calls GameLift",
)
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    headers = {"Cache-Control": NO_STORE, **(headers or {})}
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def token_error(
    recorder: RequestRecorder, key: tuple[str, str], exc: Exception, started: float
) -> Response:
    """A token request's failure as its answer, counted and logged: for the route and the front."""
    error = exc if isinstance(exc, errors.BrokerError) else _internal(exc)
    recorder.refused(key[0], key[1], error, started)
    return error_response(error.status, error.code, error.message, error.headers())


def _internal(exc: Exception) -> errors.BrokerError:
    # A bug, not a GameLift outcome. Log the type only: a message could quote anything.
    log.error("unhandled error", extra={"event": "error", "error": type(exc).__name__})
    return errors.BrokerError("internal error")


def install_error_handlers(app: FastAPI) -> None:
    """Every error, ours or the framework's, leaves as {"error": {"code", "message"}}."""

    async def broker_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, errors.BrokerError)
        params = request.path_params
        if "fleet_id" in params:
            key = (params["fleet_id"], params.get("compute_name", ""))
            return token_error(request.app.state.recorder, key, exc, started_at(request))
        return error_response(exc.status, exc.code, exc.message, exc.headers())

    async def validation_error(_request: Request, _exc: Exception) -> Response:
        # 400, not FastAPI's 422: the contract says bad input is a plain bad request.
        return error_response(400, errors.BadRequest.code, "invalid request")

    async def http_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        return error_response(exc.status_code, code, str(exc.detail), exc.headers)

    async def unexpected_error(request: Request, exc: Exception) -> Response:
        params = request.path_params
        if "fleet_id" in params:
            key = (params["fleet_id"], params.get("compute_name", ""))
            return token_error(request.app.state.recorder, key, exc, started_at(request))
        error = _internal(exc)
        return error_response(error.status, error.code, error.message)

    app.add_exception_handler(errors.BrokerError, broker_error)
    app.add_exception_handler(Exception, unexpected_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
