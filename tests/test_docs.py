"""TOKEN_BROKER_DOCS: the docs page and its files, their headers, and who may open them.

The page itself, in a real browser, is tests/test_docs_browser.py.
"""

from __future__ import annotations

import importlib.util

import pytest
from pydantic import ValidationError

from service.config import Settings, describe_error
from service.web.docs import CONTENT_SECURITY_POLICY
from tests.conftest import Broker

FILES = ("/docs", "/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css", "/docs/init.js")


async def test_docs_and_their_files_carry_the_strict_policy(start_broker) -> None:  # type: ignore[no-untyped-def]
    async with start_broker(docs=True, require_request_header=True) as broker:
        for path in FILES:
            # No guard header: a browser opening the page cannot send one.
            response = await broker.client.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert response.headers["x-content-type-options"] == "nosniff"
        page = (await broker.client.get("/docs")).text
        assert "<script>" not in page and "https://" not in page.split('"openapi"')[0]
        assert "getToken" in page  # the document is in the page: it fetches nothing
        for directive in ("default-src 'none'", "script-src 'self'", "connect-src 'none'"):
            assert directive in CONTENT_SECURITY_POLICY
        # Swagger UI only: FastAPI's other pages stay off.
        for path in ("/redoc", "/docs/oauth2-redirect"):
            assert (await broker.client.get(path)).status_code == 404, path


async def test_docs_pass_the_host_and_peer_checks(start_broker) -> None:  # type: ignore[no-untyped-def]
    async with start_broker(docs=True) as broker:
        await _refused(broker, {"Host": "rebound.example"}, "HostNotAllowed")
    async with start_broker(docs=True, allowed_peers="10.0.0.0/8") as broker:
        await _refused(broker, {}, "PeerNotAllowed")


async def _refused(broker: Broker, headers: dict[str, str], code: str) -> None:
    for path in FILES:
        response = await broker.client.get(path, headers=headers)
        assert response.status_code == 403, path
        assert response.json()["error"]["code"] == code


def test_docs_without_the_extra_stop_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "fastapi_offline" else real(name, *a),
    )
    monkeypatch.setenv("TOKEN_BROKER_DOCS", "true")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert describe_error(caught.value) == (
        "invalid setting TOKEN_BROKER_DOCS: needs the docs extra: "
        "pip install 'gamelift-token-broker[docs]'"
    )
