"""openapi.json at the top level is generated from the app; this fails when it drifts."""

from __future__ import annotations

import json
from pathlib import Path

from service.cli import openapi
from service.config import Settings

SPEC = Path(__file__).resolve().parent.parent / "openapi.json"


def test_openapi_json_matches_the_app() -> None:
    generated = openapi(Settings())
    committed = json.loads(SPEC.read_text())
    assert committed == generated, (
        "openapi.json is stale: regenerate it with `gamelift-token-broker --openapi > openapi.json`"
    )


def test_token_route_is_documented_with_its_errors() -> None:
    spec = openapi(Settings())
    operation = spec["paths"]["/fleets/{fleet_id}/computes/{compute_name}/token"]["get"]
    assert {"200", "400", "403", "404", "502", "503"} <= set(operation["responses"])
    assert "text/plain" in operation["responses"]["200"]["content"]
    assert "422" not in operation["responses"]


async def test_no_interactive_docs_only_the_document(broker) -> None:  # type: ignore[no-untyped-def]
    # FastAPI's /docs and /redoc load third-party scripts into the broker's origin.
    for page in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        response = await broker.client.get(page)
        assert response.status_code == 404, page
        assert response.json()["error"]["code"] == "NotFound"
        assert "<script" not in response.text
    spec = await broker.client.get("/openapi.json")
    assert spec.status_code == 200 and spec.json()["openapi"].startswith("3.")
