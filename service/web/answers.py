"""Errors become answers here, once, for the FastAPI routes and the raw front alike."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import errors
from service.names import Key
from service.ops.requests import RequestRecorder
from service.web.render import NO_STORE

log = logging.getLogger("service.routes")

STARTED = "token_broker.started"  # set in the scope by the front when the request arrived


class PreRendered(Response):
    """A 200 whose body and headers were rendered when the token was cached.

    Skips Response.__init__ (it would render and copy again) and sets what Starlette's
    Response.__call__ reads; that is why starlette's version is bounded in pyproject.toml.
    """

    def __init__(self, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status_code = 200
        self.body = body
        self.background = None
        self.raw_headers = list(headers)


def wants_text(accept: str) -> bool:
    return "text/plain" in accept and "application/json" not in accept


def started_at(request: Request) -> float:
    started = request.scope.get(STARTED)
    return started if isinstance(started, float) else time.perf_counter()


def error_body(error: errors.BrokerError) -> bytes:
    """The JSON body of an error answer, for the one place that writes raw bytes (protocol)."""
    return json.dumps({"error": {"code": error.code, "message": error.message}}).encode()


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    headers = {"Cache-Control": NO_STORE, **(headers or {})}
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def broker_error_response(error: errors.BrokerError) -> Response:
    return error_response(error.status, error.code, error.message, error.headers())


def token_error(
    recorder: RequestRecorder,
    key: Key,
    exc: Exception,
    started: float,
    scope: Mapping[str, Any] | None = None,
) -> Response:
    """A token request's failure as its answer, counted and logged: for the route and the front."""
    error = exc if isinstance(exc, errors.BrokerError) else _internal(exc)
    recorder.refused(key[0], key[1], error, started, scope=scope)
    return broker_error_response(error)


def stopped_waiting() -> errors.BrokerError:
    """What a request still waiting when the shutdown grace runs out is told, instead of a 500.

    uvicorn cancels such requests and answers a cancelled one with its plain-text 500. Call
    this where the cancellation lands: it takes the cancellation back (the request then ends at
    once, with its answer, which is what uvicorn wanted) and gives the JSON 503 to send.
    """
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
    return errors.ShuttingDown("the broker is shutting down; ask again")


def _internal(exc: Exception) -> errors.BrokerError:
    # A bug, not a GameLift outcome. Log the type only: a message could quote anything.
    log.error("unhandled error", extra={"event": "error", "error": type(exc).__name__})
    return errors.BrokerError("internal error")


def install_error_handlers(app: FastAPI) -> None:
    """Every error, ours or the framework's, leaves as {"error": {"code", "message"}}."""

    def key_of(request: Request) -> Key | None:
        params = request.path_params
        if "fleet_id" in params:
            return params["fleet_id"], params.get("compute_name", "")
        return None

    async def broker_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, errors.BrokerError)
        key = key_of(request)
        if key is not None:
            recorder = request.app.state.recorder
            return token_error(recorder, key, exc, started_at(request), request.scope)
        return broker_error_response(exc)

    async def validation_error(_request: Request, _exc: Exception) -> Response:
        # 400, not FastAPI's 422: the contract says bad input is a plain bad request.
        return error_response(400, errors.BadRequest.code, "invalid request")

    async def http_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        return error_response(exc.status_code, code, str(exc.detail), exc.headers)

    async def unexpected_error(request: Request, exc: Exception) -> Response:
        key = key_of(request)
        if key is not None:
            recorder = request.app.state.recorder
            return token_error(recorder, key, exc, started_at(request), request.scope)
        return broker_error_response(_internal(exc))

    app.add_exception_handler(errors.BrokerError, broker_error)
    app.add_exception_handler(Exception, unexpected_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
