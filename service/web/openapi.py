"""The OpenAPI document: what FastAPI generates, with our 400s and the guard's security schemes."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

# What RequestGuard checks, declared so that a client generated from the document sends it.
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "RequestHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Token-Broker-Request",
        "description": "Send the value `true` (unless TOKEN_BROKER_REQUIRE_REQUEST_HEADER=false):"
        " a browser or an SSRF-able service cannot add it.",
    },
    "CallerSecret": {
        "type": "http",
        "scheme": "bearer",
        "description": "The caller secret, when the broker has one (TOKEN_BROKER_AUTH_TOKEN_FILE).",
    },
    "ServiceAccountToken": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A projected Kubernetes ServiceAccount token for the audience in"
        " TOKEN_BROKER_KUBERNETES_AUDIENCE, when the broker has one (a DaemonSet): the pod"
        " gets the token of the compute named after itself only.",
    },
}
# The header with the secret or the ServiceAccount token (a broker takes one or the other,
# never both), or the header alone: OpenAPI's list is a choice of sets, and clients take the
# first they can satisfy, so the fuller ones come first.
TOKEN_SECURITY: list[dict[str, list[str]]] = [
    {"RequestHeader": [], "CallerSecret": []},
    {"RequestHeader": [], "ServiceAccountToken": []},
    {"RequestHeader": []},
]


def document(app: FastAPI) -> None:
    """FastAPI documents a 422 for every route with parameters; ours answer 400 instead. Token
    routes (those under /fleets/) carry the guard's security schemes."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()  # FastAPI keeps it as app.openapi_schema: edited once, here
        for path, operations in schema["paths"].items():
            for operation in operations.values():
                operation["responses"].pop("422", None)
                if path.startswith("/fleets/"):
                    operation["security"] = TOKEN_SECURITY
        components = schema.setdefault("components", {})
        schemas = components.get("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        components["securitySchemes"] = SECURITY_SCHEMES
        return schema

    # Replacing the method is FastAPI's documented way to customise the schema.
    app.openapi = openapi  # type: ignore[method-assign]
